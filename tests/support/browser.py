"""Debian's chromium driven by Selenium through Debian's chromedriver: nothing is downloaded
(the driver's path is given, so Selenium Manager never runs). Missing: skip here, fail in CI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from support.services import unavailable

CHROMIUM = Path(os.environ.get("FEDIGUARD_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("FEDIGUARD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))


def chromium(width: int = 1280, height: int = 900) -> object:
    """A headless chromium session (the caller quits it)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        unavailable(f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install selenium)")
    os.environ["SE_OFFLINE"] = "true"  # belt and braces: Selenium Manager may never fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1", "--mute-audio",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):  # fmt: skip
        options.add_argument(arg)
    log = shutil.which("true") and os.devnull
    return webdriver.Chrome(
        service=Service(executable_path=str(CHROMEDRIVER), log_output=log), options=options
    )

"""The review desk in a real browser (Debian's chromium through Selenium): sign in, the queue lists
the flagged item, its thumbnail is blurred and grey on screen, a reveal takes an explicit action
and lands in the audit log, confirming by keyboard makes a re-encoded copy be rejected."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import PASSPHRASE, Stack
from support.browser import chromium
from support.desk import PASSWORD
from support.images import astronaut_jpeg, encode, laplacian_energy

SHOTS = os.environ.get("FEDIGUARD_DESK_SCREENSHOTS")
"""A folder to save page screenshots in (for docs/), when set."""


@pytest.fixture
def browser() -> Iterator[Any]:
    driver: Any = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Any, timeout: float = 30.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _keys(driver: Any, text: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(text).perform()


def _shot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"desk-{name}.png"))


def test_review_in_a_browser(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    original = astronaut_jpeg()
    record_id = stack.flag(original)
    url = stack.desk.url

    browser.get(f"{url}/login")
    browser.find_element(By.ID, "name").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    _shot(browser, "login")
    browser.find_element(By.ID, "signin").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'a[href="/item/{record_id}"]'))
    assert "csam_suspect" in browser.find_element(By.CSS_SELECTOR, "table.queue").text

    browser.find_element(By.NAME, "passphrase").send_keys(PASSPHRASE)
    browser.find_element(By.ID, "unlock").click()
    _wait(browser, lambda d: "evidence unlocked" in d.page_source)
    _shot(browser, "queue")

    # Keyboard: j selects the newest item, Enter opens it.
    _keys(browser, "j")
    _keys(browser, Keys.ENTER)
    _wait(browser, lambda d: d.current_url.endswith(f"/item/{record_id}"))
    assert browser.title == f"fediguard desk — Item {record_id}"
    thumb = _wait(browser, lambda d: d.find_element(By.ID, "thumb"))
    _wait(
        browser,
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumb),
    )
    assert not browser.find_elements(By.ID, "original")
    _shot(browser, "item")

    on_screen = np.asarray(Image.open(io.BytesIO(thumb.screenshot_as_png)).convert("RGB")).astype(np.int16)
    spread = np.abs(on_screen[..., 0] - on_screen[..., 1]) + np.abs(on_screen[..., 1] - on_screen[..., 2])
    assert spread.mean() < 3, "the thumbnail is shown in grey"
    h, w = on_screen.shape[:2]
    sharp = np.asarray(Image.open(io.BytesIO(original)).convert("L").resize((w, h)))
    assert laplacian_energy(on_screen.mean(axis=2)) < 0.25 * laplacian_energy(sharp), "and blurred"

    # A reveal takes its own explicit action (v, a reason, Enter) and is logged.
    _keys(browser, "v")
    _keys(browser, "checking the context")
    _keys(browser, Keys.ENTER)
    original_img = _wait(browser, lambda d: d.find_element(By.ID, "original"))
    _wait(browser, lambda d: d.execute_script("return arguments[0].naturalWidth", original_img))
    browser.get(f"{url}/audit")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")
    assert any("reveal" in r.text and str(record_id) in r.text and "alice" in r.text for r in rows)
    _shot(browser, "audit")

    # Confirm by keyboard: c, the reason, Enter.
    browser.get(f"{url}/item/{record_id}")
    _wait(browser, lambda d: d.find_element(By.ID, "act-confirm"))
    _keys(browser, "c")
    _keys(browser, "known image, confirmed")
    _keys(browser, Keys.ENTER)
    _wait(browser, lambda d: stack.gateway.store.get(record_id).review == "confirmed")

    # The same image re-encoded: other bytes, the same picture, now rejected by the deny bank.
    stack.scores.clear()
    copy = encode(Image.open(io.BytesIO(original)), "JPEG", quality=70)
    assert copy != original
    deadline = time.monotonic() + 30
    while True:
        answer = stack.gateway.post(copy, "image/jpeg")
        if answer.status_code == 406 or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # the gateway reloads its banks every bank_refresh_s (0.1 s)
    assert answer.status_code == 406 and answer.json()["labels"] == ["denylisted"], answer.text

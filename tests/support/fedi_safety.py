"""The real fedi-safety worker (github.com/db0/fedi-safety: ``lemmy_safety_pictrs.py`` and
``fedi_safety/pictrs_safety.py``), request for request, with only its model call replaced.

What it does, and so what this does: a main loop submits one ``pop_and_check`` to a thread pool of
``threads`` (default 10) every 0.1 s, whether or not a thread is free; each one GETs ``/api/v1/pop``
with an ``apikey`` header and a 2 s timeout on a fresh connection (``requests.get``), gives up on any
status >= 400, takes the file name as everything after the first ``=`` of ``Content-Disposition``,
opens the body with Pillow (a file it cannot open gets no answer), shrinks it to 512 px, runs its
model (an ``OSError`` there is answered as CSAM "to be sure") and POSTs ``{"image", "is_csam",
"is_nsfw"}`` (``is_nsfw`` = ``is_csam``) with no timeout. ``requests`` is not installed here, so
httpx makes the same requests.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
from PIL import Image

Model = Callable[[Image.Image], bool]
"""The stubbed model call: an opened, thumbnailed image in, "is CSAM" out."""


def slow_model(seconds: float, verdict: Callable[[Image.Image], bool] = lambda _image: False) -> Model:
    """A model call that takes ``seconds`` (CPU torch, a cold GPU), then answers ``verdict``."""

    def model(image: Image.Image) -> bool:
        time.sleep(seconds)
        return verdict(image)

    return model


@dataclass
class Popped:
    """One job the worker received and opened."""

    filename: str
    content_type: str
    pillow_format: str | None
    size: tuple[int, int]


@dataclass
class FediSafetyWorker:
    url: str
    apikey: str
    model: Model
    threads: int = 10
    popped: list[Popped] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    """Status of each result POST."""
    errors: list[str] = field(default_factory=list)
    unopened: int = 0
    """Jobs whose bytes Pillow could not open (the real worker logs and drops them)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FediSafetyWorker:
        self._thread = threading.Thread(target=self._main, name="fedi-safety", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _main(self) -> None:
        # start_polling(): one submission every 0.1 s, however busy the pool is.
        with ThreadPoolExecutor(max_workers=self.threads) as executor:
            while not self._stop.is_set():
                executor.submit(self.pop_and_check)
                time.sleep(0.1)
            executor.shutdown(cancel_futures=True)

    def pop_and_check(self) -> None:
        if self._stop.is_set():
            return
        headers = {"apikey": self.apikey}
        try:
            response = httpx.get(f"{self.url}/api/v1/pop", headers=headers, timeout=2)
            if response.status_code >= 400:  # requests' `not response.ok`
                self._error(f"GET {response.status_code}: {response.text}")
                return
            if response.status_code == 200:
                if "Content-Disposition" not in response.headers:
                    self._error("Filename not found in headers")
                    return
                filename = response.headers["Content-Disposition"].split("=", 1)[1]
                try:
                    image = Image.open(io.BytesIO(response.content))
                except Exception:
                    with self._lock:
                        self.unopened += 1
                    raise
                with self._lock:
                    self.popped.append(
                        Popped(filename, response.headers.get("content-type", ""), image.format, image.size)
                    )
            elif response.status_code == 204:
                return
            else:
                self._error(f"Failed to retrieve the image. Status code: {response.status_code}")
                return
            is_csam = self.check_image(image)
            payload = {"image": filename, "is_csam": is_csam, "is_nsfw": is_csam}
            done = httpx.post(f"{self.url}/api/v1/pop", headers=headers, json=payload, timeout=None)  # noqa: S113 (as fedi-safety does)
            with self._lock:
                self.answers.append(done.status_code)
        except Exception as err:
            self._error(f"Exception: {err}")

    def check_image(self, image: Image.Image) -> bool:
        try:
            image.thumbnail((512, 512))
            return self.model(image)
        except OSError:
            return True  # "Image could not be read. Returning it as CSAM to be sure."

    def _error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

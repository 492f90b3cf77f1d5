"""Decoded frames back to bytes, for scanners that open still images only (fedi-safety workers,
with Pillow): a video's, an animation's, an AVIF's or a JXL's frames as plain JPEG stills.

Only the gateway's own decoded frames are encoded here (RGB arrays the decoder handed back), never
bytes from an upload, so this needs no sandbox; nothing touches the disk.
"""

from __future__ import annotations

import io
from typing import Final

from PIL import Image

from fediguard.media.frames import RGBArray

STILL_TYPE: Final = "image/jpeg"
"""What :func:`render_still` makes: every Pillow opens it."""
JPEG_QUALITY: Final = 90
"""High enough that a model sees what the frame shows (fedi-safety shrinks it to 512 px anyway)."""


def render_still(image: RGBArray) -> bytes:
    """One RGB frame as a baseline JPEG."""
    out = io.BytesIO()
    Image.fromarray(image, "RGB").save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()

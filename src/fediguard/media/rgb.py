"""From a decoded Pillow image to the RGB array a detector gets: shrunk, flattened and upright.

Detectors want small upright RGB, so every still and animation frame is shrunk to
``max_frame_side``, turned by its EXIF orientation, and has alpha composited on **white**: that is
how most pages show a transparent image, and it keeps dark content visible to the detectors.
Content drawn in near-white on transparency is the blind spot of that choice (it shows on a dark
theme). Big images are reduced strip by strip so the conversion never holds a second full-size copy.

Meta's PDQ tools (the C++ ``pdq-photo-hasher``, python-threatexchange, HMA) hash the *stored* pixels
instead: no EXIF orientation applied, alpha dropped (not composited). :func:`to_frame` therefore also
keeps, only for an image with real transparency, its pixels with the alpha dropped (``opaque``), and
the frame says which orientation was undone, so :mod:`fediguard.banks.pdq` can hash both views.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
from PIL import ExifTags, Image

from fediguard.media.frames import Frame, RGBArray
from fediguard.media.limits import fit

# EXIF orientation -> the transposition that shows the image upright (as ImageOps.exif_transpose).
_ORIENTATION_FIX: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# ... and the transposition that turns an upright image back to its stored orientation.
_ORIENTATION_UNDO: Final = {
    **_ORIENTATION_FIX,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
_WHITE: Final = (255, 255, 255)
# Size of one strip when a big image is reduced piece by piece (see to_frame).
_STRIP_BYTES: Final = 4 * 1024 * 1024


def to_frame(
    im: Image.Image, max_side: int, orientation: int, index: int, time_s: float | None = None
) -> Frame:
    """The loaded image as a :class:`Frame`: upright RGB no larger than ``max_side``, alpha on white,
    and when the image has real transparency (an alpha below 255 somewhere) also its ``opaque``
    pixels, alpha dropped, the way Meta's hashers see them (upright too, the same size)."""
    target = fit(im.size, max_side)
    flatten = _flattener(im)
    small = _shrunk(im, target, flatten)
    opaque: RGBArray | None = None
    if small.mode in ("LA", "RGBA"):
        rgba = small.convert("RGBA")
        alpha = rgba.getchannel("A")
        if _lowest(alpha) < 255:
            # Resampling premultiplies alpha, which blackens what lies under full transparency:
            # drop the alpha before shrinking, as a hasher at full size sees the pixels.
            opaque = _upright(_shrunk(im, target, lambda part: flatten(part).convert("RGB")), orientation)
        small = Image.new("RGB", rgba.size, _WHITE)
        small.paste(rgba, mask=alpha)
    elif small.mode != "RGB":
        small = small.convert("RGB")
    return Frame(index, _upright(small, orientation), time_s, orientation, opaque)


def _shrunk(
    im: Image.Image, target: tuple[int, int], flatten: Callable[[Image.Image], Image.Image]
) -> Image.Image:
    # Box-reduce by an integer factor while keeping twice the target size for Lanczos to finish
    # (Pillow's reducing_gap=2), one strip at a time: colour conversion, premultiplied alpha and
    # 16-bit mapping then cost a strip's worth of memory, not another copy of a 40 MP image.
    factor = min(im.width // target[0], im.height // target[1]) // 2
    small = _reduce_in_strips(im, factor, flatten) if factor >= 2 else flatten(im)
    if small.size != target:
        small = small.resize(target, Image.Resampling.LANCZOS)
    return small


def _upright(small: Image.Image, orientation: int) -> RGBArray:
    if orientation in _ORIENTATION_FIX:
        small = small.transpose(_ORIENTATION_FIX[orientation])
    return np.array(small, dtype=np.uint8, order="C")


def as_stored(image: RGBArray, orientation: int) -> RGBArray:
    """An upright frame turned back to how its pixels are stored (undoing EXIF ``orientation``)."""
    if orientation not in _ORIENTATION_FIX:
        return image
    turned = Image.fromarray(image).transpose(_ORIENTATION_UNDO[orientation])
    return np.array(turned, dtype=np.uint8, order="C")


def _reduce_in_strips(
    im: Image.Image, factor: int, flatten: Callable[[Image.Image], Image.Image]
) -> Image.Image:
    """``flatten(im).reduce(factor)``, computed strip by strip (exact: strips are factor-aligned)."""
    rows = max(factor, _STRIP_BYTES // (im.width * 4) // factor * factor)
    reduced: Image.Image | None = None
    for top in range(0, im.height, rows):
        strip = flatten(im.crop((0, top, im.width, min(im.height, top + rows)))).reduce(factor)
        if reduced is None:
            size = (-(-im.width // factor), -(-im.height // factor))  # reduce() keeps partial boxes
            reduced = Image.new(strip.mode, size)
        reduced.paste(strip, (0, top // factor))
    assert reduced is not None
    return reduced


def _flattener(im: Image.Image) -> Callable[[Image.Image], Image.Image]:
    """A conversion of ``im`` (or a strip of it) to L, LA, RGB or RGBA, fixed for the whole image."""
    if im.mode.startswith("I") or im.mode == "F":
        # 16/32-bit grey and float: Pillow's own conversion clips at 255, turning most such pictures
        # white. Stretch to the brightest pixel of the whole image instead (floats usually span 0..1).
        brightest = _brightest(im)
        scale = 255.0 / brightest if brightest > 255.0 else 1.0
        if im.mode == "F" and 0.0 < brightest <= 1.0:
            scale = 255.0

        def stretch(part: Image.Image) -> Image.Image:
            values = np.asarray(part, dtype=np.float32) * scale
            return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))

        return stretch
    if im.mode in ("L", "LA", "RGB", "RGBA") and "transparency" not in im.info:
        return lambda part: part
    mode = "RGBA" if _has_alpha(im) else "L" if im.mode == "1" else "RGB"
    return lambda part: part.convert(mode)


def _lowest(channel: Image.Image) -> float:
    low = channel.getextrema()[0]
    return float(low) if isinstance(low, int | float) else 0.0


def _brightest(im: Image.Image) -> float:
    high = im.getextrema()[1]
    return float(high) if isinstance(high, int | float) else 255.0


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in im.info


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8) to undo; 1 when absent, unreadable or already applied."""
    if im.format == "JXL":
        return 1  # libjxl applies the codestream orientation itself; the Exif box must not count twice
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block does not stop browsers from showing the picture
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def displayed_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation >= 5 else size

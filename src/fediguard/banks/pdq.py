"""PDQ perceptual hashes: computing them, comparing them, and validating them as text.

PDQ (Meta's open perceptual hash, the one exchanged through ThreatExchange, NCMEC and HMA) turns an
image into 256 bits that change little when the image is re-encoded, resized or lightly edited. Two
images match when their hashes differ in at most :data:`MATCH_DISTANCE` bits. Hashes are written as
64 lowercase hex characters, most significant bit first, the same text that python-threatexchange and
HMA produce, so bank entries from those tools compare bit for bit with ours.

PDQ alone is not robust to cropping: removing 1 % of each side of the benign test photos moved the
hash 16-26 bits, 2 % moved it 30-60 and 5 % moved it 78-128, so a crop of more than a few percent
evades a bank that holds only the original's hash. When a bank entry is made from the image itself
(``fediguard banks add BANK FILE``), :func:`crop_variants` adds the hashes of :data:`CROPS`, cropped
copies of it, and a crop of an upload meets the variant framed like it (tests/banks/test_banks_pdq.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pdqhash
from PIL import Image

from fediguard.banks._hex import parse_hex256
from fediguard.media.frames import Frame, RGBArray
from fediguard.media.rgb import as_stored

MATCH_DISTANCE = 31
"""Hashes at most this many bits apart (out of 256) are the same picture.

31 is the threshold python-threatexchange and HMA use (``PDQ_CONFIDENT_MATCH_THRESHOLD``), so our
matches agree with theirs on shared banks. Measured here on benign photos: re-encodings and 50 %
resizes land 0-20 bits away, unrelated photos 118-146 bits away, so 31 leaves a margin on both
sides. No threshold rescues crops (a 5 % crop lands 54-128 bits away); :data:`CROPS` does.
"""

MIN_QUALITY = 50
"""Hashes whose PDQ quality (0-100) is below this are too unreliable to match on; skip them.

Quality measures how much gradient the image has. In a flat or nearly flat image (a blank frame, a
single colour, a faint gradient) the bits are decided by rounding noise, not by anything visible:
five flat colours and two near-flat images all scored quality 0, and their hashes were 60-131 bits
apart, as unrelated as random hashes. Such a hash can neither be trusted to match a copy nor to
not match something else. python-threatexchange refuses to hash below 50 for the same reason.
"""

HASH_LONG_SIDE = 640
"""Images are shrunk so their long side is at most this many pixels before hashing.

PDQ reduces every image to 64x64 anyway; hashing a 1024x768 upload at full size costs ~27 ms here
against ~9 ms of CPU after shrinking to 640 px (7 ms at 512; bench/banks.py). The price, measured on
Meta's reference images (tests/data/pdq/README.md): at 640 every image of quality >= 80 lands 0-10
bits from the hash Meta's C++ hasher gives it (median 2); at 512 it was 0-12 (median 6; two of the
1600x1004 rotated bridges at 12), at 1024 0-10 (median 4). 640 is the smallest size that keeps every
reference image within 10 bits, for ~2 ms more CPU a frame than 512.
"""


@dataclass(frozen=True)
class PdqHash:
    """A PDQ hash as 64 lowercase hex characters, and its quality (0-100; see :data:`MIN_QUALITY`)."""

    hex: str
    quality: int

    @property
    def usable(self) -> bool:
        """Whether the hash is reliable enough to match on."""
        return self.quality >= MIN_QUALITY


DISPLAYED = "displayed"
"""The view of a frame as people see it: EXIF orientation applied, alpha composited on white."""
STORED = "stored"
"""The view of a frame as Meta's tools hash it: the stored pixels, EXIF orientation not applied, alpha
dropped (the C++ ``pdq-photo-hasher``, python-threatexchange and HMA all do so)."""
DIHEDRAL = ("", "rotate90", "rotate180", "rotate270", "flipx", "flipy", "flipplus1", "flipminus1")
"""PDQ's eight dihedral transforms, by PDQ's own names, in the order ``pdqhash.compute_dihedral``
returns them: ``flipy`` is the mirror image left to right (about the vertical axis), ``flipx`` top to
bottom, ``flipplus1``/``flipminus1`` about the diagonals."""
VIEWS = frozenset(", ".join(p for p in (v, t) if p) for v in ("", DISPLAYED, STORED) for t in DIHEDRAL)
"""Every ``FrameHash.view``: ``""`` when the frame looks the same stored and displayed (one hash),
else ``displayed`` or ``stored``; with dihedral matching a transform may follow (``stored, flipx``,
or only ``flipx`` for a frame of one view)."""


@dataclass(frozen=True)
class FrameHash:
    """The PDQ hash of one frame of an upload, as scanners report it, records keep it and remote
    workers send it (``{"frame", "hash", "quality"}`` in JSON, and ``"view"`` when not ``""``).

    ``view`` says which picture of the frame was hashed (:data:`VIEWS`): a frame with an EXIF
    orientation or real transparency gets two hashes, ``displayed`` and ``stored``, so bank entries
    made by Meta's tools (which hash the stored pixels) and by fediguard both match it."""

    frame: int
    hash: PdqHash
    view: str = ""

    @property
    def dihedral(self) -> bool:
        """Whether this is a flipped or rotated copy's hash (matched, never added to a bank)."""
        return self.view.rsplit(", ", 1)[-1] in DIHEDRAL[1:]

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"frame": self.frame, "hash": self.hash.hex, "quality": self.hash.quality}
        if self.view:
            data["view"] = self.view
        return data

    @classmethod
    def from_json(cls, data: object) -> FrameHash:
        """Parse one untrusted item; ValueError when malformed (the hash must be 64 hex digits)."""
        if not isinstance(data, dict):
            raise ValueError("a frame hash must be a JSON object")
        try:
            quality = int(data["quality"])
            if not 0 <= quality <= 100:
                raise ValueError(f"quality {quality} is outside 0..100")
            view = data.get("view", "")
            if view not in VIEWS:
                raise ValueError(f"unknown frame hash view {str(view)[:40]!r}")
            return cls(int(data["frame"]), PdqHash(parse_pdq(str(data["hash"])), quality), view)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed frame hash: {exc!r}") from exc


def frame_views(frame: Frame) -> list[tuple[str, RGBArray]]:
    """The pictures of a frame to hash, as (view, RGB): one when it looks the same stored and
    displayed, else the displayed and the stored one (see :data:`DISPLAYED`, :data:`STORED`)."""
    if frame.orientation == 1 and frame.opaque is None:
        return [("", frame.image)]
    stored = frame.opaque if frame.opaque is not None else frame.image
    return [(DISPLAYED, frame.image), (STORED, as_stored(stored, frame.orientation))]


def frame_hashes(frames: Iterable[Frame], *, dihedral: bool = False) -> list[FrameHash]:
    """The PDQ hashes of every non-empty frame: of each of its views (:func:`frame_views`), and with
    ``dihedral`` also of each view's seven flipped and rotated copies (PDQ's dihedral hashes, which
    cost little more than one: they come from the same DCT)."""
    out: list[FrameHash] = []
    for frame in frames:
        if min(frame.image.shape[:2]) == 0:
            continue
        for view, image in frame_views(frame):
            if not dihedral:
                out.append(FrameHash(frame.index, pdq_hash(image), view))
                continue
            vectors, quality = pdqhash.compute_dihedral(_shrink(_checked(image)))
            for transform, bits in zip(DIHEDRAL, vectors, strict=True):
                named = ", ".join(part for part in (view, transform) if part)
                out.append(FrameHash(frame.index, PdqHash(_hex(bits), int(quality)), named))
    return out


def pdq_hash(image: RGBArray) -> PdqHash:
    """Hash an RGB image (uint8, shape (height, width, 3)); raises ValueError for anything else."""
    return _hash(_shrink(_checked(image)))


def _checked(image: RGBArray) -> RGBArray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("pdq_hash expects a uint8 numpy array")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"pdq_hash expects shape (height, width, 3), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError("pdq_hash cannot hash an empty image")
    return image


def _hash(image: RGBArray) -> PdqHash:
    bits, quality = pdqhash.compute(image)
    return PdqHash(hex=_hex(bits), quality=int(quality))


def _hex(bits: npt.NDArray[np.generic]) -> str:
    # pdqhash returns the 256 bits most significant first; packbits keeps that order, which gives the
    # canonical hex that python-threatexchange derives from the same vector.
    return np.packbits(bits.astype(np.uint8)).tobytes().hex()


def _shrink(image: RGBArray) -> RGBArray:
    height, width = image.shape[:2]
    long_side = max(height, width)
    if long_side <= HASH_LONG_SIDE:
        return image
    scale = HASH_LONG_SIDE / long_side
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # BOX averaging is PDQ's own first step (its Jarosz filters are box filters), it is the fastest
    # Pillow filter, and on the test photos it gave the same bits as bilinear, bicubic and Lanczos.
    shrunk = Image.fromarray(image).resize(size, Image.Resampling.BOX)
    return np.asarray(shrunk)


CROP_STEPS = (0.025, 0.05, 0.075, 0.10)
"""How much of each trimmed side :data:`CROPS` removes, as fractions of the side's length."""

CENTRE_SQUARE = "centre square"


def _crops() -> dict[str, tuple[float, float, float, float]]:
    shapes = {
        "each side": (1, 1, 1, 1), "left": (1, 0, 0, 0), "top": (0, 1, 0, 0), "right": (0, 0, 1, 0),
        "bottom": (0, 0, 0, 1), "left+right": (1, 0, 1, 0), "top+bottom": (0, 1, 0, 1),
        "top-left": (1, 1, 0, 0), "top-right": (0, 1, 1, 0), "bottom-right": (0, 0, 1, 1),
        "bottom-left": (1, 0, 0, 1),
    }  # fmt: skip
    crops = {
        f"{name} {step * 100:g}%": (step * left, step * top, step * right, step * bottom)
        for step in CROP_STEPS
        for name, (left, top, right, bottom) in shapes.items()
    }
    crops[CENTRE_SQUARE] = (0.0, 0.0, 0.0, 0.0)  # depends on the image's shape: see _crop_box
    return crops


CROPS: dict[str, tuple[float, float, float, float]] = _crops()
"""Cropped framings hashed for bank entries made from an image: name → the fraction trimmed from the
(left, top, right, bottom). Eleven shapes (every side, one side, two opposite sides, two sides at a
corner) at each of :data:`CROP_STEPS`, plus ``centre square``.

Measured on five benign photos, cropped and re-encoded as JPEG (tests/banks/test_banks_pdq.py): a
crop on a step lands 0-8 bits from its variant (5 % off each side, one side, two opposite sides or a
corner; the centre square); between steps it lands 4-30 bits away (3 % top 4-6, 9 % right 10-20,
6 % each side 18-26, 4 % each side 20-30, the worst, at the edge of :data:`MATCH_DISTANCE`). Crops
that trim sides by unequal amounts (5 % left and 2.5 % top: 8-36 bits) may miss. Other photos' hashes
and variants stayed 94+ bits from every crop.
"""


def crop_variants(image: RGBArray) -> list[tuple[str, PdqHash]]:
    """PDQ hashes of the cropped framings in :data:`CROPS`, as (crop name, hash); only usable ones.

    The image is shrunk once for all of them (the same shrink :func:`pdq_hash` applies), so 45
    variants of a 1024x768 photo cost about 140 ms here.
    """
    shrunk = _shrink(_checked(image))
    out: list[tuple[str, PdqHash]] = []
    for name in CROPS:
        top, bottom, left, right = _crop_box(name, shrunk.shape[0], shrunk.shape[1])
        if bottom - top < 16 or right - left < 16 or (bottom - top, right - left) == shrunk.shape[:2]:
            continue  # too small to hash, or not a crop at all (the centre square of a square)
        h = _hash(np.ascontiguousarray(shrunk[top:bottom, left:right]))
        if h.usable:
            out.append((name, h))
    return out


def _crop_box(name: str, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel bounds of the crop ``name`` of a height x width image."""
    if name == CENTRE_SQUARE:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return top, top + side, left, left + side
    trim_left, trim_top, trim_right, trim_bottom = CROPS[name]
    return (round(height * trim_top), height - round(height * trim_bottom),
            round(width * trim_left), width - round(width * trim_right))  # fmt: skip


def parse_pdq(text: str) -> str:
    """Validate a PDQ hash written as hex and return it as 64 lowercase hex characters.

    Raises ValueError whose message says what is wrong (length, the first non-hex character).
    """
    return parse_hex256(text, "PDQ hash")


def hamming(a: str, b: str) -> int:
    """How many of the 256 bits two PDQ hashes (hex) differ in; raises ValueError if either is malformed."""
    return (int(parse_pdq(a), 16) ^ int(parse_pdq(b), 16)).bit_count()

"""Still images (jpeg, png, webp, avif, jxl, bmp, tiff) through Pillow, and the door to animations.

Every Pillow format is opened here with the one plugin its sniffed type allows, and its size is
checked from the header before any pixel is decoded; a single picture is decoded here, several
frames go on to :mod:`fediguard.media.animation`. No global state is changed per call: Pillow's own
``Image.MAX_IMAGE_PIXELS`` guard is left as it is, an outer bound, because Image.open() reads only
the header and the tighter :attr:`MediaLimits.max_pixels` is checked before any pixel is decoded, so
no warnings filter has to be swapped in and out (which is process-wide). Pillow still *warns*
(DecompressionBombWarning) when opening an image of 89-179 MP, which is then refused here.
"""

from __future__ import annotations

import io
from typing import Final

from PIL import Image

from fediguard.media.animation import decode_animation
from fediguard.media.containers import check_heif
from fediguard.media.frames import DecodedMedia
from fediguard.media.jxl import JXL_SUPPORTED, jxl_size
from fediguard.media.limits import MediaLimits, check_pixels, fit
from fediguard.media.rgb import displayed_size, exif_orientation, to_frame

# Register every Pillow plugin once, at import: Image.open() would otherwise do it lazily, from
# whichever scanner thread gets there first.
Image.init()

# Sniffed media type -> Pillow format name, which is also the only plugin Image.open may try.
PILLOW_FORMATS: Final = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/apng": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/avif": "AVIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    **({"image/jxl": "JXL"} if JXL_SUPPORTED else {}),
}


def decode_image(data: bytes, media_type: str, label: str, limits: MediaLimits) -> DecodedMedia:
    """Decode a Pillow format: a still here, an image with several frames as an animation."""
    pil_format = PILLOW_FORMATS[media_type]
    if pil_format == "JXL":
        # The JXL plugin decodes every pixel inside Image.open(), so read the size first.
        check_pixels(jxl_size(data), limits, label)
    elif pil_format == "AVIF":
        # libavif parses the sample tables inside Image.open(): check what the boxes declare first.
        check_heif(data, label, limits)
    with Image.open(io.BytesIO(data), formats=[pil_format]) as im:
        check_pixels(im.size, limits, label)
        # A JPEG's extra MPF pictures (depth maps, gain maps, previews) are not what viewers show.
        count = 1 if pil_format == "JPEG" else int(getattr(im, "n_frames", 1))
        if count > 1:
            return decode_animation(im, media_type, label, count, limits)
        source_size = im.size
        if pil_format == "JPEG":
            # Let libjpeg scale by 1/2, 1/4 or 1/8 while decoding: a fraction of the memory and time.
            im.draft("RGB", fit(im.size, limits.max_frame_side))
        im.load()
        orientation = exif_orientation(im)  # after load(): a PNG may keep its eXIf chunk after the pixels
        frame = to_frame(im, limits.max_frame_side, orientation, 0)
        width, height = displayed_size(source_size, orientation)
        return DecodedMedia(media_type, width, height, [frame], frame_count=1, animated=False)

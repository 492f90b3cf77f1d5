"""Benign media drawn with Pillow (and a video encoded from such frames with PyAV) in every kind a
fedi-safety worker cannot open as it is: for the tests of what the gateway hands such workers."""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction

import av
import av.video.stream
from PIL import Image, ImageDraw

from support.bombs import h264_codec


def drawn_frame(
    colour: tuple[int, int, int], shift: int = 0, size: tuple[int, int] = (160, 120)
) -> Image.Image:
    """A background of ``colour`` (what the stub model looks at) and a yellow box, moved by ``shift``
    so that frames differ (encoders drop repeated frames)."""
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).rectangle((20 + shift, 30, 100 + shift, 90), fill=(250, 200, 40))
    return image


def mp4(colours: list[tuple[int, int, int]], per_colour: int = 10) -> bytes:
    """A video made with PyAV from Pillow-drawn frames, ``per_colour`` frames of each background."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream(h264_codec(), rate=Fraction(10))
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for colour in colours:
            for shift in range(per_colour):
                for packet in stream.encode(av.VideoFrame.from_image(drawn_frame(colour, shift))):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def saved(frames: list[Image.Image], fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    if len(frames) > 1:
        params = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0, **params}
    frames[0].save(out, format=fmt, **params)
    return out.getvalue()


GREY, RED = (90, 90, 90), (220, 10, 10)
MADE: dict[str, Callable[[tuple[int, int, int]], bytes]] = {
    "mp4": lambda c: mp4([GREY, c, GREY]),
    "avif": lambda c: saved([drawn_frame(c)], "AVIF", quality=90),
    "avif-animated": lambda c: saved([drawn_frame(GREY), drawn_frame(c, 20)], "AVIF", quality=90),
    "apng": lambda c: saved([drawn_frame(GREY), drawn_frame(c, 20), drawn_frame(GREY, 40)], "PNG"),
    "gif-animated": lambda c: saved([drawn_frame(GREY), drawn_frame(c, 20)], "GIF"),
    "jxl": lambda c: saved([drawn_frame(c)], "JXL"),
}

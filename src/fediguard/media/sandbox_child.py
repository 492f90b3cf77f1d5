"""What runs inside a decoder child of :class:`~fediguard.media.sandbox.DecoderPool`: the limits it
sets on itself, its job loop, and the raw-bytes wire both ends use for bulk data."""

from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing.connection
import os
import resource
import signal
from collections.abc import Callable
from typing import Final

import av.error
import numpy as np

from fediguard.errors import MediaError
from fediguard.media.frames import DecodedMedia

_MB: Final = 1024 * 1024
# glibc's malloc, tuned in each child with mallopt(): one arena per thread reserves 64 MB of address
# space, which RLIMIT_AS counts, so two arenas keep a child's address space close to what it uses;
# and buffers up to 32 MB come from the heap, which keeps up to 128 MB free before giving memory back,
# so the next decode reuses pages instead of faulting fresh ones in: a 1024x768 JPEG decodes in
# ~3.5 ms instead of ~9.5 ms here, for ~10 MB more resident memory per child.
_MALLOPT: Final = {-8: 2, -3: 32 * 1024 * 1024, -1: 128 * 1024 * 1024}  # ARENA_MAX, MMAP_, TRIM_THRESHOLD


def child_main(
    conn: multiprocessing.connection.Connection, memory_mb: int, decoder: Callable[..., DecodedMedia]
) -> None:
    """Set the limits, then decode jobs until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which stops us
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU and SIGSEGV dump no core
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its allocator is left as it is
        libc = ctypes.CDLL(None)
        for option, value in _MALLOPT.items():
            libc.mallopt(option, value)
    _set_soft_limit(resource.RLIMIT_AS, memory_mb * _MB)
    conn.send("ready")
    while True:
        try:
            declared_type, limits, cpu_s, size = conn.recv()
            data = read_all(conn, size)
        except (EOFError, OSError):
            return
        _limit_cpu(cpu_s)
        try:
            media = decoder(data, declared_type=declared_type, limits=limits)
        except MediaError as exc:
            del data
            if _out_of_memory(exc):
                conn.send(("error", f"decoding needed more than {memory_mb} MB", True))
                return  # a fresh child replaces this one, whose heap may be left fragmented
            conn.send(("error", str(exc), False))
            continue
        except MemoryError:
            conn.send(("error", f"decoding needed more than {memory_mb} MB", True))
            return
        except Exception as exc:  # a decoder that breaks its contract: this child is not trusted on
            conn.send(("error", f"the decoder failed: {type(exc).__name__}: {exc}", True))
            return
        del data
        frames = [
            (f.index, f.time_s, f.image.shape, f.orientation, f.opaque is not None) for f in media.frames
        ]
        conn.send(
            ("ok", (media.media_type, media.width, media.height, media.frame_count, media.animated, frames))
        )
        for frame in media.frames:
            write_all(conn, np.ascontiguousarray(frame.image).data.cast("B"))
            if frame.opaque is not None:  # the same shape as the image (Frame's contract)
                write_all(conn, np.ascontiguousarray(frame.opaque).data.cast("B"))


# Bulk bytes (the upload, the frames) go as raw bytes after the message that announces their size:
# Connection.recv_bytes() would read them in chunks through a BytesIO, a few copies and ~4 ms for a
# 2.4 MB frame; os.readv() fills the destination array directly (~0.4 ms).


def write_all(conn: multiprocessing.connection.Connection, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(conn.fileno(), view) :]


def read_all(conn: multiprocessing.connection.Connection, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        read = os.readv(conn.fileno(), [view[filled:]])
        if not read:
            raise EOFError
        filled += read
    view.release()
    return bytes(buffer)


def _limit_cpu(budget_s: float) -> None:
    """Let this process use ``budget_s`` more seconds of CPU before the kernel sends SIGXCPU."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _set_soft_limit(resource.RLIMIT_CPU, math.ceil(usage.ru_utime + usage.ru_stime + budget_s))


def _set_soft_limit(which: int, value: int) -> None:
    """Set a soft limit, never above the hard limit the administrator may have set."""
    _, hard = resource.getrlimit(which)
    resource.setrlimit(which, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))


def _out_of_memory(exc: BaseException) -> bool:
    """Whether a decode failed because an allocation failed (Python, Pillow, numpy or FFmpeg)."""
    cause = exc.__cause__
    return isinstance(cause, MemoryError | av.error.MemoryError)

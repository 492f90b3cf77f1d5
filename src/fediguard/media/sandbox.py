"""Decoding in child processes with hard OS limits: the second line against decompression bombs.

The header checks of :mod:`fediguard.media.limits` refuse most bombs in microseconds, but a decoder
is native code fed hostile bytes: a format whose cost the headers do not tell, a demuxer that
builds its index inside ``av.open``, a bug. :class:`DecoderPool` runs the same pure
:func:`~fediguard.media.decode.decode` in a few child processes, each under

- ``RLIMIT_AS``, the address space (``memory_mb``): an allocation past it fails inside the child,
  whose decode then ends with "decoding needed more than N MB";
- ``RLIMIT_CPU``, whose soft limit is raised to the CPU already used + ``cpu_s`` before each job,
  so a runaway decode is ended by ``SIGXCPU`` ("decoding used more than N s of CPU"; the kernel
  counts whole seconds, so a decode gets between ``cpu_s`` and ``cpu_s`` + 1 s);
- a wall-clock ``timeout_s`` the parent enforces by killing the child ("took more than N s"),
  shortened to the upload's own deadline when the caller gives one (:func:`decode_deadline`): a
  bomb past the header checks never holds a child, nor the upload's answer, beyond its deadline.

A child that dies, is killed or hit its memory limit is replaced, and the job gets
:class:`~fediguard.errors.MediaError` naming the limit. Children are forked from a forkserver that
has imported Pillow, PyAV and numpy once (the parent runs onnxruntime threads, which plain fork
would copy in an unknown state), so a replacement starts in milliseconds. Frames come back as raw
bytes read straight into the parent's arrays (a frame's ``opaque`` pixels too, when it has them:
see :class:`~fediguard.media.frames.Frame`); the upload goes to the child the same way.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, Final, Protocol

import numpy as np

from fediguard.errors import MediaError
from fediguard.media.decode import DEFAULT_LIMITS, MediaLimits, decode
from fediguard.media.frames import DecodedMedia, Frame
from fediguard.media.sandbox_child import child_main, write_all

log = logging.getLogger(__name__)

_START_TIMEOUT_S: Final = 60.0


_DEADLINE: ContextVar[float | None] = ContextVar("fediguard_decode_deadline", default=None)


@contextlib.contextmanager
def decode_deadline(at: float) -> Iterator[None]:
    """Decodes through a :class:`DecoderPool` in this context (this thread) end by ``at``, on the
    :func:`time.monotonic` clock: waiting for a free child ends there, and a child still decoding
    then is killed and replaced, its job getting MediaError ("... the upload's deadline")."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


class Decoder(Protocol):
    """What decodes an upload: :func:`~fediguard.media.decode.decode` itself, or a pool's."""

    def __call__(
        self, data: bytes, *, declared_type: str | None = None, limits: MediaLimits = DEFAULT_LIMITS
    ) -> DecodedMedia: ...


@dataclass(frozen=True)
class SandboxLimits:
    """The OS limits of every decoder child."""

    memory_mb: int = 1536
    """Address space of a child (RLIMIT_AS), in MiB. Measured here: ~265 MiB after importing
    Pillow, PyAV and numpy; the costliest legitimate upload within the header limits, a 48 MP
    lossless WebP (Pillow decodes it to RGBA and copies it), peaks at 1027 MiB; a 4K H.264 video at
    445 MiB. 1536 leaves ~500 MiB of headroom."""
    cpu_s: float = 8.0
    """CPU seconds one decode may use (RLIMIT_CPU, raised before each job). The slowest legitimate
    uploads measured within the header limits take 6.6 s (100 lossy 1920x1920 WebP frames); AVIF
    sequences are bounded at ~2.4 s (:data:`~fediguard.media.limits.AV1_PIXEL_COST`; 20 frames of
    3840x3840 took 5.4 s and are now refused). 8 s is also the gateway's default deadline, which
    ends a decode sooner (:func:`decode_deadline`)."""
    timeout_s: float = 12.0
    """Wall-clock seconds one decode may take before the parent kills the child: room for a decode
    slowed by a busy machine, and shorter than a stuck scanner slot's write-off (deadline + 10 s).
    An upload's own deadline (:func:`decode_deadline`) ends it sooner."""


class DecoderPool:
    """``size`` decoder children; :meth:`decode` is thread safe and blocks while all are busy.

    The children run ``decoder`` (a module-level function, imported by name in the child):
    :func:`~fediguard.media.decode.decode` but in tests and benchmarks.
    """

    def __init__(self, size: int, limits: SandboxLimits | None = None, decoder: Decoder = decode) -> None:
        if size < 1:
            raise ValueError("a decoder pool needs at least one child")
        self.size = size
        self.limits = limits or SandboxLimits()
        self.decoder = decoder
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["fediguard.media.sandbox"])
        self._idle: queue.SimpleQueue[_Child | None] = queue.SimpleQueue()
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._closed = False
        self.replaced = 0
        """Children replaced so far (killed, died or retired after hitting a limit)."""

    def start(self) -> None:
        """Start every child now (blocking; the first call also starts the forkserver)."""
        with self._lock:
            if self._children:
                return
            self._children = [_Child(self._context, self.limits, self.decoder) for _ in range(self.size)]
        for child in self._children:
            child.start()
            self._idle.put(child)
        log.info(
            "decoder sandbox ready: %d child process(es), %d MB address space, %g s CPU, %g s wall each",
            self.size, self.limits.memory_mb, self.limits.cpu_s, self.limits.timeout_s,
        )  # fmt: skip

    @property
    def pids(self) -> list[int]:
        """Process ids of the children alive now."""
        return [c.pid for c in self._children if c.pid is not None and c.alive]

    def decode(
        self, data: bytes, *, declared_type: str | None = None, limits: MediaLimits = DEFAULT_LIMITS
    ) -> DecodedMedia:
        """:func:`~fediguard.media.decode.decode` in a child; raises MediaError as it does, and for
        a decode that outran a limit of the sandbox (naming the limit)."""
        if not self._children:
            self.start()
        until = _DEADLINE.get()
        child = None if self._closed else self._take(until)
        if child is None or self._closed:
            self._idle.put(None)  # wake the next waiter too
            raise MediaError("the decoder sandbox is shut down")
        try:
            return child.run(data, declared_type, limits, until)
        except _ChildGone as gone:
            self._replace(child)
            child = None  # back to the idle children once its replacement has started
            raise MediaError(str(gone)) from None
        finally:
            if child is not None:
                self._idle.put(None if self._closed else child)

    __call__ = decode

    def _take(self, until: float | None) -> _Child | None:
        """An idle child (None: the pool is closing), waiting no later than ``until``."""
        if until is None:
            return self._idle.get()
        try:
            return self._idle.get(timeout=max(0.0, until - time.monotonic()))
        except queue.Empty:
            raise MediaError("no decoder process was free before the upload's deadline") from None

    def _replace(self, child: _Child) -> None:
        """Kill ``child`` now and start its replacement in the background, so that the job's answer
        does not wait for it; the fresh child joins the idle ones when it is ready."""
        child.stop(kill=True)
        with self._lock:
            self.replaced += 1
        threading.Thread(
            target=self._restart, args=(child,), name="fediguard-decoder-restart", daemon=True
        ).start()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (read anew each time: another thread may call it)."""
        return self._closed

    def _restart(self, child: _Child) -> None:
        try:
            if not self._closed:
                child.start()
                if self.closed:  # close() ran meanwhile and did not see this process
                    child.stop(kill=False)
        except Exception:  # the next job on this child tries again
            log.exception("could not start a decoder child in place of a dead one")
        finally:
            self._idle.put(None if self._closed else child)

    def close(self) -> None:
        """Stop every child; waiting and later calls get MediaError."""
        self._closed = True
        self._idle.put(None)
        for child in self._children:
            child.stop(kill=False)

    def __enter__(self) -> DecoderPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ChildGone(Exception):
    """The child was killed or died; the message says which limit, for the job's MediaError."""


class _Child:
    """One decoder process and the parent's end of its pipe."""

    def __init__(self, context: Any, limits: SandboxLimits, decoder: Decoder) -> None:
        self._context = context
        self.limits = limits
        self.decoder = decoder
        self._process: BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._late = ""  # the current job's MediaError when it is not done in time

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self) -> None:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=child_main,
            args=(child_end, self.limits.memory_mb, self.decoder),
            name="fediguard-decoder",
            daemon=True,
        )
        process.start()
        child_end.close()
        if not parent_end.poll(_START_TIMEOUT_S):
            process.kill()
            raise RuntimeError("a decoder child did not start")
        parent_end.recv()  # "ready": limits set
        self._process, self._conn = process, parent_end

    def run(
        self, data: bytes, declared_type: str | None, limits: MediaLimits, until: float | None = None
    ) -> DecodedMedia:
        """Decode in this child by ``timeout_s`` from now, or by ``until`` if that is sooner."""
        if self._conn is None or not self.alive:
            self.start()
        conn = self._conn
        assert conn is not None
        now = time.monotonic()
        deadline = now + self.limits.timeout_s
        self._late = f"decoding took more than {self.limits.timeout_s:g} s"
        if until is not None and until < deadline:
            if until <= now:
                raise MediaError("the upload's deadline passed before decoding began")
            deadline = until
            self._late = f"decoding was not done by the upload's deadline ({until - now:.1f} s left)"
        try:
            conn.send((declared_type, limits, self.limits.cpu_s, len(data)))
            write_all(conn, data)
            reply = self._receive(conn, deadline)
            if reply[0] == "error":
                _, message, retire = reply
                if retire:
                    raise _ChildGone(message)
                raise MediaError(message)
            _, (media_type, width, height, frame_count, animated, frames) = reply
            decoded = []
            for index, time_s, shape, orientation, has_opaque in frames:
                image = self._read_array(conn, shape, deadline)
                opaque = self._read_array(conn, shape, deadline) if has_opaque else None
                decoded.append(Frame(index, image, time_s, orientation, opaque))
        except (EOFError, OSError) as exc:
            raise _ChildGone(self._death()) from exc
        return DecodedMedia(media_type, width, height, decoded, frame_count=frame_count, animated=animated)

    def _read_array(
        self, conn: multiprocessing.connection.Connection, shape: tuple[int, ...], deadline: float
    ) -> np.ndarray[Any, np.dtype[np.uint8]]:
        image = np.empty(shape, dtype=np.uint8)
        self._read_into(conn, image.data.cast("B"), deadline)
        return image

    def _receive(self, conn: multiprocessing.connection.Connection, deadline: float) -> Any:
        self._wait(conn, deadline)
        return conn.recv()

    def _wait(self, conn: multiprocessing.connection.Connection, deadline: float) -> None:
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            raise _ChildGone(self._late)

    def _read_into(
        self, conn: multiprocessing.connection.Connection, view: memoryview, deadline: float
    ) -> None:
        """Fill ``view`` with the raw bytes that follow the last message (no framing, no copy)."""
        filled = 0
        while filled < len(view):
            self._wait(conn, deadline)
            read = os.readv(conn.fileno(), [view[filled:]])
            if not read:
                raise EOFError
            filled += read

    def _death(self) -> str:
        """Why the child's end of the pipe closed, from how the process ended."""
        process = self._process
        if process is not None:
            process.join(5)
        code = process.exitcode if process is not None else None
        if code == -signal.SIGXCPU:
            return f"decoding used more than {self.limits.cpu_s:g} s of CPU"
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            if -code == signal.SIGKILL:
                return f"the decoder process was killed ({name}), likely out of memory"
            return f"the decoder process died ({name}) while decoding"
        return f"the decoder process exited (status {code}) while decoding"

    def stop(self, *, kill: bool) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if conn is not None:
            conn.close()  # the child reads EOF and exits
        if process is None:
            return
        if kill:
            process.kill()
        process.join(2)
        if process.is_alive():
            process.kill()
            process.join(2)

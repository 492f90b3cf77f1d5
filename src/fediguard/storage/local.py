"""file:// source: a local folder, e.g. pict-rs's ``files/`` or Mastodon's ``public/system``.

Symlinks are never followed. Reads, deletes and moves walk the key one folder at a time from the
root with O_NOFOLLOW and act relative to the last folder's descriptor, so a link planted in the
tree (or swapped in during a sweep) cannot make us touch anything outside it. Listing opens each
folder by path but checks it is the very folder (device, inode) it saw in its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from collections.abc import AsyncIterator, Generator, Iterator
from datetime import datetime
from pathlib import Path

from fediguard.errors import ConfigError
from fediguard.logs import shown
from fediguard.storage._util import as_utc, from_timestamp, wanted
from fediguard.storage.base import Fetched, StoredObject, check_key, check_prefix, quiet_listing
from fediguard.storage.errors import (
    ObjectChanged,
    ObjectGone,
    ObjectTooLarge,
    QuarantineConflict,
    QuarantineNotConfigured,
    SourceError,
    UnsafeKey,
)

log = logging.getLogger(__name__)

_BATCH = 1000  # objects handed from the walking thread to the event loop per hop
_READ_ATTEMPTS = 3  # reads of a file that changes while it is read, before giving up on it
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted where a file should be must not hang the sweeper.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CROSS_DEVICE = (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK)

# (key, (st_dev, st_ino)) of directories still to list. Module-level because the class's own
# ``list`` method shadows the builtin inside its body.
_DirStack = list[tuple[str, tuple[int, int]]]
_Walk = Generator[StoredObject, None, None]


class LocalSource:
    """Media files under a local directory."""

    def __init__(
        self, root: str | Path, *, quarantine_dir: str | Path | None = None, name: str | None = None
    ) -> None:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise ConfigError(f"storage root {str(root)!r} is not a directory")
        self._root = real
        self._quarantine = os.path.realpath(quarantine_dir) if quarantine_dir is not None else None
        if self._quarantine is not None and self._quarantine == self._root:
            raise ConfigError("the quarantine folder must not be the storage root itself")
        self._name = name or f"file:{real}"
        self.listing_errors = 0
        """Directories that could not be read while listing (each logged as a warning)."""

    @property
    def name(self) -> str:
        return self._name

    @property
    def url(self) -> str:
        return Path(self._root).as_uri()

    async def list(self, prefix: str = "", since: datetime | None = None) -> AsyncIterator[StoredObject]:
        walker = self._walk(check_prefix(prefix), as_utc(since))
        try:
            while batch := await asyncio.to_thread(_take, walker, _BATCH):
                for obj in batch:
                    yield obj
        finally:
            walker.close()

    def _walk(self, prefix: str, since: datetime | None) -> _Walk:
        skip = self._quarantine_identity()
        start = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        try:
            fd = _open_dir(self._root, start)
        except (FileNotFoundError, NotADirectoryError) as exc:
            if not start:  # the root itself is gone (removed, unmounted): not an empty store
                raise SourceError(f"the storage root {self._root} is gone: {exc.strerror}") from exc
            return  # nothing under this prefix
        except OSError as exc:
            raise SourceError(f"cannot open '{start or '.'}' under {self._root}: {exc}") from exc
        st = os.fstat(fd)
        os.close(fd)
        # Pending directories are kept as (key, identity), not open descriptors: a wide tree
        # (pict-rs fans out 256 ways per level) would otherwise exhaust the descriptor limit.
        stack: _DirStack = [(start, (st.st_dev, st.st_ino))]
        while stack:
            rel, identity = stack.pop()
            dir_fd = self._open_listed_dir(rel, identity)
            if dir_fd is None:
                continue
            try:
                yield from self._scan_dir(rel, dir_fd, prefix, since, skip, stack)
            finally:
                os.close(dir_fd)

    def _open_listed_dir(self, rel: str, identity: tuple[int, int]) -> int | None:
        """Open a directory seen while listing, or None if it vanished, moved or became unreadable."""
        try:
            fd = os.open(os.path.join(self._root, rel), _DIR_FLAGS)
        except FileNotFoundError:
            return None
        except (OSError, SourceError) as exc:
            self._listing_problem(rel, exc)
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != identity:
            # Swapped for another directory (or a link to one) after we listed it: do not descend.
            os.close(fd)
            self._listing_problem(rel, SourceError("directory replaced while listing"))
            return None
        return fd

    def _scan_dir(
        self,
        rel: str,
        fd: int,
        prefix: str,
        since: datetime | None,
        skip: tuple[int, int] | None,
        stack: _DirStack,
    ) -> Iterator[StoredObject]:
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    key = f"{rel}/{entry.name}" if rel else entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                                st = entry.stat(follow_symlinks=False)
                                # The quarantine folder may live inside the root: never sweep it.
                                if (st.st_dev, st.st_ino) != skip:
                                    stack.append((key, (st.st_dev, st.st_ino)))
                        elif entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            modified = from_timestamp(st.st_mtime)
                            if wanted(key, prefix, modified, since):
                                yield StoredObject(key=key, size=st.st_size, modified=modified, etag=None)
                    except FileNotFoundError:
                        continue  # removed while we listed: not an error, just gone
        except OSError as exc:
            self._listing_problem(rel, exc)

    def _listing_problem(self, rel: str, exc: Exception) -> None:
        if quiet_listing.get():
            return
        self.listing_errors += 1
        log.warning("skipping unreadable directory '%s' under %s: %s", shown(rel or "."), self._root, exc)

    def _quarantine_identity(self) -> tuple[int, int] | None:
        if self._quarantine is None:
            return None
        try:
            st = os.stat(self._quarantine)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    async def read(self, key: str, max_bytes: int) -> bytes:
        return (await self.fetch(key, max_bytes)).data

    async def fetch(self, key: str, max_bytes: int) -> Fetched:
        return await asyncio.to_thread(self._fetch, check_key(key), max_bytes)

    async def read_head(self, key: str, n: int) -> bytes:
        return await asyncio.to_thread(self._read_head, check_key(key), n)

    def _read_head(self, key: str, n: int) -> bytes:
        with _errors(key):
            fd, _ = self._open_file(key)
            try:
                return _read_up_to(fd, n)
            finally:
                os.close(fd)

    def _open_file(self, key: str) -> tuple[int, os.stat_result]:
        """A descriptor on the regular file at ``key`` (never through a link), and its status."""
        parent = _open_dir(self._root, _dirname(key))
        try:
            fd = os.open(entry_name(key), _FILE_FLAGS, dir_fd=parent)
        finally:
            os.close(parent)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise SourceError(f"'{key}' is not a regular file")
        return fd, st

    def _fetch(self, key: str, max_bytes: int) -> Fetched:
        """Read the open file whole, then fstat it again: the bytes are recorded with the size and
        mtime of the file as read, whatever the listing saw. A file whose size or times moved
        while it was read is read again, and given up on (ObjectChanged) if it never holds still."""
        with _errors(key):
            fd, st = self._open_file(key)
            try:
                for _ in range(_READ_ATTEMPTS):
                    if st.st_size > max_bytes:
                        raise ObjectTooLarge(key, st.st_size, max_bytes)
                    data = _read_up_to(fd, max_bytes + 1)
                    if len(data) > max_bytes:  # grew since fstat
                        raise ObjectTooLarge(key, None, max_bytes)
                    after = os.fstat(fd)
                    if _same_version(st, after) and len(data) == after.st_size:
                        modified = from_timestamp(after.st_mtime)
                        return Fetched(data, StoredObject(key, len(data), modified, None))
                    st = after
            finally:
                os.close(fd)
        raise ObjectChanged(f"'{key}' kept changing while it was read")

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, check_key(key))

    def _delete(self, key: str) -> None:
        with _errors(key):
            parent = _open_dir(self._root, _dirname(key))
            try:
                _require_regular(parent, key)
                os.unlink(entry_name(key), dir_fd=parent)
            finally:
                os.close(parent)

    async def quarantine(self, key: str, dest_key: str) -> None:
        await asyncio.to_thread(
            self._move, self._root, check_key(key), self._require_quarantine(), check_key(dest_key)
        )

    async def restore(self, dest_key: str, key: str) -> None:
        await asyncio.to_thread(
            self._move, self._require_quarantine(), check_key(dest_key), self._root, check_key(key)
        )

    def _require_quarantine(self) -> str:
        if self._quarantine is None:
            raise QuarantineNotConfigured(f"{self._name}: no quarantine folder configured")
        return self._quarantine

    def _move(self, src_base: str, src_key: str, dst_base: str, dst_key: str) -> None:
        """Move without ever overwriting: hard link + unlink, or exclusive copy + unlink across disks."""
        with _errors(src_key):
            src_dir = _open_dir(src_base, _dirname(src_key))
            try:
                src_st = _require_regular(src_dir, src_key)
                # 0o700: quarantined media must not be readable by other local users.
                dst_dir = _open_dir(dst_base, _dirname(dst_key), create_mode=0o700)
                try:
                    _place(src_dir, entry_name(src_key), dst_dir, entry_name(dst_key), dst_key, src_st)
                finally:
                    os.close(dst_dir)
                os.unlink(entry_name(src_key), dir_fd=src_dir)
            finally:
                os.close(src_dir)

    async def close(self) -> None:
        return None


def _place(src_dir: int, src: str, dst_dir: int, dst: str, dst_key: str, src_st: os.stat_result) -> None:
    try:
        os.link(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
        return
    except FileExistsError as exc:
        raise QuarantineConflict(f"destination '{dst_key}' already exists") from exc
    except OSError as exc:
        if exc.errno not in _CROSS_DEVICE:
            raise
    # Another filesystem (or one without hard links): copy into a file only we create.
    try:
        out = os.open(
            dst,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            stat.S_IMODE(src_st.st_mode),
            dir_fd=dst_dir,
        )
    except FileExistsError as exc:
        raise QuarantineConflict(f"destination '{dst_key}' already exists") from exc
    try:
        inp = os.open(src, _FILE_FLAGS, dir_fd=src_dir)
        try:
            while chunk := os.read(inp, 1 << 20):
                os.write(out, chunk)
            os.fsync(out)
        finally:
            os.close(inp)
    except BaseException:
        os.close(out)
        os.unlink(dst, dir_fd=dst_dir)
        raise
    os.close(out)


def _open_dir(base: str, rel: str, create_mode: int | None = None) -> int:
    """Open folder ``base/rel`` one component at a time, never through a symlink.

    With ``create_mode``, missing folders are created (like mkdir -p, but a planted link stops it
    instead of being followed). ``rel`` has passed check_key, so it holds no '..' to climb out.
    """
    if create_mode is not None:
        os.makedirs(base, create_mode, exist_ok=True)  # the configured folder itself: admin's path
    fd = os.open(base, _DIR_FLAGS)
    try:
        for part in rel.split("/") if rel else ():
            if create_mode is not None:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, create_mode, dir_fd=fd)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                # O_NOFOLLOW|O_DIRECTORY on a symlink fails with ELOOP or ENOTDIR: name it.
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(fd, part):
                    raise UnsafeKey(f"'{rel}' passes through a symbolic link under {base}") from exc
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _require_regular(dir_fd: int, key: str) -> os.stat_result:
    st = os.stat(entry_name(key), dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"'{key}' is not a regular file")
    return st


def _read_up_to(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from the start of the file (whatever was read from ``fd`` before)."""
    chunks: list[bytes] = []
    done = 0
    while done < limit:
        chunk = os.pread(fd, min(limit - done, 1 << 20), done)
        if not chunk:
            break
        chunks.append(chunk)
        done += len(chunk)
    return b"".join(chunks)


def _same_version(before: os.stat_result, after: os.stat_result) -> bool:
    """Nothing was written to the file in between (as far as its size and times tell)."""
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
        after.st_size, after.st_mtime_ns, after.st_ctime_ns
    )  # fmt: skip


def _dirname(key: str) -> str:
    return key.rsplit("/", 1)[0] if "/" in key else ""


def entry_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _take(it: Iterator[StoredObject], n: int) -> list[StoredObject]:
    out: list[StoredObject] = []
    for obj in it:
        out.append(obj)
        if len(out) >= n:
            break
    return out


@contextlib.contextmanager
def _errors(key: str) -> Iterator[None]:
    """Translate OS errors into the storage errors the sweeper understands."""
    try:
        yield
    except SourceError:
        raise
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ObjectGone(f"'{key}' is gone: {exc.strerror}") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeKey(f"'{key}' is a symbolic link") from exc
        raise SourceError(f"'{key}': {exc.strerror or exc}") from exc

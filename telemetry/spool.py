"""The proxy's durable disk spool: telemetry the daemon has not acknowledged yet.

Why a spool: an agent must never lose a record because the daemon is down or slow, and it
must never wait for the network either. Records the proxy cannot deliver right now (daemon
away, or the in-memory buffer full) are appended here; once the daemon answers, the proxy
replays them in order and deletes them. The daemon deduplicates on the records' natural
keys, so replaying a batch that was in fact stored already is harmless (exactly-once in the
store).

Layout::

    <spool_dir>/<target slug>/                 one folder per daemon address
        <worker>-<pid>-<random>/               one folder per live proxy session (its owner)
            lock                               flock()ed by the owner while it lives
            store_id                           the store of the daemon the records are meant
                                               for, once the session has met it
            0000000001.spool                   append-only segments, replayed in number order
            0000000002.spool
        rejected/                              batches the daemon refused for good (kept, never
                                               replayed automatically)

Per session, not per run: a session writes batches of any run (each batch carries its
run_id), and one writer per folder means no two processes ever append to the same file.
A folder whose lock nobody holds belongs to a session that has exited or crashed; the next
session for the same daemon address adopts it (takes the lock) and replays it before its
own records. Folders are keyed by target because records belong to the daemon they were
meant for; and since another daemon (another store) may later listen at the same address, a
folder also names the store it was meant for once known: a session meeting a daemon with
another store leaves that folder alone and says so (`set_aside_foreign`).

Segment format: the magic line `MOSAIC-SPOOL/1\\n`, then frames of
`<u32 little-endian length><u32 crc32 of payload><payload>` where the payload is one
serialized `TelemetryBatch`. Each frame is written with one write(2); segments are fsync'ed
on rotation, on close and on a cadence (`sync()`). Reading stops at the first frame that is
short or fails its checksum: a torn tail from a crash is ignored, never misread.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

MAGIC = b"MOSAIC-SPOOL/1\n"
_FRAME_HEADER = struct.Struct("<II")
_SEGMENT_SUFFIX = ".spool"
_REJECTED_DIR = "rejected"
_LOCK_NAME = "lock"
_STORE_NAME = "store_id"

log = logging.getLogger(__name__)


def default_spool_dir() -> Path:
    """The per-user spool root: `$XDG_DATA_HOME/mosaic-telemetry/spool` (or ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "share")
    return Path(base) / "mosaic-telemetry" / "spool"


def slug(text: str) -> str:
    """A file-name-safe rendering of a target address or worker id ("127.0.0.1_50055")."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "default"
    return cleaned[:80]


def read_frames(path: Path) -> Iterator[bytes]:
    """Yield the payloads of a segment's complete frames, in order.

    Stops quietly at end of file and, with a warning, at a torn or corrupt frame: after a
    crash the last frame may be half written, and everything before it is still good.
    """
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            log.warning("spool segment %s has no spool header; ignoring it", path)
            return
        offset = len(MAGIC)
        while True:
            header = f.read(_FRAME_HEADER.size)
            if not header:
                return
            if len(header) < _FRAME_HEADER.size:
                log.warning("spool segment %s: torn frame header at byte %d ignored", path, offset)
                return
            length, crc = _FRAME_HEADER.unpack(header)
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                log.warning("spool segment %s: torn or corrupt frame at byte %d ignored "
                            "(the rest of the segment is skipped)", path, offset)
                return
            offset += _FRAME_HEADER.size + length
            yield payload


def _segment_number(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        return -1


def _segments_in(directory: Path) -> list[Path]:
    try:
        found = [p for p in directory.iterdir() if p.suffix == _SEGMENT_SUFFIX]
    except FileNotFoundError:
        return []
    return sorted(found, key=_segment_number)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _frame(payload: bytes) -> bytes:
    return _FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass
class _HeldFolder:
    """A spool folder this process holds the lock of (its own, or an adopted orphan)."""
    path: Path
    lock_fd: int
    segments: list[Path] = field(default_factory=list)


class TelemetrySpool:
    """Append-only, crash-safe storage for undelivered `TelemetryBatch` payloads.

    Single-threaded by design: every method runs on the proxy's event loop thread (only the
    fsync of `sync_async` runs in a worker thread, on a duplicated descriptor).
    """

    def __init__(self, root: Path, target: str, owner: str, *,
                 segment_max_bytes: int = 8 * 1024 * 1024) -> None:
        self.target_dir = Path(root) / slug(target)
        self._owner = owner
        self._segment_max_bytes = segment_max_bytes
        self._own: _HeldFolder | None = None
        self._adopted: list[_HeldFolder] = []
        self._active: tuple[Path, int] | None = None   # (segment path, fd)
        self._active_bytes = 0
        self._next_segment = 1
        self._dirty = False
        self._closed = False
        self._store_id = ""

    # -- writing -----------------------------------------------------------------------
    @property
    def folder(self) -> Path | None:
        """This session's own spool folder (None until something was spooled)."""
        return self._own.path if self._own else None

    def append(self, payload: bytes) -> None:
        """Append one serialized TelemetryBatch. Written now (page cache), fsync'ed later."""
        if self._closed:
            raise RuntimeError("spool is closed")
        if self._active is None or self._active_bytes >= self._segment_max_bytes:
            self._rotate()
        assert self._active is not None
        frame = _frame(payload)
        os.write(self._active[1], frame)
        self._active_bytes += len(frame)
        self._dirty = True

    def sync(self) -> None:
        """fsync the active segment if anything was written since the last sync."""
        if self._active is not None and self._dirty:
            os.fsync(self._active[1])
            self._dirty = False

    async def sync_async(self) -> None:
        """`sync()` without blocking the event loop on the disk (fsync in a thread)."""
        if self._active is None or not self._dirty:
            return
        self._dirty = False
        fd = os.dup(self._active[1])
        try:
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)

    def _own_folder(self) -> _HeldFolder:
        if self._own is None:
            self.target_dir.mkdir(parents=True, exist_ok=True)
            name = f"{slug(self._owner)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            # Lock it under a hidden name first, so no scanning session can mistake the new
            # folder for an orphan before its lock is held.
            staging = self.target_dir / f".{name}"
            staging.mkdir()
            if self._store_id:
                (staging / _STORE_NAME).write_text(self._store_id)
            lock_fd = os.open(staging / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = self.target_dir / name
            staging.rename(path)
            _fsync_dir(self.target_dir)
            self._own = _HeldFolder(path, lock_fd)
        return self._own

    def _rotate(self) -> None:
        self._seal_active()
        folder = self._own_folder()
        path = folder.path / f"{self._next_segment:010d}{_SEGMENT_SUFFIX}"
        self._next_segment += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(fd, MAGIC)
        _fsync_dir(folder.path)
        self._active = (path, fd)
        self._active_bytes = len(MAGIC)
        self._dirty = True

    def _seal_active(self) -> None:
        if self._active is None:
            return
        path, fd = self._active
        self._active = None
        try:
            if self._dirty:
                os.fsync(fd)
        finally:
            os.close(fd)
            self._dirty = False
        assert self._own is not None
        self._own.segments.append(path)

    # -- replaying ---------------------------------------------------------------------
    def adopt_orphans(self) -> int:
        """Take over spool folders of exited sessions for this target; return how many."""
        if self._closed:
            return 0
        held = {f.path for f in self._adopted}
        if self._own:
            held.add(self._own.path)
        try:
            entries = list(self.target_dir.iterdir())
        except FileNotFoundError:
            return 0
        candidates = sorted((p for p in entries
                             if p.is_dir() and p.name != _REJECTED_DIR
                             and not p.name.startswith(".") and p not in held),
                            key=_mtime)
        adopted = 0
        for path in candidates:
            try:
                lock_fd = os.open(path / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                continue   # removed by its owner or by another adopter meanwhile
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)   # its owner is alive
                continue
            folder = _HeldFolder(path, lock_fd, _segments_in(path))
            self._adopted.append(folder)
            adopted += 1
            if folder.segments:
                log.info("adopting spool %s (%d segment(s)) left by an earlier session",
                         path, len(folder.segments))
            else:
                self._release(folder)
        return adopted

    def note_store(self, store_id: str) -> None:
        """The daemon at the target keeps store `store_id`: what this session spools is meant
        for it (recorded in its folder)."""
        if not store_id or store_id == self._store_id:
            return
        self._store_id = store_id
        if self._own is not None:
            (self._own.path / _STORE_NAME).write_text(store_id)

    def set_aside_foreign(self, store_id: str) -> list[tuple[Path, str]]:
        """Stop replaying adopted folders meant for a store other than `store_id` (left on
        disk, unlocked, for a session that meets their daemon); their (path, store id)."""
        foreign = []
        for folder in list(self._adopted):
            try:
                meant = (folder.path / _STORE_NAME).read_text().strip()
            except FileNotFoundError:
                continue   # spooled before any daemon answered: meant for whoever is at the address
            if store_id and meant and meant != store_id:
                self._adopted.remove(folder)
                os.close(folder.lock_fd)
                foreign.append((folder.path, meant))
        return foreign

    def replay_queue(self) -> list[Path]:
        """Every undelivered segment, oldest first: adopted ones, then this session's own.

        Seals the active segment so that it can be read; later appends open a new one.
        """
        self._seal_active()
        queue: list[Path] = []
        for folder in self._adopted:
            queue.extend(folder.segments)
        if self._own:
            queue.extend(self._own.segments)
        return queue

    def has_pending(self) -> bool:
        """Whether anything is spooled and not yet delivered."""
        return bool(self._active is not None
                    or any(f.segments for f in self._adopted)
                    or (self._own is not None and self._own.segments))

    def delivered(self, segment: Path) -> None:
        """Delete a segment whose every batch the daemon acknowledged."""
        for folder in [*self._adopted, *([self._own] if self._own else [])]:
            if segment in folder.segments:
                folder.segments.remove(segment)
                segment.unlink(missing_ok=True)
                if folder is not self._own and not folder.segments:
                    self._adopted.remove(folder)
                    self._release(folder)
                return

    def quarantine(self, payload: bytes, reason: str) -> Path:
        """Keep a batch the daemon refused for good, out of the replay path; return its file."""
        rejected = self.target_dir / _REJECTED_DIR
        rejected.mkdir(parents=True, exist_ok=True)
        path = rejected / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}{_SEGMENT_SUFFIX}"
        with open(path, "wb") as f:
            f.write(MAGIC + _frame(payload))
            f.flush()
            os.fsync(f.fileno())
        (path.with_suffix(".reason.txt")).write_text(reason + "\n")
        log.error("batch refused by the daemon kept in %s: %s", path, reason)
        return path

    # -- closing -----------------------------------------------------------------------
    def close(self) -> None:
        """fsync and close; remove this session's folder if empty, release every lock.

        What is still spooled stays on disk for a later session with the same spool_dir.
        """
        if self._closed:
            return
        self._seal_active()
        self._closed = True
        for folder in self._adopted:
            os.close(folder.lock_fd)
        self._adopted.clear()
        if self._own is not None:
            if self._own.segments:
                log.warning("%d spool segment(s) left undelivered in %s; a later session with "
                            "the same spool_dir replays them", len(self._own.segments),
                            self._own.path)
                os.close(self._own.lock_fd)
            else:
                self._release(self._own)
            self._own = None

    @staticmethod
    def _release(folder: _HeldFolder) -> None:
        """Remove an emptied folder, then drop its lock (unlink first so nobody re-adopts it)."""
        (folder.path / _LOCK_NAME).unlink(missing_ok=True)
        try:
            folder.path.rmdir()
        except OSError:
            pass
        os.close(folder.lock_fd)

"""The watcher's journal: an append-only, fsynced JSON-lines file in OUT that survives kills and full disks.

Records (one JSON object a line, ``k`` says which):

- ``intent``: about to write ``dst`` for this version (``src``, ``size``, ``mtime_ns``,
  ``sha256``) of a source. Written (and fsynced) *before* the output is moved into
  place, so after a kill the watcher knows the output may be its own and redoes the
  file, replacing it; no output is left that nobody owns.
- ``done``: the outcome: ``status`` ``ok`` (written), ``skipped`` (an output that was
  not ours existed), ``failed`` (permanent: the same content is not tried again),
  ``retry`` (transient: disk full, I/O or permission error; tried again, also after
  a restart).

The last record per source wins. A torn line (kill or full disk in mid-write) is
skipped and never swallows the next record: a torn tail found at open is ended
with a newline first, and an append that failed is followed by a newline before
the next one. Appends that fail (disk full) are kept in memory and written by
:meth:`Journal.flush` later; nothing raises out of :meth:`Journal.record`.

One process at a time: :class:`Journal` takes an exclusive lock on
``OUT/.srgan-watch.lock`` (a file never replaced) *before* it reads or compacts the
journal, so a second watcher is refused before it can touch anything.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from .errors import UsageError
from .imageio import atomic_write

__all__ = ["JOURNAL_NAME", "LOCK_NAME", "Journal", "JournalEntry", "Status"]

log = logging.getLogger(__name__)

JOURNAL_NAME = ".srgan-watch.jsonl"
LOCK_NAME = ".srgan-watch.lock"

Status = Literal["ok", "skipped", "failed", "retry", "intent"]
#: Statuses after which the entry's ``dst`` (if it exists) is this source's own output.
_OWNING = ("ok", "intent", "retry")


@dataclass(frozen=True)
class JournalEntry:
    """The last record for one source. ``src``/``dst``: POSIX paths relative to IN / OUT (``dst``
    empty when no output was planned). ``status``: see the module docstring (``intent`` = an
    output may have been written, no outcome recorded)."""

    src: str
    size: int
    mtime_ns: int
    sha256: str
    status: Status
    dst: str = ""
    reason: str = ""
    at: str = ""


class Journal:
    """The journal at ``path`` (see the module docstring); the lock file sits beside it.

    Raises :class:`~runtime.errors.UsageError` if another process holds the lock or the
    folder cannot be used at all (no lock file can be made: read-only, not a folder).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path.parent / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as e:
            raise UsageError(f"cannot use {self.path.parent} for the watch journal and its lock: "
                             f"{e.strerror or e}") from None
        try:
            import fcntl

            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError:
            os.close(self._lock_fd)
            raise UsageError(f"another watcher is using {self.path.parent} (it holds {LOCK_NAME}); "
                             "stop it or choose another -o") from None
        self.entries: dict[str, JournalEntry] = {}
        self._unsaved: list[bytes] = []
        self._torn = False  # the last append may have left a partial line
        self._fd: int | None = None
        lines = self._load()
        if lines > 2 * len(self.entries) + 100:
            self._compact()
        self._owners = {e.dst: e.src for e in self.entries.values() if e.status in _OWNING and e.dst}
        self._open()

    # -- reading and compacting (under the lock)

    def _load(self) -> int:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        self._torn = bool(data) and not data.endswith(b"\n")
        lines = 0
        for n, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            lines += 1
            try:
                d = json.loads(line)
                d.pop("k", None)
                e = JournalEntry(**d)
            except (ValueError, TypeError) as err:
                log.warning("%s line %d is unreadable (%s); skipped", self.path, n, err)
                continue
            self.entries[e.src] = e
        return lines

    def _compact(self) -> None:
        """Rewrite the journal with one line per source (atomically; we hold the lock)."""
        try:
            with atomic_write(self.path) as fh:
                fh.write(b"".join(self._line(e) for e in self.entries.values()))
            self._torn = False
        except OSError as e:
            log.warning("%s: not compacted (%s); the old journal is kept", self.path, e)

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as e:
            log.warning("%s cannot be opened (%s); outcomes are kept in memory until it can", self.path, e)
            self._fd = None

    @staticmethod
    def _line(e: JournalEntry) -> bytes:
        k = "intent" if e.status == "intent" else "done"
        return (json.dumps({"k": k, **asdict(e)}, ensure_ascii=False) + "\n").encode()

    # -- queries

    def get(self, src: str) -> JournalEntry | None:
        return self.entries.get(src)

    def owner_of(self, dst: str) -> str | None:
        """The source whose output (written or intended) is ``dst``, if any."""
        return self._owners.get(dst)

    @property
    def unsaved(self) -> int:
        """Records not yet on disk (the journal's disk was full or failing)."""
        return len(self._unsaved)

    # -- writing

    def record(self, entry: JournalEntry, *, durable: bool = False) -> bool:
        """Make ``entry`` the source's current entry and append it (flushed and fsynced).

        Returns True if it (and every earlier unsaved record) is on disk. With
        ``durable``, raises OSError instead of keeping the record for later (an
        ``intent`` must be on disk before the output is moved into place).
        """
        if not entry.at:
            entry = replace(entry, at=datetime.now(UTC).isoformat(timespec="seconds"))
        old = self.entries.get(entry.src)
        if old is not None and old.dst and self._owners.get(old.dst) == old.src:
            del self._owners[old.dst]
        if entry.status in _OWNING and entry.dst:
            self._owners[entry.dst] = entry.src
        self.entries[entry.src] = entry
        self._unsaved.append(self._line(entry))
        try:
            self._write()
        except OSError:
            if durable:
                raise
            return False
        return True

    def flush(self) -> bool:
        """Try again to write records kept in memory; True when none is left. Never raises."""
        if not self._unsaved:
            return True
        with contextlib.suppress(OSError):
            self._write()
        return not self._unsaved

    def _write(self) -> None:
        if self._fd is None:
            self._open()
            if self._fd is None:
                raise OSError(errno.EIO, "journal cannot be opened", str(self.path))
        while self._unsaved:
            data = (b"\n" if self._torn else b"") + self._unsaved[0]
            self._torn = True  # until the whole line is known to be there
            try:
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, "short write", str(self.path))
                os.fsync(self._fd)
            except OSError as e:
                if not getattr(self, "_warned", False):
                    log.warning("%s: cannot append (%s); kept in memory, retrying", self.path, e.strerror or e)
                    self._warned = True
                raise
            self._torn = False
            self._warned = False
            self._unsaved.pop(0)

    def close(self) -> None:
        """Write what is left if possible, then release the file and the lock."""
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        os.close(self._lock_fd)

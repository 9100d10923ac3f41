"""Watch a folder and upscale every image that arrives in it, exactly once per content version.

:class:`FolderWatcher` is a library object: build it with a loaded model, then
either call :meth:`~FolderWatcher.run` (blocks until :meth:`~FolderWatcher.stop`)
or :meth:`~FolderWatcher.start` it on a thread. ``cli.py watch`` wraps it and
turns Ctrl-C / SIGTERM into :meth:`~FolderWatcher.stop`.

Rules:

- Candidates: files IN (subfolders with ``recursive``) whose suffix is an
  image format (or that match ``glob``). Ignored: dotfiles and dot-folders,
  temporary names (``.part``, ``.tmp``, ``.crdownload``, ``~``...), anything
  under OUT (so OUT may live inside IN), and the journal.
- Existing files are queued at start unless ``new_only``; then every created,
  modified, closed or moved-in file (watchdog events; a folder moved in is
  scanned).
- A file is touched only when it is complete: its size and mtime have not
  changed for ``settle`` seconds *and* it decodes. A file that stays
  undecodable for a second ``settle`` period is a bad file: it fails with
  its reason and is retried only when it changes.
- The journal (``OUT/.srgan-watch.jsonl``, one JSON line per outcome; the
  last line for a source wins) records each source's size, mtime, sha256,
  status and output. A file whose size and mtime match its entry, or whose
  content hash does, is not redone; a changed file is redone and replaces
  its own earlier output. A second watcher on the same OUT is refused.
- Outputs mirror IN's subfolders under OUT, named as ``cli.py upscale`` names
  them (:func:`runtime.pipeline.plan_jobs`), and are written atomically by
  :func:`runtime.pipeline.process_one`. Stopping finishes the current file.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from .errors import ImageReadError, UsageError
from .files import file_sha256
from .formats import INPUT_SUFFIXES
from .imageio import atomic_write, read_image
from .pipeline import FileResult, UpscaleOptions, plan_jobs, process_one
from .session import SRModel

__all__ = ["FolderWatcher", "Journal", "JournalEntry", "JOURNAL_NAME", "TEMP_SUFFIXES", "is_temporary"]

log = logging.getLogger(__name__)

JOURNAL_NAME = ".srgan-watch.jsonl"
#: Name endings of files still being written by browsers, copy tools and editors.
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".filepart", ".swp", "~")


def is_temporary(name: str) -> bool:
    """True for dotfiles, ``~``-prefixed lock files and the temporary endings in :data:`TEMP_SUFFIXES`."""
    low = name.lower()
    return low.startswith((".", "~")) or low.endswith(TEMP_SUFFIXES)


# ---------------------------------------------------------------- journal

@dataclass(frozen=True)
class JournalEntry:
    """The outcome for one version of one source. ``src``/``dst``: POSIX paths relative to IN / OUT
    (``dst`` empty when no output was planned); ``status`` as :class:`~runtime.pipeline.FileResult`."""

    src: str
    size: int
    mtime_ns: int
    sha256: str
    status: Literal["ok", "skipped", "failed"]
    dst: str = ""
    reason: str = ""
    at: str = ""


class Journal:
    """Append-only JSON-lines journal in OUT; the last line per source wins; a torn last line is ignored.

    Holds an exclusive lock on the file (POSIX) while open. Raises
    :class:`~runtime.errors.UsageError` if another process holds it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, JournalEntry] = {}
        lines = 0
        if self.path.exists():
            for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                lines += 1
                try:
                    e = JournalEntry(**json.loads(line))
                except (ValueError, TypeError) as err:
                    log.warning("%s line %d is unreadable (%s); ignored", self.path, n, err)
                    continue
                self.entries[e.src] = e
        self._owners = {e.dst: e.src for e in self.entries.values() if e.status == "ok" and e.dst}
        if lines > 2 * len(self.entries) + 100:  # compact: one line per source
            with atomic_write(self.path) as fh:
                fh.write("".join(self._line(e) for e in self.entries.values()).encode())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(self.path, "a", encoding="utf-8")
        try:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError:
            self._fh.close()
            raise UsageError(f"another watcher is using {self.path.parent} (its journal {self.path.name} is "
                             "locked); stop it or choose another -o") from None

    @staticmethod
    def _line(e: JournalEntry) -> str:
        return json.dumps(asdict(e), ensure_ascii=False) + "\n"

    def get(self, src: str) -> JournalEntry | None:
        return self.entries.get(src)

    def owner_of(self, dst: str) -> str | None:
        """The source whose last successful output is ``dst``, if any."""
        return self._owners.get(dst)

    def record(self, entry: JournalEntry) -> None:
        """Append ``entry`` durably (flushed and fsynced) and make it the source's current entry."""
        if not entry.at:
            entry = replace(entry, at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self._fh.write(self._line(entry))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        old = self.entries.get(entry.src)
        if old is not None and self._owners.get(old.dst) == old.src:
            del self._owners[old.dst]
        if entry.status == "ok" and entry.dst:
            self._owners[entry.dst] = entry.src
        self.entries[entry.src] = entry

    def close(self) -> None:
        self._fh.close()


# ---------------------------------------------------------------- watcher

@dataclass
class _Pending:
    sig: tuple[int, int]  # (size, mtime_ns) last seen
    since: float  # when sig was first seen
    not_before: float = 0.0


class _Events(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher):
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "modified", "moved", "closed"):
            path = getattr(event, "dest_path", "") or event.src_path
            self.watcher.notice(Path(os.fsdecode(path)), is_dir=event.is_directory)


class FolderWatcher:
    """Upscale images arriving in ``in_dir`` into ``out_dir`` with ``model`` (see the module docstring).

    ``options``: as for ``cli.py upscale`` (``overwrite`` applies to outputs the
    watcher did not write itself). ``settle``: seconds a file must stay
    unchanged before it is read. ``poll``: seconds between stability checks.
    ``polling``: use a polling observer (network shares without inotify).
    ``on_result``: called with each :class:`~runtime.pipeline.FileResult`.

    Raises :class:`~runtime.errors.UsageError` if ``in_dir`` is not a folder,
    ``out_dir`` is a file or equals ``in_dir``, or another watcher holds OUT.
    """

    def __init__(self, in_dir: str | Path, out_dir: str | Path, model: SRModel,
                 options: UpscaleOptions = UpscaleOptions(), *, recursive: bool = False, new_only: bool = False,
                 glob: str | None = None, settle: float = 1.0, poll: float = 0.1, polling: bool = False,
                 on_result: Callable[[FileResult], None] | None = None):
        self.in_dir, self.out_dir = Path(in_dir).resolve(), Path(out_dir).resolve()
        if not self.in_dir.is_dir():
            raise UsageError(f"watch folder {in_dir} does not exist or is not a folder")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UsageError(f"output folder {out_dir} exists and is not a folder")
        if self.out_dir == self.in_dir:
            raise UsageError("the output folder must differ from the watched folder (a subfolder is fine)")
        if settle < 0 or poll <= 0:
            raise UsageError(f"settle must be >= 0 and poll > 0, got {settle}, {poll}")
        self.model, self.options = model, options
        self.recursive, self.new_only, self.glob = recursive, new_only, glob
        self.settle, self.poll, self.polling = settle, poll, polling
        self.on_result = on_result
        self.counts = {"ok": 0, "skipped": 0, "failed": 0, "unchanged": 0}
        self._pending: dict[Path, _Pending] = {}
        self._undecodable: dict[Path, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- control

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Stop accepting work; :meth:`run` returns after the file in progress is finished."""
        self._stop.set()
        self._wake.set()

    def start(self) -> None:
        """Run :meth:`run` on a background thread; returns once the observer is watching."""
        self._thread = threading.Thread(target=self._run_in_thread, name="srgan-watch", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    def _run_in_thread(self) -> None:
        try:
            self.run()
        except BaseException as e:  # handed to start() / join() in the caller's thread
            self._error = e
            self._started.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the background thread; re-raises what ended it abnormally."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error is not None:
            raise self._error

    def idle(self) -> bool:
        """True when nothing is queued or in progress (tests use this to wait for quiet)."""
        with self._lock:
            return not self._pending and not self._busy

    # -- events

    def _wanted(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.in_dir)
        except ValueError:
            return False
        if path == self.out_dir or path.is_relative_to(self.out_dir):
            return False  # our own outputs and journal
        if any(is_temporary(part) for part in rel.parts) or (not self.recursive and len(rel.parts) > 1):
            return False
        if self.glob is not None:
            return fnmatch.fnmatch(path.name, self.glob)
        return path.suffix.lower() in INPUT_SUFFIXES

    def notice(self, path: Path, *, is_dir: bool = False) -> None:
        """Queue ``path`` (a folder: its images) if it is a candidate; safe from any thread."""
        path = Path(os.path.abspath(path))
        if is_dir:
            if self.recursive and path != self.in_dir and self._wanted_dir(path):
                self._scan(path)
            return
        if not self._wanted(path):
            return
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        now = time.monotonic()
        with self._lock:
            p = self._pending.get(path)
            sig = (st.st_size, st.st_mtime_ns)
            if p is None:
                self._pending[path] = _Pending(sig, now)
            elif p.sig != sig:
                p.sig, p.since = sig, now
        self._wake.set()

    def _wanted_dir(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.in_dir)
        except ValueError:
            return False
        return not (path.is_relative_to(self.out_dir) or any(part.startswith(".") for part in rel.parts))

    def _scan(self, folder: Path) -> None:
        for root, dirs, files in os.walk(folder):
            here = Path(root)
            dirs[:] = sorted(d for d in dirs if self.recursive and self._wanted_dir(here / d))
            for name in sorted(files):
                self.notice(here / name)

    # -- the work loop

    def run(self) -> None:
        """Watch until :meth:`stop`; blocking. The file in progress is finished before returning."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        journal = Journal(self.out_dir / JOURNAL_NAME)
        observer = PollingObserver(timeout=max(self.poll, 0.5)) if self.polling else Observer()
        try:
            observer.schedule(_Events(self), str(self.in_dir), recursive=self.recursive)
            observer.start()  # before the scan: nothing created meanwhile is missed
            log.info("watching %s -> %s%s", self.in_dir, self.out_dir, " (recursive)" if self.recursive else "")
            if not self.new_only:
                self._scan(self.in_dir)
            self._started.set()
            while not self._stop.is_set():
                path = self._next_ready()
                if path is None:
                    self._wake.wait(self.poll)
                    self._wake.clear()
                    continue
                try:
                    self._handle(path, journal)
                finally:
                    with self._lock:
                        self._busy = False
        finally:
            if observer.is_alive():
                observer.stop()
                observer.join()
            journal.close()
            self._started.set()
            log.info("stopped watching %s: %s", self.in_dir, self.counts)

    def _next_ready(self) -> Path | None:
        """Pop the oldest queued file unchanged for ``settle`` seconds (marking the watcher busy)."""
        now = time.monotonic()
        with self._lock:
            for path, p in sorted(self._pending.items(), key=lambda kv: kv[1].since):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    del self._pending[path]  # gone (renamed away, deleted)
                    continue
                sig = (st.st_size, st.st_mtime_ns)
                if sig != p.sig:
                    p.sig, p.since = sig, now
                elif now - p.since >= self.settle and now >= p.not_before:
                    del self._pending[path]
                    self._busy = True
                    return path
        return None

    def _requeue(self, path: Path, sig: tuple[int, int], delay: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._pending.setdefault(path, _Pending(sig, now, now + delay))

    def _handle(self, path: Path, journal: Journal) -> None:
        rel = path.relative_to(self.in_dir).as_posix()
        try:
            st = path.stat()
            sig = (st.st_size, st.st_mtime_ns)
            entry = journal.get(rel)
            if entry is not None and (entry.size, entry.mtime_ns) == sig:
                self.counts["unchanged"] += 1
                return
            digest = file_sha256(path)
            if entry is not None and entry.sha256 == digest:  # touched or copied again, same content
                journal.record(replace(entry, size=sig[0], mtime_ns=sig[1], at=""))
                self.counts["unchanged"] += 1
                return
            try:  # decoded twice (here and in process_one): cheap next to the model, and keeps both simple
                read_image(path, max_pixels=self.options.max_pixels)
            except ImageReadError as e:
                if self._undecodable.get(path) != sig:  # maybe still being written: look again later
                    self._undecodable[path] = sig
                    log.debug("%s does not decode yet (%s); checking again in %.1f s", path, e.reason, self.settle)
                    self._requeue(path, sig, self.settle)
                    return
            st = path.stat()
            if (st.st_size, st.st_mtime_ns) != sig:  # changed while hashing: wait for it to settle again
                self._requeue(path, (st.st_size, st.st_mtime_ns), 0.0)
                return
        except FileNotFoundError:
            return
        self._undecodable.pop(path, None)
        result = self._process(path, rel, entry, journal)
        journal.record(JournalEntry(rel, sig[0], sig[1], digest, result.status,
                                    _rel_or_empty(result.dst, self.out_dir), result.reason))
        self.counts[result.status] += 1
        if result.status == "failed":
            log.warning("failed: %s", result.reason)
        else:
            log.info("%s %s -> %s (%.2f s)", result.status, path, result.dst, result.seconds)
        if self.on_result is not None:
            self.on_result(result)

    def _process(self, path: Path, rel: str, entry: JournalEntry | None, journal: Journal) -> FileResult:
        """Plan the output as ``cli.py upscale`` would (subfolders mirrored) and run ``process_one``."""
        try:
            job = plan_jobs([path], self.out_dir / Path(rel).parent, fmt=self.options.format)[0]
        except UsageError as e:  # vanished, or its output folder is a file
            return FileResult(path, self.out_dir / rel, "failed", str(e))
        dst = job.dst
        n = 1
        while (owner := journal.owner_of(_rel_or_empty(dst, self.out_dir))) not in (None, rel):
            n += 1  # another source (e.g. a.jpg beside a.png) already owns this name
            dst = job.dst.with_name(f"{job.dst.stem}_{n}{job.dst.suffix}")
            log.warning("%s: %s is the output of %s; writing %s", path, job.dst.name, owner, dst.name)
        if job.error:
            return FileResult(path, dst, "failed", job.error)
        ours = entry is not None and entry.status == "ok" and entry.dst == _rel_or_empty(dst, self.out_dir)
        options = replace(self.options, overwrite=True) if ours else self.options
        try:
            return process_one(path, dst, self.model, options)
        except Exception as e:  # a bug must not stop the watcher; logged in full, journaled as failed
            log.exception("unexpected error on %s", path)
            return FileResult(path, dst, "failed", f"internal error {type(e).__name__}: {e}")


def _rel_or_empty(path: Path, root: Path) -> str:
    with contextlib.suppress(ValueError):
        return Path(os.path.abspath(path)).relative_to(root).as_posix()
    return ""

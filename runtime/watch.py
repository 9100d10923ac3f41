"""Watch a folder and upscale every image that arrives in it, exactly once per content version.

:class:`FolderWatcher` is a library object: build it with a loaded model, then
either call :meth:`~FolderWatcher.run` (blocks until :meth:`~FolderWatcher.stop`)
or :meth:`~FolderWatcher.start` it on a thread. ``cli.py watch`` wraps it and
turns Ctrl-C / SIGTERM into :meth:`~FolderWatcher.stop`.

Rules:

- Candidates: files IN (subfolders with ``recursive``; symlinked folders are
  never followed) whose suffix is an image format (or that match ``glob``).
  Ignored: dotfiles and dot-folders, temporary names (``.part``, ``.tmp``,
  ``.crdownload``, ``~``...), anything under OUT (so OUT may live inside IN).
- Existing files are queued at start unless ``new_only``; then every created,
  modified, closed or moved-in file (watchdog events; a folder moved in is
  scanned).

Each file goes through a small state machine (one file at a time)::

    seen --(size+mtime unchanged for settle s)--> stable --(hash vs journal)-->
        unchanged            same content as its last ok or permanent failure: nothing to do
        | process: intent journaled (fsynced) -> process_one -> outcome journaled:
            ok               output written (atomically, through O_NOFOLLOW folder fds)
            failed           permanent (bad file, bomb, NaN output): remembered for this sha256,
                             tried again only when the content changes
            retry            transient (disk full, I/O or permission error, out of memory):
                             queued again with backoff (1 s doubling to ``max_backoff``), also
                             after a restart
        | not yet decodable  (maybe still being copied): looked at again after ``settle``

- The journal (:mod:`runtime.journal`, ``OUT/.srgan-watch.jsonl``) is append-only
  and fsynced; the lock (``OUT/.srgan-watch.lock``) is taken before it is read or
  compacted, so a second watcher on the same OUT is refused. If the journal cannot
  be written (its disk is full), outcomes are kept in memory and written when it
  can; the output of a file is only moved into place after its ``intent`` is on
  disk, so a kill at any point leaves either no output or one the journal says is
  ours, which a restart redoes (exactly one output per input, never a stale one:
  when a changed input fails, the old version's output is removed).
- At start, temporary files of dead runs in OUT are removed.
- IN deleted: the watcher logs it and waits; when IN is created again it is
  watched and scanned again (nothing is lost, nothing exits).
- Outputs mirror IN's subfolders under OUT, named as ``cli.py upscale`` names
  them (:func:`runtime.pipeline.plan_jobs`). Stopping finishes the current file.
"""
from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .errors import ImageReadError, ImageTooLargeError, UsageError
from .files import file_sha256
from .formats import INPUT_SUFFIXES
from .imageio import (
    TRANSIENT_ERRNOS,
    OutputWriteError,
    open_dir_nofollow,
    read_image,
    remove_stale_temps,
)
from .journal import JOURNAL_NAME, LOCK_NAME, Journal, JournalEntry
from .pipeline import FileResult, UpscaleOptions, check_model, plan_jobs, process_one
from .session import SRModel

__all__ = ["JOURNAL_NAME", "LOCK_NAME", "TEMP_SUFFIXES", "FolderWatcher", "Journal", "JournalEntry", "is_temporary"]

log = logging.getLogger(__name__)

#: Name endings of files still being written by browsers, copy tools and editors.
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".filepart", ".swp", "~")


def is_temporary(name: str) -> bool:
    """True for dotfiles, ``~``-prefixed lock files and the temporary endings in :data:`TEMP_SUFFIXES`."""
    low = name.lower()
    return low.startswith((".", "~")) or low.endswith(TEMP_SUFFIXES)


# ---------------------------------------------------------------- watcher

@dataclass
class _Pending:
    sig: tuple[int, int]  # (size, mtime_ns) last seen
    since: float  # when sig was first seen
    not_before: float = 0.0
    tries: int = 0  # transient failures so far (backoff doubles with each)


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
    ``max_backoff``: longest wait, in seconds, before a transient failure is
    tried again. ``on_result``: called with each :class:`~runtime.pipeline.FileResult`.

    Raises :class:`~runtime.errors.UsageError` if ``in_dir`` is not a folder,
    ``out_dir`` is a file or equals ``in_dir``, or another watcher holds OUT;
    :class:`~runtime.errors.ModelLoadError` if the model's scale metadata is wrong
    or it returns NaN (:func:`~runtime.pipeline.check_model`).
    """

    def __init__(self, in_dir: str | Path, out_dir: str | Path, model: SRModel,
                 options: UpscaleOptions | None = None, *, recursive: bool = False, new_only: bool = False,
                 glob: str | None = None, settle: float = 1.0, poll: float = 0.1, polling: bool = False,
                 max_backoff: float = 60.0, on_result: Callable[[FileResult], None] | None = None):
        self.in_dir, self.out_dir = Path(in_dir).resolve(), Path(out_dir).resolve()
        if not self.in_dir.is_dir():
            raise UsageError(f"watch folder {in_dir} does not exist or is not a folder")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UsageError(f"output folder {out_dir} exists and is not a folder")
        if self.out_dir == self.in_dir:
            raise UsageError("the output folder must differ from the watched folder (a subfolder is fine)")
        if settle < 0 or poll <= 0 or max_backoff <= 0:
            raise UsageError(f"settle must be >= 0, poll and max_backoff > 0, got {settle}, {poll}, {max_backoff}")
        check_model(model)
        self.model, self.options = model, options if options is not None else UpscaleOptions()
        self.recursive, self.new_only, self.glob = recursive, new_only, glob
        self.settle, self.poll, self.polling, self.max_backoff = settle, poll, polling, max_backoff
        self.on_result = on_result
        self.counts = {"ok": 0, "skipped": 0, "failed": 0, "unchanged": 0, "retry": 0}
        self._pending: dict[Path, _Pending] = {}
        self._undecodable: dict[Path, tuple[int, int]] = {}
        self._tries: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._in_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the IN being watched

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
            if self.recursive and path != self.in_dir and self._wanted_dir(path) and not path.is_symlink():
                self._scan(path)
            return
        if not self._wanted(path):
            return
        try:
            st = path.stat()
        except OSError:
            return
        now = time.monotonic()
        with self._lock:
            p = self._pending.get(path)
            sig = (st.st_size, st.st_mtime_ns)
            if p is None:
                self._pending[path] = _Pending(sig, now)
            elif p.sig != sig:
                p.sig, p.since, p.not_before = sig, now, 0.0  # changed: a retry waits for nothing but settling
        self._wake.set()

    def _wanted_dir(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.in_dir)
        except ValueError:
            return False
        return not (path.is_relative_to(self.out_dir) or any(part.startswith(".") for part in rel.parts))

    def _scan(self, folder: Path) -> None:
        for root, dirs, files in os.walk(folder):  # never follows symlinked folders
            here = Path(root)
            dirs[:] = sorted(d for d in dirs if self.recursive and self._wanted_dir(here / d))
            for name in sorted(files):
                self.notice(here / name)

    # -- the work loop

    def run(self) -> None:
        """Watch until :meth:`stop`; blocking. The file in progress is finished before returning."""
        journal = Journal(self.out_dir / JOURNAL_NAME)  # the lock first: a second watcher stops here
        remove_stale_temps(self.out_dir)
        self._requeue_unfinished(journal)
        observer: BaseObserver | None = None
        try:
            observer = self._watch_in()
            log.info("watching %s -> %s%s", self.in_dir, self.out_dir, " (recursive)" if self.recursive else "")
            if not self.new_only:
                self._scan(self.in_dir)
            self._started.set()
            next_check = 0.0
            while not self._stop.is_set():
                if time.monotonic() >= next_check:
                    observer = self._check_in(observer)
                    journal.flush()
                    next_check = time.monotonic() + 1.0
                path = self._next_ready()
                if path is None:
                    self._wake.wait(self.poll)
                    self._wake.clear()
                    continue
                try:
                    self._handle(path, journal)
                except Exception as e:
                    log.error("%s: unexpected %s: %s; will try again (run with -v for the traceback)",
                              path, type(e).__name__, e)
                    log.debug("traceback", exc_info=True)
                    self._retry_later(path)
                finally:
                    with self._lock:
                        self._busy = False
        finally:
            if observer is not None and observer.is_alive():
                observer.stop()
                observer.join()
            journal.close()
            self._started.set()
            log.info("stopped watching %s: %s", self.in_dir, self.counts)

    def _watch_in(self) -> BaseObserver | None:
        """Start an observer on IN (None if IN is gone); remembers which folder it is."""
        try:
            st = self.in_dir.stat()
        except OSError:
            self._in_id = None
            return None
        observer = PollingObserver(timeout=max(self.poll, 0.5)) if self.polling else Observer()
        observer.schedule(_Events(self), str(self.in_dir), recursive=self.recursive)
        observer.start()  # before the scan: nothing created meanwhile is missed
        self._in_id = (st.st_dev, st.st_ino)
        return observer

    def _check_in(self, observer: BaseObserver | None) -> BaseObserver | None:
        """IN deleted: stop watching it and wait; IN (re)created: watch and scan it again."""
        try:
            st = self.in_dir.stat()
            now_id: tuple[int, int] | None = (st.st_dev, st.st_ino) if self.in_dir.is_dir() else None
        except OSError:
            now_id = None
        if now_id == self._in_id and (observer is None) == (now_id is None):
            return observer
        if observer is not None and observer.is_alive():
            observer.stop()
            observer.join()
        if now_id is None:
            if self._in_id is not None:
                log.warning("%s is gone; waiting for it to be created again", self.in_dir)
            self._in_id = None
            return None
        log.warning("%s is back; watching and scanning it again", self.in_dir)
        observer = self._watch_in()
        self._scan(self.in_dir)
        return observer

    def _requeue_unfinished(self, journal: Journal) -> None:
        """After a restart: sources whose last record is an intent (killed mid-write) or a retry."""
        for rel, e in journal.entries.items():
            if e.status in ("intent", "retry"):
                self.notice(self.in_dir / rel)

    def _next_ready(self) -> Path | None:
        """Pop the oldest queued file unchanged for ``settle`` seconds (marking the watcher busy)."""
        now = time.monotonic()
        with self._lock:
            for path, p in sorted(self._pending.items(), key=lambda kv: kv[1].since):
                try:
                    st = path.stat()
                except OSError:
                    del self._pending[path]  # gone (renamed away, deleted)
                    continue
                sig = (st.st_size, st.st_mtime_ns)
                if sig != p.sig:
                    p.sig, p.since, p.not_before = sig, now, 0.0
                elif now - p.since >= self.settle and now >= p.not_before:
                    del self._pending[path]
                    self._busy = True
                    return path
        return None

    def _requeue(self, path: Path, sig: tuple[int, int], delay: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._pending.setdefault(path, _Pending(sig, now, now + delay))

    def _retry_later(self, path: Path) -> float:
        """Queue ``path`` again after a backoff that doubles with each transient failure; returns it."""
        n = self._tries.get(path, 0) + 1
        self._tries[path] = n
        delay = min(self.max_backoff, 2.0 ** (n - 1))
        try:
            st = path.stat()
        except OSError:
            return delay
        self._requeue(path, (st.st_size, st.st_mtime_ns), delay)
        return delay

    def _handle(self, path: Path, journal: Journal) -> None:
        rel = path.relative_to(self.in_dir).as_posix()
        try:
            st = path.stat()
            sig = (st.st_size, st.st_mtime_ns)
            entry = journal.get(rel)
            settled = entry is not None and entry.status in ("ok", "failed", "skipped")
            if settled and entry is not None and (entry.size, entry.mtime_ns) == sig:
                self.counts["unchanged"] += 1
                return
            digest = file_sha256(path)
            if settled and entry is not None and entry.sha256 == digest:  # touched or copied again, same content
                journal.record(replace(entry, size=sig[0], mtime_ns=sig[1], at=""))
                self.counts["unchanged"] += 1
                return
            try:  # decoded twice (here and in process_one): cheap next to the model, and keeps both simple
                read_image(path, max_pixels=self.options.max_pixels)
            except ImageTooLargeError:
                pass  # final: process_one reports it
            except ImageReadError as e:
                if self._undecodable.get(path) != sig:  # maybe still being written: look again later
                    self._undecodable[path] = sig
                    log.debug("%s does not decode yet (%s); checking again in %.1f s", path, e.reason, self.settle)
                    self._requeue(path, sig, self.settle)
                    return
            except MemoryError:
                pass  # process_one reports it (as transient)
            st = path.stat()
            if (st.st_size, st.st_mtime_ns) != sig:  # changed while hashing: wait for it to settle again
                self._requeue(path, (st.st_size, st.st_mtime_ns), 0.0)
                return
        except FileNotFoundError:
            return
        except OSError as e:  # cannot read the input now (permission, I/O): try again later
            result = FileResult(path, self.out_dir / rel, "failed", f"{path}: {e.strerror or e}",
                                transient=e.errno in TRANSIENT_ERRNOS)
            if result.transient:
                self._report(result, self._retry_later(path))
                return
            raise
        self._undecodable.pop(path, None)
        result = self._process(path, rel, sig, digest, entry, journal)
        if result.status == "failed" and result.transient:
            journal.record(JournalEntry(rel, sig[0], sig[1], digest, "retry", _rel_or_empty(result.dst, self.out_dir),
                                        result.reason))
            self._report(result, self._retry_later(path))
            return
        self._tries.pop(path, None)
        journal.record(JournalEntry(rel, sig[0], sig[1], digest, result.status,
                                    _rel_or_empty(result.dst, self.out_dir), result.reason))
        self._report(result)

    def _report(self, result: FileResult, retry_in: float | None = None) -> None:
        if retry_in is not None:
            self.counts["retry"] += 1
            log.warning("failed for now, retrying in %.0f s: %s", retry_in, result.reason)
        else:
            self.counts[result.status] += 1
            if result.status == "failed":
                log.warning("failed: %s", result.reason)
            else:
                log.info("%s %s -> %s (%.2f s)", result.status, result.src, result.dst, result.seconds)
        if self.on_result is not None:
            self.on_result(result)

    def _process(self, path: Path, rel: str, sig: tuple[int, int], digest: str, entry: JournalEntry | None,
                 journal: Journal) -> FileResult:
        """Plan the output as ``cli.py upscale`` would (subfolders mirrored), journal the intent, run
        ``process_one``; if a changed input fails for good, its old output is removed (never stale)."""
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
        dst_rel = _rel_or_empty(dst, self.out_dir)
        old = entry.dst if entry is not None and entry.status in ("ok", "intent") and entry.dst else ""
        ours = journal.owner_of(dst_rel) == rel
        try:
            journal.record(JournalEntry(rel, sig[0], sig[1], digest, "intent", dst_rel), durable=True)
        except OSError as e:
            return FileResult(path, dst, "failed", f"{journal.path}: cannot record the intent to write {dst} "
                                                   f"({e.strerror or e})", transient=True)
        options = replace(self.options, overwrite=True) if ours else self.options
        result = process_one(path, dst, self.model, options, root=self.out_dir)
        if result.status == "failed" and not result.transient and old:
            self._remove_output(old, f"{path} changed and its new version failed")
        return result

    def _remove_output(self, dst_rel: str, why: str) -> None:
        """Remove our output ``dst_rel`` (relative to OUT) through an O_NOFOLLOW folder fd."""
        parent, name = os.path.split(dst_rel)
        try:
            fd = open_dir_nofollow(self.out_dir, parent)
        except OutputWriteError as e:
            log.warning("cannot remove the stale output %s: %s", dst_rel, e)
            return
        try:
            os.unlink(name, dir_fd=fd)
            log.warning("removed %s: %s", dst_rel, why)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove the stale output %s: %s", dst_rel, e.strerror)
        finally:
            os.close(fd)


def _rel_or_empty(path: Path, root: Path) -> str:
    with contextlib.suppress(ValueError):
        return Path(os.path.abspath(path)).relative_to(root).as_posix()
    return ""

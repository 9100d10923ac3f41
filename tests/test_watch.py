"""Watch mode with real filesystem events in temporary folders (watchdog's native observer).

Every test runs a real :class:`FolderWatcher` on a thread with the tiny ONNX model and
checks, through the journal and the results, that every good file is processed exactly
once, nothing is lost and nothing is duplicated.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, photo
from PIL import Image

from srgan.runtime.errors import UsageError
from srgan.runtime.imageio import TEMP_PREFIX, read_image, write_image
from srgan.runtime.pipeline import FileResult, UpscaleOptions, upscale_image
from srgan.runtime.watch import JOURNAL_NAME, LOCK_NAME, FolderWatcher, Journal, JournalEntry, is_temporary

SETTLE = 0.4


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(buf, format="PNG")
    return buf.getvalue()


def wait_for(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Run:
    """A watcher on a thread plus every result it reported."""

    def __init__(self, in_dir: Path, out_dir: Path, model, **kwargs):
        self.results: list[FileResult] = []
        self._lock = threading.Lock()
        kwargs.setdefault("settle", SETTLE)
        kwargs.setdefault("poll", 0.05)
        self.watcher = FolderWatcher(in_dir, out_dir, model, on_result=self._add, **kwargs)

    def _add(self, r: FileResult) -> None:
        with self._lock:
            self.results.append(r)

    def by_status(self, status: str) -> Counter:
        with self._lock:
            return Counter(r.src.name for r in self.results if r.status == status)

    def wait_ok(self, names: set[str], timeout: float = 30.0) -> None:
        wait_for(lambda: names <= set(self.by_status("ok")), timeout, f"ok results for {sorted(names)}")

    def quiet(self, seconds: float = 3 * SETTLE) -> None:
        """Wait until the watcher is idle, then that long again (late duplicates would show up)."""
        wait_for(self.watcher.idle, what="an idle watcher")
        time.sleep(seconds)
        wait_for(self.watcher.idle, what="an idle watcher")


@contextmanager
def watching(in_dir: Path, out_dir: Path, model, **kwargs) -> Iterator[Run]:
    run = Run(in_dir, out_dir, model, **kwargs)
    run.watcher.start()
    try:
        yield run
    finally:
        run.watcher.stop()
        run.watcher.join(30)


def journal_lines(out: Path) -> list[dict]:
    """The journal's outcome records (``intent`` records, written before each output, left out)."""
    lines = [json.loads(line) for line in (out / JOURNAL_NAME).read_text().splitlines() if line.strip()]
    return [d for d in lines if d.get("k") != "intent"]


def assert_upscaled(src_img: np.ndarray, dst: Path, model) -> None:
    np.testing.assert_array_equal(read_image(dst).pixels, upscale_image(src_img, model, tile=0))


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "in").mkdir()
    return tmp_path / "in", tmp_path / "out"


def test_existing_files_then_a_burst_of_50(tiny, dirs) -> None:
    in_dir, out = dirs
    images = {f"old{i}.png": photo(12, 10, seed=i) for i in range(3)}
    for name, img in images.items():
        write_image(in_dir / name, img)
    with watching(in_dir, out, tiny) as run:
        run.wait_ok(set(images))
        burst = {f"b{i:02d}.png": photo(9 + i % 4, 8, seed=100 + i) for i in range(50)}
        for i, (name, img) in enumerate(burst.items()):
            if i % 2:  # half written in place (created + modified + closed events) ...
                (in_dir / name).write_bytes(png_bytes(img))
            else:  # ... half renamed into place from a dot-file (one moved event)
                (in_dir / f".{name}.incoming").write_bytes(png_bytes(img))
                os.replace(in_dir / f".{name}.incoming", in_dir / name)
        images.update(burst)
        run.wait_ok(set(images))
        run.quiet()
        assert run.by_status("ok") == Counter(set(images))  # each exactly once
        assert not run.by_status("failed") and not run.by_status("skipped")
    for name, img in images.items():
        assert_upscaled(img, out / name, tiny)
    assert Counter(e["src"] for e in journal_lines(out)) == Counter(set(images))
    assert sorted(p.name for p in out.iterdir()) == sorted([*images, JOURNAL_NAME, LOCK_NAME])  # no temp files left


def test_file_written_in_chunks_over_two_seconds_is_processed_once_complete(tiny, dirs) -> None:
    in_dir, out = dirs
    img = photo(48, 40, seed=3)
    data = png_bytes(img)
    with watching(in_dir, out, tiny) as run:
        with open(in_dir / "slow.png", "wb") as fh:
            chunks = np.array_split(np.frombuffer(data, np.uint8), 8)
            for i, chunk in enumerate(chunks):
                fh.write(chunk.tobytes())
                fh.flush()
                # one pause longer than `settle`: only the decode check sees that the file is incomplete
                time.sleep(1.3 * SETTLE if i == 3 else 0.2)
        run.wait_ok({"slow.png"})
        run.quiet()
        assert run.by_status("ok") == Counter({"slow.png": 1})
        assert not run.by_status("failed")
    assert_upscaled(img, out / "slow.png", tiny)


def test_corrupt_file_is_journaled_failed_and_retried_only_when_it_changes(tiny, dirs) -> None:
    in_dir, out = dirs
    with watching(in_dir, out, tiny) as run:
        (in_dir / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 50)
        write_image(in_dir / "good.png", photo(10, 10))
        wait_for(lambda: run.by_status("failed")["bad.png"] == 1, what="bad.png to fail")
        run.wait_ok({"good.png"})  # the watcher keeps going
        bad = next(e for e in journal_lines(out) if e["src"] == "bad.png")
        assert bad["status"] == "failed" and "bad.png: cannot open" in bad["reason"] and len(bad["sha256"]) == 64
        os.utime(in_dir / "bad.png")  # touched, same content: not retried
        run.quiet()
        assert run.by_status("failed")["bad.png"] == 1
        fixed = photo(11, 13, seed=9)
        (in_dir / "bad.png").write_bytes(png_bytes(fixed))  # changed: retried, now good
        run.wait_ok({"bad.png"})
        run.quiet()
        assert run.by_status("failed")["bad.png"] == 1 and run.by_status("ok") == Counter({"good.png": 1,
                                                                                         "bad.png": 1})
    assert_upscaled(fixed, out / "bad.png", tiny)
    assert journal_lines(out)[-1]["src"] == "bad.png" and journal_lines(out)[-1]["status"] == "ok"


def test_renamed_in_and_moved_in_files_count_and_temporary_names_do_not(tiny, dirs, tmp_path: Path) -> None:
    in_dir, out = dirs
    (tmp_path / "elsewhere").mkdir()
    a, b = photo(10, 12, seed=1), photo(12, 10, seed=2)
    with watching(in_dir, out, tiny) as run:
        (in_dir / "a.png.part").write_bytes(png_bytes(a))  # a download in progress
        for name in (".hidden.png", "~lock.png", "c.tmp", "notes.txt"):
            (in_dir / name).write_bytes(png_bytes(b))
        time.sleep(3 * SETTLE)
        assert not run.results
        os.rename(in_dir / "a.png.part", in_dir / "a.png")  # the download finished
        write_image(tmp_path / "elsewhere" / "b.png", b)
        os.rename(tmp_path / "elsewhere" / "b.png", in_dir / "b.png")  # moved in from another folder
        run.wait_ok({"a.png", "b.png"})
        run.quiet()
        assert run.by_status("ok") == Counter({"a.png": 1, "b.png": 1}) and len(run.results) == 2
    assert_upscaled(a, out / "a.png", tiny)
    assert_upscaled(b, out / "b.png", tiny)


def test_output_inside_the_watched_folder_does_not_loop(tiny, tmp_path: Path) -> None:
    in_dir = tmp_path / "in"
    (in_dir / "sub").mkdir(parents=True)
    out = in_dir / "upscaled"
    with watching(in_dir, out, tiny, recursive=True, options=UpscaleOptions(format="jpeg")) as run:
        write_image(in_dir / "x.png", photo(10, 10))
        write_image(in_dir / "sub" / "y.png", photo(10, 11, seed=4))
        run.wait_ok({"x.png", "y.png"})
        run.quiet()
        assert len(run.results) == 2
    assert (out / "x.jpg").is_file() and (out / "sub" / "y.jpg").is_file()  # subfolders mirrored
    assert not (out / "upscaled").exists()


def test_restart_in_the_middle_loses_nothing_and_redoes_only_changed_files(tiny, dirs) -> None:
    in_dir, out = dirs
    images = {f"f{i}.png": photo(10, 10, seed=i) for i in range(8)}
    for name, img in images.items():
        write_image(in_dir / name, img)
    first = Run(in_dir, out, tiny)

    def stop_after_three(r: FileResult) -> None:
        first._add(r)
        if len(first.results) == 3:
            first.watcher.stop()

    first.watcher.on_result = stop_after_three
    first.watcher.run()  # blocks until the third file is done
    assert sum(first.by_status("ok").values()) == 3
    done = set(first.by_status("ok"))
    changed = sorted(done)[0]
    images[changed] = photo(14, 9, seed=77)
    write_image(in_dir / changed, images[changed])  # new content while the watcher is down
    images["late.png"] = photo(9, 9, seed=55)
    write_image(in_dir / "late.png", images["late.png"])
    with watching(in_dir, out, tiny) as second:
        second.wait_ok(set(images) - done | {changed})
        second.quiet()
        assert second.by_status("ok") == Counter(set(images) - done | {changed})
        assert second.watcher.counts["unchanged"] == len(done) - 1
    total = first.by_status("ok") + second.by_status("ok")
    assert total == Counter(set(images)) + Counter({changed: 1})  # once per content version
    for name, img in images.items():
        assert_upscaled(img, out / name, tiny)


def test_new_only_leaves_existing_files_until_they_change(tiny, dirs) -> None:
    in_dir, out = dirs
    write_image(in_dir / "old.png", photo(10, 10, seed=1))
    with watching(in_dir, out, tiny, new_only=True) as run:
        write_image(in_dir / "new.png", photo(10, 10, seed=2))
        run.wait_ok({"new.png"})
        run.quiet()
        assert set(run.by_status("ok")) == {"new.png"} and not (out / "old.png").exists()
        changed = photo(12, 10, seed=3)
        write_image(in_dir / "old.png", changed)
        run.wait_ok({"old.png"})
    assert_upscaled(changed, out / "old.png", tiny)


def test_two_sources_with_one_output_name_get_two_outputs(tiny, dirs) -> None:
    in_dir, out = dirs
    png, jpg = photo(10, 10, seed=1), photo(10, 10, seed=2)
    with watching(in_dir, out, tiny, options=UpscaleOptions(format="png")) as run:
        write_image(in_dir / "a.png", png)
        run.wait_ok({"a.png"})
        write_image(in_dir / "a.jpg", jpg)
        run.wait_ok({"a.jpg"})
    assert_upscaled(png, out / "a.png", tiny)
    assert {e["src"]: e["dst"] for e in journal_lines(out)} == {"a.png": "a.png", "a.jpg": "a_2.png"}
    with watching(in_dir, out, tiny, options=UpscaleOptions(format="png")) as again:  # a restart keeps the names
        again.quiet()
        assert not again.results and again.watcher.counts["unchanged"] == 2


def test_second_watcher_on_the_same_output_is_refused(tiny, dirs) -> None:
    in_dir, out = dirs
    with watching(in_dir, out, tiny):
        with pytest.raises(UsageError, match="another watcher"):
            Journal(out / JOURNAL_NAME)
    with pytest.raises(UsageError, match="must differ"):
        FolderWatcher(in_dir, in_dir, tiny)


def test_journal_ignores_a_torn_last_line(tmp_path: Path) -> None:
    j = Journal(tmp_path / JOURNAL_NAME)
    j.record(JournalEntry("a.png", 10, 20, "ab" * 32, "ok", "a.png"))
    j.close()
    with open(tmp_path / JOURNAL_NAME, "a") as fh:
        fh.write('{"src": "b.png", "size": 1')  # killed mid-write
    j = Journal(tmp_path / JOURNAL_NAME)
    assert list(j.entries) == ["a.png"] and j.get("a.png").mtime_ns == 20
    j.close()


@pytest.mark.parametrize("name, temporary", [("a.png", False), ("a.png.part", True), (".a.png", True),
                                             ("~$a.png", True), ("a.png~", True), ("a.PNG.TMP", True),
                                             ("a.crdownload", True)])
def test_temporary_names(name: str, temporary: bool) -> None:
    assert is_temporary(name) is temporary


def test_sigterm_finishes_the_current_file_and_exits_0(tiny_path: Path, dirs) -> None:
    """A real `cli.py watch` process: SIGTERM while a large file is being written out."""
    in_dir, out = dirs
    big = photo(600, 500, seed=5)  # a few seconds of PNG encoding at 2400x2000
    write_image(in_dir / "small.png", photo(10, 10))
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "watch", str(in_dir), "-o", str(out),
                             "-m", str(tiny_path), "--device", "cpu", "--settle", "0.2", "--tile", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out / "small.png").is_file(), 60, "small.png")
        write_image(in_dir / "big.png", big)
        wait_for(lambda: any(p.name.startswith(TEMP_PREFIX) for p in out.iterdir()), 60, "big.png being written")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "SIGTERM" in stderr and "stopped: 2 ok" in stderr
    assert read_image(out / "big.png").pixels.shape == (2400, 2000, 3)  # finished, complete
    assert sorted(p.name for p in out.iterdir()) == [JOURNAL_NAME, LOCK_NAME, "big.png", "small.png"]
    assert {e["src"]: e["status"] for e in journal_lines(out)} == {"small.png": "ok", "big.png": "ok"}

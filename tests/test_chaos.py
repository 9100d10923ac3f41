"""Chaos suite: what no input, model, disk or signal may do to a batch or a watcher.

Every case asserts the same things: no traceback, the documented exit code (0 all ok,
1 some files failed, 2 setup error, 130/143 stopped by SIGINT/SIGTERM), every good file
written exactly once with the right pixels, no partial or temporary file left, nothing
written outside OUT. Inputs are generated (``chaos_corpus.py``); models are the tiny ONNX
nets of ``tiny_models.py`` and broken variants of them. The default run is fast; larger
fuzzing and longer kill sequences are ``slow``. Disk-full and read-only cases mount a
size-limited tmpfs and skip (with the reason) where mounting is not allowed.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from chaos_corpus import bad_files, encode, fuzzed_files, good_files, write_all
from conftest import ROOT, photo
from onnx import helper, numpy_helper
from tiny_models import build_tiny_sr

from srgan.runtime import pipeline
from srgan.runtime.errors import ModelError, UsageError
from srgan.runtime.imageio import TEMP_PREFIX, read_image, remove_stale_temps, write_image
from srgan.runtime.journal import JOURNAL_NAME, LOCK_NAME, Journal, JournalEntry
from srgan.runtime.pipeline import OUTPUTS_NAME, UpscaleOptions, upscale_bands, upscale_batch, upscale_image
from srgan.runtime.session import load_model
from srgan.runtime.watch import FolderWatcher

OWN_FILES = {OUTPUTS_NAME, JOURNAL_NAME, LOCK_NAME}


# ---------------------------------------------------------------- helpers

def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def outputs(out: Path) -> set[str]:
    """Files in OUT except the tool's own bookkeeping; asserts no temporary file is there."""
    found = files_under(out)
    assert not [f for f in found if Path(f).name.startswith(TEMP_PREFIX)], f"temporary files left: {found}"
    return {f for f in found if Path(f).name not in OWN_FILES}


def journal_state(out: Path) -> dict[str, str]:
    """Last status per source in the watch journal, read as a reader would (torn lines skipped)."""
    state = {}
    with contextlib.suppress(FileNotFoundError):
        for line in (out / JOURNAL_NAME).read_bytes().split(b"\n"):
            with contextlib.suppress(ValueError, KeyError):
                d = json.loads(line)
                state[d["src"]] = d["status"]
    return state


def put(path: Path, pixels: np.ndarray) -> Path:
    """Write an input image, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, pixels)
    return path


def finished(out: Path) -> set[str]:
    """Like :func:`outputs` while a run is going on: temporary files are allowed (and left out)."""
    return {f for f in files_under(out) if Path(f).name not in OWN_FILES and not Path(f).name.startswith(TEMP_PREFIX)}


def expected_pixels(src: Path, model) -> np.ndarray:
    return upscale_image(read_image(src).pixels, model, tile=0)


def assert_written_right(src: Path, dst: Path, model) -> None:
    np.testing.assert_array_equal(read_image(dst).pixels, expected_pixels(src, model))


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, ro: bool = False) -> Iterator[Path]:
    """A size-limited tmpfs mounted at ``where`` (skips the test if mounting is not allowed)."""
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'mount failed'}): needs root or CAP_SYS_ADMIN")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(where)], check=True, capture_output=True)


def cli(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def no_traceback(*texts: str) -> None:
    for t in texts:
        assert "Traceback" not in t, t[-3000:]


# ---------------------------------------------------------------- broken models

def _save_variant(src: Path, dst: Path, edit) -> Path:
    m = onnx.load(str(src))
    edit(m)
    onnx.save(m, str(dst))
    return dst


def nan_on_black_model(tiny_path: Path, dst: Path) -> Path:
    """The tiny net plus 0 * sum(log(x)): finite for images without a zero pixel, NaN for those with one."""
    def edit(m: onnx.ModelProto) -> None:
        g = m.graph
        x, y = g.input[0].name, g.output[0].name
        prev = f"{y}_pre"
        for node in g.node:
            node.output[:] = [prev if o == y else o for o in node.output]
        g.initializer.append(numpy_helper.from_array(np.array(0, np.float32), "zero"))
        g.node.extend([
            helper.make_node("Log", [x], ["lg"]),
            helper.make_node("ReduceSum", ["lg"], ["lgsum"], keepdims=1),
            helper.make_node("Mul", ["lgsum", "zero"], ["nanterm"]),
            helper.make_node("Add", [prev, "nanterm"], [y]),
        ])
    return _save_variant(tiny_path, dst, edit)


def wrong_scale_model(tiny_path: Path, dst: Path) -> Path:
    def edit(m: onnx.ModelProto) -> None:
        for p in m.metadata_props:
            if p.key == "scale":
                p.value = "2"
    return _save_variant(tiny_path, dst, edit)


def one_channel_model(dst: Path) -> Path:
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "gray",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, "H", "W"])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1, "H", "W"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(dst))
    return dst


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory: pytest.TempPathFactory, tiny_path: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("broken")
    (d / "empty.onnx").write_bytes(b"")
    data = tiny_path.read_bytes()
    (d / "truncated.onnx").write_bytes(data[:len(data) // 2])
    nan_all = build_tiny_sr(d / "nan_base.onnx")
    return {
        "empty": d / "empty.onnx",
        "truncated": d / "truncated.onnx",
        "wrong_input": one_channel_model(d / "gray_in.onnx"),
        "wrong_scale": wrong_scale_model(tiny_path, d / "wrong_scale.onnx"),
        "nan_on_black": nan_on_black_model(nan_all, d / "nan_on_black.onnx"),
    }


# ---------------------------------------------------------------- corpus through a batch

def test_corpus_of_good_and_bad_files_in_one_batch(tiny, tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    good = write_all(inp, good_files())
    bad = write_all(inp, bad_files())
    (inp / "folder.png").mkdir()  # a folder with an image name
    (inp / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (inp / "loop.png").symlink_to(inp / "loop.png")
    outside = tmp_path / "elsewhere"
    put(outside / "linked.png", photo(9, 7, seed=40))
    (inp / "linked.png").symlink_to(outside / "linked.png")  # reading through a symlink is fine
    before = files_under(tmp_path)

    report = upscale_batch([inp], out, model=tiny, options=UpscaleOptions(format="png"))

    status = {r.src.name: r for r in report.results}
    for p in [*good, inp / "linked.png"]:
        assert status[p.name].status == "ok", status[p.name].reason
        assert_written_right(p, out / (p.stem + ".png"), tiny)
    for p in bad:
        r = status[p.name]
        assert r.status == "failed" and p.name in r.reason and not r.transient, (p.name, r.reason)
    assert "MAX_TEXT_CHUNK" in status["ztxt_bomb.png"].reason and "over --max-pixels" in status["pixel_bomb.png"].reason
    assert "lying header" in status["lying_header.jpg"].reason
    assert report.exit_code == 1
    assert outputs(out) == {p.stem + ".png" for p in [*good, inp / "linked.png"]}
    assert {f for f in files_under(tmp_path) if not f.startswith("out")} == before  # nothing else touched


@pytest.mark.parametrize("n, seed", [pytest.param(30, 1, id="30"),
                                     pytest.param(400, 2, id="400", marks=pytest.mark.slow)])
def test_fuzzed_files_fail_or_succeed_but_never_break_the_batch(tiny, tmp_path: Path, n: int, seed: int) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    paths = write_all(inp, fuzzed_files(n, seed))
    report = upscale_batch([inp], out, model=tiny, options=UpscaleOptions(format="png", max_pixels=100_000, tile=8))
    assert len(report.results) == n
    written = set()
    for r in report.results:
        assert r.status in ("ok", "failed")
        if r.status == "ok":
            assert_written_right(r.src, r.dst, tiny)
            written.add(r.dst.name)
        else:
            assert r.src.name in r.reason and not r.dst.exists(), r.reason
            assert "internal error" not in r.reason, r.reason
    assert outputs(out) == written and len(paths) == n
    assert report.exit_code == (1 if len(written) < n else 0)


# ---------------------------------------------------------------- broken models

@pytest.mark.parametrize("name, message", [("empty", "cannot"), ("truncated", "cannot"),
                                           ("wrong_input", "channels"), ("wrong_scale", "scale")])
def test_broken_models_are_setup_errors(broken_models: dict[str, Path], tmp_path: Path, name: str,
                                        message: str) -> None:
    put(tmp_path / "in" / "a.png", photo(8, 8))
    with pytest.raises(ModelError, match=message):
        upscale_batch([tmp_path / "in"], tmp_path / "out", model=broken_models[name], device="cpu")
    assert not (tmp_path / "out").exists() or outputs(tmp_path / "out") == set()


def test_wrong_scale_is_exit_2_in_the_cli(broken_models: dict[str, Path], tmp_path: Path) -> None:
    put(tmp_path / "in" / "a.png", photo(8, 8))
    r = cli("upscale", tmp_path / "in", "-o", tmp_path / "out", "-m", broken_models["wrong_scale"], "--device", "cpu")
    no_traceback(r.stdout, r.stderr)
    assert r.returncode == 2 and "scale" in r.stderr


def test_watcher_refuses_a_model_with_wrong_scale_before_watching(broken_models: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    model = load_model(broken_models["wrong_scale"], device="cpu", threads=1)
    with pytest.raises(ModelError, match="scale"):
        FolderWatcher(tmp_path / "in", tmp_path / "out", model)
    assert not (tmp_path / "out").exists()


def test_nan_output_fails_that_file_and_writes_nothing(broken_models: dict[str, Path], tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    black = photo(10, 10)
    black[3, 4] = 0  # one zero pixel: log(0) makes this model's output NaN
    put(inp / "black.png", black)
    put(inp / "fine.png", np.clip(photo(10, 10, seed=3), 5, 255).astype(np.uint8))
    report = upscale_batch([inp], out, model=broken_models["nan_on_black"], device="cpu")
    status = {r.src.name: r for r in report.results}
    assert status["black.png"].status == "failed" and "NaN" in status["black.png"].reason
    assert "black.png" in status["black.png"].reason
    assert status["fine.png"].status == "ok" and report.exit_code == 1
    assert outputs(out) == {"fine.png"}


# ---------------------------------------------------------------- output folder: names, symlinks, temps

def test_rerun_with_a_new_input_colliding_with_an_existing_output_is_not_skipped(tiny, tmp_path: Path) -> None:
    """Policy: b.png keeps b.png whatever else is there; b.bmp gets b_2.png; an existing output
    written from another input is a collision (failed, exit 1), never "skipped" as if it were its own."""
    inp, out = tmp_path / "in", tmp_path / "out"
    put(inp / "b.png", photo(8, 8, seed=1))
    assert upscale_batch([inp], out, model=tiny, options=UpscaleOptions(format="png")).exit_code == 0
    put(inp / "b.bmp", photo(8, 8, seed=2))
    again = upscale_batch([inp], out, model=tiny, options=UpscaleOptions(format="png"))
    status = {r.src.name: (r.status, r.dst.name) for r in again.results}
    assert status == {"b.bmp": ("ok", "b_2.png"), "b.png": ("skipped", "b.png")}
    assert_written_right(inp / "b.bmp", out / "b_2.png", tiny)
    # the other way round: OUT/c.png written from c.bmp, then c.png (which takes c.png) appears
    put(inp / "c.bmp", photo(8, 8, seed=3))
    upscale_batch([inp / "c.bmp"], out, model=tiny, options=UpscaleOptions(format="png"))
    put(inp / "c.png", photo(8, 8, seed=4))
    third = upscale_batch([inp], out, model=tiny, options=UpscaleOptions(format="png"))
    c = next(r for r in third.results if r.src.name == "c.png")
    assert c.status == "failed" and "name collision" in c.reason and "c.bmp" in c.reason and third.exit_code == 1
    assert_written_right(inp / "c.bmp", out / "c.png", tiny)  # never replaced silently


def test_symlink_swapped_into_out_during_a_batch_is_not_followed(tiny, tmp_path: Path) -> None:
    inp, out, outside = tmp_path / "in", tmp_path / "out", tmp_path / "outside"
    put(inp / "a.png", photo(8, 8, seed=1))
    put(inp / "sub" / "b.png", photo(8, 8, seed=2))
    outside.mkdir()

    class SwapDuringFirst:
        def start(self, total: int, files: int) -> None: ...

        def advance(self, n: int) -> None:  # first called while a.png (first in order) is being upscaled
            if not (out / "sub").is_symlink():  # planned already; now OUT/sub becomes a link to outside
                (out / "sub").symlink_to(outside, target_is_directory=True)

        def done(self, result: pipeline.FileResult) -> None: ...

    report = upscale_batch([inp], out, model=tiny, recursive=True, progress=SwapDuringFirst())
    status = {r.src.name: r for r in report.results}
    assert status["a.png"].status == "ok"
    assert status["b.png"].status == "failed" and "symlink" in status["b.png"].reason
    assert files_under(outside) == set() and report.exit_code == 1


def test_watch_recursive_never_writes_through_a_symlinked_folder_in_out(tiny, tmp_path: Path) -> None:
    inp, out, outside = tmp_path / "in", tmp_path / "out", tmp_path / "outside"
    (inp / "sub").mkdir(parents=True)
    out.mkdir()
    outside.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)
    results: list[pipeline.FileResult] = []
    w = FolderWatcher(inp, out, tiny, recursive=True, settle=0.2, poll=0.05, on_result=results.append)
    w.start()
    try:
        put(inp / "sub" / "x.png", photo(8, 8))
        put(inp / "y.png", photo(8, 8, seed=1))
        _wait(lambda: len(results) >= 2, 30)
    finally:
        w.stop()
        w.join(30)
    status = {r.src.name: r for r in results}
    assert status["y.png"].status == "ok" and status["x.png"].status == "failed"
    assert "symlink" in status["x.png"].reason and files_under(outside) == set()


def test_stale_temp_files_of_dead_runs_are_removed_and_nothing_else(tiny, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = [out / f"{TEMP_PREFIX}{pid}-0123abcd.part", out / "sub" / f"{TEMP_PREFIX}{pid}-deadbeef.part"]
    live = out / f"{TEMP_PREFIX}{os.getppid()}-0123abcd.part"  # a running process's: kept
    keep = [out / ".a.png.x1y2.tmp", out / "photo.part", out / f"{TEMP_PREFIX}x.part", live]
    for p in stale + keep:
        p.write_bytes(b"x")
    put(tmp_path / "in" / "a.png", photo(8, 8))
    upscale_batch([tmp_path / "in"], out, model=tiny)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert remove_stale_temps(out) == []


# ---------------------------------------------------------------- full and read-only output filesystems

def test_full_output_disk_names_the_file_and_a_rerun_after_freeing_space_finishes(tiny, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    srcs = [inp / f"n{i:02d}.png" for i in range(12)]
    for i, p in enumerate(srcs):
        put(p, np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8))  # ~70 KB out each
    with tmpfs(tmp_path / "out", "400k") as out:
        first = upscale_batch([inp], out, model=tiny)
        failed = [r for r in first.results if r.status == "failed"]
        assert failed and first.exit_code == 1
        for r in failed:
            assert r.src.name.replace(".png", "") in r.reason and "No space left" in r.reason and r.transient
        ok = {r.dst.name for r in first.results if r.status == "ok"}
        assert outputs(out) == ok
        for name in ok:
            assert_written_right(inp / name, out / name, tiny)
        remount(out, "size=8m")  # space freed
        second = upscale_batch([inp], out, model=tiny)
        assert second.exit_code == 0
        assert {r.src.name: r.status for r in second.results} == {p.name: "skipped" if p.name in ok else "ok"
                                                                  for p in srcs}
        assert outputs(out) == {p.name for p in srcs}
        for p in srcs:
            assert_written_right(p, out / p.name, tiny)


def test_read_only_output_folder_fails_each_file_with_the_reason(tiny, tmp_path: Path) -> None:
    put(tmp_path / "in" / "a.png", photo(8, 8))
    with tmpfs(tmp_path / "out", "1m", ro=True) as out:
        report = upscale_batch([tmp_path / "in"], out, model=tiny)
        r = report.results[0]
        assert r.status == "failed" and "Read-only file system" in r.reason and "a.png" in r.reason
        assert report.exit_code == 1 and files_under(out) == set()


def test_watcher_on_a_read_only_output_folder_is_a_setup_error(tiny, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    with tmpfs(tmp_path / "out", "1m", ro=True) as out:
        w = FolderWatcher(tmp_path / "in", out, tiny)
        with pytest.raises(UsageError, match="Read-only file system"):
            w.run()


# ---------------------------------------------------------------- memory: wide strips

def test_wide_images_run_in_strips_with_the_same_result_and_bounded_bands(tiny, monkeypatch) -> None:
    img = photo(40, 300, seed=7)
    whole = upscale_image(img, tiny, tile=0)
    monkeypatch.setattr(pipeline, "MIN_BAND_BYTES", 300 * 16 * 3 * 10)  # 10 LR rows of output
    bands = list(upscale_bands(img, tiny, tile=32, max_memory=2 * 300 * 16 * 3 * 10))
    assert len(bands) > 4 and max(b.nbytes for b in bands) <= 300 * 16 * 3 * 10
    np.testing.assert_array_equal(np.concatenate(bands), whole)


def test_strip_rule_bounds_bands_and_never_more_than_doubles_the_work() -> None:
    mib = 1 << 20
    row = 40000 * 16 * 3  # output bytes per LR row of a 40000-wide RGB x4 result
    # small context (pad 2): 112 MiB / 1.92 MB = 61 rows, less the context
    assert pipeline._strip_rows(1000, 40000, 3, 1, 4, 165, 2, 448 * mib) == 112 * mib // row - 4 == 57
    # SRResNet-like context (pad 40, tiles fitted to 115): a strip would be at least 80 + 80 rows, no gain
    assert pipeline._strip_rows(1000, 40000, 3, 1, 4, 115, 40, 448 * mib) == 1000
    # photo-shaped images never use strips; nor does --max-memory 0 or --tile 0
    assert pipeline._strip_rows(3000, 4000, 3, 1, 4, 256, 40, 448 * mib) == 3000
    assert pipeline._strip_rows(1000, 40000, 3, 1, 4, 165, 2, None) == 1000
    assert pipeline._strip_rows(1000, 40000, 3, 1, 4, 0, 2, 448 * mib) == 1000


# ---------------------------------------------------------------- watcher

def _wait(cond, timeout: float, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_watcher_keeps_going_past_bombs_and_over_limit_files(tiny, tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    results: list[pipeline.FileResult] = []
    w = FolderWatcher(inp, out, tiny, UpscaleOptions(max_pixels=1_000_000, format="png"), settle=0.2, poll=0.05,
                      on_result=results.append)
    w.start()
    try:
        write_all(inp, bad_files())
        good = write_all(inp, {k: v for k, v in list(good_files().items())[:5]})
        _wait(lambda: {p.name for p in good} <= {r.src.name for r in results if r.status == "ok"}, 60, "good files")
        _wait(lambda: len(results) >= len(good) + len(bad_files()), 60, "every file")
    finally:
        w.stop()
        w.join(30)
    assert outputs(out) == {p.stem + ".png" for p in good}
    assert sum(r.status == "failed" for r in results) == len(bad_files())


def test_in_deleted_and_recreated_is_watched_again(tiny, tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    results: list[pipeline.FileResult] = []
    w = FolderWatcher(inp, out, tiny, settle=0.2, poll=0.05, on_result=results.append)
    w.start()
    try:
        put(inp / "a.png", photo(8, 8))
        _wait(lambda: any(r.src.name == "a.png" for r in results), 30, "a.png")
        (inp / "a.png").unlink()
        inp.rmdir()
        time.sleep(1.5)
        inp.mkdir()
        time.sleep(1.5)  # the watcher notices IN again within about a second
        put(inp / "b.png", photo(8, 8, seed=1))
        _wait(lambda: any(r.src.name == "b.png" for r in results), 30, "b.png after IN came back")
    finally:
        w.stop()
        w.join(30)
    assert outputs(out) == {"a.png", "b.png"}


def test_journal_disk_full_is_retried_not_a_traceback_and_nothing_is_lost(tiny, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    with tmpfs(tmp_path / "out", "1m") as out:
        ballast = out / "ballast"
        with contextlib.suppress(OSError), open(ballast, "wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
        results: list[pipeline.FileResult] = []
        w = FolderWatcher(inp, out, tiny, settle=0.2, poll=0.05, max_backoff=0.3, on_result=results.append)
        w.start()
        try:
            srcs = [inp / f"f{i}.png" for i in range(4)]
            for i, p in enumerate(srcs):
                put(p, photo(8, 8, seed=i))
            _wait(lambda: sum(r.transient for r in results) >= 4, 30, "transient failures on the full disk")
            assert not any(r.status == "ok" for r in results)
            ballast.unlink()  # space freed
            _wait(lambda: {r.src.name for r in results if r.status == "ok"} == {p.name for p in srcs}, 60,
                  "every file after space was freed")
        finally:
            w.stop()
            w.join(30)
        assert outputs(out) == {p.name for p in srcs}
        for p in srcs:
            assert_written_right(p, out / p.name, tiny)
        journal = Journal(out / JOURNAL_NAME)
        assert {k: e.status for k, e in journal.entries.items()} == {p.name: "ok" for p in srcs}
        journal.close()


def test_changed_input_that_fails_leaves_no_stale_output(tiny, tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    put(inp / "a.png", photo(8, 8))
    for content in (None, b"\x89PNG\r\n\x1a\n now corrupt"):
        if content is not None:
            (inp / "a.png").write_bytes(content)  # changed while no watcher ran
        results: list[pipeline.FileResult] = []
        w = FolderWatcher(inp, out, tiny, settle=0.1, poll=0.05, on_result=results.append)
        w.start()
        try:
            _wait(lambda results=results: bool(results), 30, "a.png")
        finally:
            w.stop()
            w.join(30)
        assert results[0].status == ("ok" if content is None else "failed")
    assert outputs(out) == set()  # the old version's output is gone, not passed off as the new one's


def test_lock_is_taken_before_the_journal_is_compacted(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    j = Journal(path)
    for i in range(300):  # due for compaction: 300 lines for one source
        j.record(JournalEntry("a.png", i, i, "ab" * 32, "ok", "a.png"))
    before = (path.stat().st_ino, path.read_bytes())
    with pytest.raises(UsageError, match="another watcher"):
        Journal(path)
    assert (path.stat().st_ino, path.read_bytes()) == before  # the refused one touched nothing
    j.close()
    Journal(path).close()  # the next owner compacts
    assert len(path.read_bytes().splitlines()) == 1


def test_journal_torn_tail_is_skipped_and_the_next_record_kept(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    j = Journal(path)
    j.record(JournalEntry("a.png", 1, 1, "aa" * 32, "ok", "a.png"))
    j.close()
    with open(path, "ab") as fh:
        fh.write(b'{"k": "done", "src": "b.png", "si')  # killed mid-append
    j = Journal(path)
    j.record(JournalEntry("c.png", 3, 3, "cc" * 32, "ok", "c.png"))
    j.close()
    j = Journal(path)
    assert set(j.entries) == {"a.png", "c.png"}
    j.close()


# ---------------------------------------------------------------- kills and signals (real processes)

_WATCH_DRIVER = """
import logging, signal, sys
from srgan.runtime.pipeline import UpscaleOptions
from srgan.runtime.session import load_model
from srgan.runtime.watch import FolderWatcher
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
w = FolderWatcher(sys.argv[1], sys.argv[2], load_model(sys.argv[3], device="cpu", threads=1),
                  UpscaleOptions(format="png", max_pixels=1_000_000, tile=0), settle=0.15, poll=0.05,
                  max_backoff=0.5)
signal.signal(signal.SIGTERM, lambda *a: w.stop())
w.run()
print("stopped", w.counts, flush=True)
"""


def _start_watcher(inp: Path, out: Path, model: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _WATCH_DRIVER, str(inp), str(out), str(model)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _watch_stream_with_kills(tiny, tiny_path: Path, tmp_path: Path, *, goods: int, kills: int, seed: int,
                             out: Path) -> None:
    """The "must show" run: a stream of good and bad files, a full output disk freed later, the watcher
    killed (-9) at random moments and restarted; in the end every good input has exactly one right output."""
    rng = np.random.default_rng(seed)
    inp = tmp_path / "in"
    inp.mkdir()
    ballast = out / "ballast"
    with contextlib.suppress(OSError), open(ballast, "wb") as fh:  # the output disk starts full
        while True:
            fh.write(b"\0" * 65536)
    bad = bad_files()
    stream: list[tuple[str, bytes]] = [(f"g{i:03d}.png", encode(photo(12, 10, seed=100 + i), "PNG"))
                                       for i in range(goods)]
    stream += list(bad.items())
    order = rng.permutation(len(stream))
    stderr_all: list[str] = []
    proc = _start_watcher(inp, out, tiny_path)
    try:
        kill_at = sorted(rng.choice(np.arange(1, len(stream)), size=min(kills, len(stream) - 1), replace=False))
        for n, i in enumerate(order):
            name, data = stream[i]
            tmp = inp / f".{name}.part"
            tmp.write_bytes(data)
            tmp.rename(inp / name)
            time.sleep(float(rng.uniform(0.0, 0.25)))
            if n == len(stream) // 2 and ballast.exists():
                ballast.unlink()  # space freed half way
            if n in kill_at:
                proc.kill()
                stderr_all.append(proc.communicate()[1])
                proc = _start_watcher(inp, out, tiny_path)
        if ballast.exists():
            ballast.unlink()
        goods_names = {name for name, _ in stream if name.startswith("g")}

        def settled() -> bool:
            state = journal_state(out)
            return (goods_names <= finished(out) and proc.poll() is None
                    and all(state.get(name) == "failed" for name in bad))
        _wait(settled, 120, "every good file written")
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        stderr_all.append(stderr)
        assert proc.returncode == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    no_traceback(*stderr_all)
    assert outputs(out) == goods_names  # exactly one output per good input, nothing for bad ones
    for name in goods_names:
        assert_written_right(inp / name, out / name, tiny)
    journal = Journal(out / JOURNAL_NAME)
    final = {k: e.status for k, e in journal.entries.items()}
    journal.close()
    assert {k for k, v in final.items() if v == "ok"} == goods_names
    assert {k for k, v in final.items() if v == "failed"} == set(bad)


def test_watcher_stream_with_bad_files_full_disk_and_kill_9(tiny, tiny_path: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "out", "2m") as out:
        _watch_stream_with_kills(tiny, tiny_path, tmp_path, goods=8, kills=2, seed=3, out=out)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_watcher_stream_with_many_kills(tiny, tiny_path: Path, tmp_path: Path, seed: int) -> None:
    with tmpfs(tmp_path / "out", "3m") as out:
        _watch_stream_with_kills(tiny, tiny_path, tmp_path, goods=30, kills=8, seed=seed, out=out)


def test_two_watchers_racing_one_refuses(tiny_path: Path, tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    with open(out / JOURNAL_NAME, "w") as fh:  # due for compaction when opened
        for i in range(300):
            fh.write(f'{{"k": "done", "src": "old.png", "size": {i}, "mtime_ns": {i}, "sha256": "", '
                     f'"status": "failed"}}\n')
    args = ["watch", inp, "-o", out, "-m", tiny_path, "--device", "cpu", "--settle", "0.1"]
    procs = [subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        _wait(lambda: any(p.poll() is not None for p in procs), 60, "one watcher to give up")
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        put(inp / "a.png", photo(8, 8))
        _wait(lambda: (out / "a.png").exists(), 60, "a.png from the running watcher")
        winner.send_signal(signal.SIGTERM)
        w_out, w_err = winner.communicate(timeout=60)
        l_out, l_err = loser.communicate(timeout=10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    no_traceback(w_err, l_err)
    assert loser.returncode == 2 and "another watcher" in l_err
    assert winner.returncode == 0 and "1 ok" in w_err
    assert outputs(out) == {"a.png"}


def _batch_inputs(inp: Path, n: int) -> list[Path]:
    srcs = [inp / f"b{i:02d}.png" for i in range(n)]
    for i, p in enumerate(srcs):
        put(p, photo(60, 50, seed=200 + i))
    return srcs


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_batch_stopped_by_a_signal_prints_a_summary_and_leaves_no_partial_file(tiny, tiny_path: Path,
                                                                                tmp_path: Path, sig, code) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    srcs = _batch_inputs(inp, 300)  # enough that the batch cannot finish between the poll and the signal
    # as a foreground command gets it: a shell's background job (a CI runner's, say) inherits SIGINT ignored
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "upscale", str(inp), "-o", str(out), "-m",
                             str(tiny_path), "--device", "cpu", "--tile", "16"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait(lambda: out.is_dir() and len(finished(out)) >= 2, 60, "some outputs")
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    no_traceback(stdout, stderr)
    assert proc.returncode == code, stderr[-2000:]
    assert f"{signal.Signals(sig).name}: stopped early" in stdout
    done = outputs(out)
    assert 2 <= len(done) < len(srcs)
    for name in done:
        assert_written_right(inp / name, out / name, tiny)


def test_batch_killed_then_rerun_writes_every_file_once(tiny, tiny_path: Path, tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    srcs = _batch_inputs(inp, 300)  # a batch of 30 tiny files ends in ~0.4 s: before the kill
    rng = np.random.default_rng(5)
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "upscale", str(inp), "-o", str(out), "-m",
                                 str(tiny_path), "--device", "cpu", "--tile", "16"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            have = len(finished(out)) if out.is_dir() else 0
            def progressed(have: int = have, proc: subprocess.Popen = proc) -> bool:
                return proc.poll() is not None or (out.is_dir() and len(finished(out)) > have)

            _wait(progressed, 60, "progress")
            time.sleep(float(rng.uniform(0, 0.5)))
            proc.kill()
            proc.communicate()
        finally:
            if proc.poll() is None:
                proc.kill()
    r = cli("upscale", inp, "-o", out, "-m", tiny_path, "--device", "cpu", "--tile", "16")
    no_traceback(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr[-2000:]
    assert outputs(out) == {p.name for p in srcs}  # temporary files of the killed runs are gone too
    for p in srcs:
        assert_written_right(p, out / p.name, tiny)

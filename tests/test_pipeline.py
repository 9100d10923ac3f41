"""process_one / upscale_batch: image layouts, options, batch rules, bad files, metrics and grids."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import photo
from PIL import Image, ImageCms

from srgan.runtime.errors import ModelNotFoundError, ModelRunError, UsageError
from srgan.runtime.imageio import read_image, write_image
from srgan.runtime.pipeline import OUTPUTS_NAME, UpscaleOptions, plan_jobs, process_one, upscale_batch, upscale_image
from srgan.runtime.resize import imresize


def reference(img: np.ndarray, model) -> np.ndarray:
    """Whole-image float result of the model, clamped (H*s, W*s, 3)."""
    x = img.transpose(2, 0, 1)[None].astype(np.float32) / np.iinfo(img.dtype).max
    return np.clip(model(x)[0].transpose(1, 2, 0), 0, 1)


def near(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding at .5 boundaries: at most 1 level, and almost everywhere exact."""
    d = np.abs(a.astype(np.int64) - b.astype(np.int64))
    assert d.max() <= 1 and (d == 0).mean() > 0.999


def test_rgb_tiled_matches_whole(tiny) -> None:
    img = photo(37, 29)
    out = upscale_image(img, tiny, tile=10)
    assert out.dtype == np.uint8 and out.shape == (148, 116, 3)
    near(out, np.floor(reference(img, tiny) * 255 + 0.5))
    np.testing.assert_array_equal(out, upscale_image(img, tiny, tile=0))


def test_gray_stays_gray_and_is_the_mean_of_the_rgb_result(tiny) -> None:
    g = photo(20, 17, channels=1)
    out = upscale_image(g, tiny, tile=8)
    assert out.shape == (80, 68, 1)
    near(out[..., 0], np.floor(reference(np.repeat(g, 3, 2), tiny).mean(2) * 255 + 0.5))


@pytest.mark.parametrize("channels", [2, 4])
def test_alpha_bicubic_by_default_and_model_on_request(tiny, channels: int) -> None:
    img = photo(21, 26, channels=channels, seed=7)
    out = upscale_image(img, tiny, tile=9)
    near(out[..., -1], imresize(img[..., -1:], 4.0)[..., 0])
    by_model = upscale_image(img, tiny, tile=9, alpha="model")
    gray_alpha = np.repeat(img[..., -1:], 3, 2)
    near(by_model[..., -1], np.floor(reference(gray_alpha, tiny).mean(2) * 255 + 0.5))
    np.testing.assert_array_equal(out[..., :-1], by_model[..., :-1])


def test_16bit_stays_16bit(tiny, tmp_path: Path) -> None:
    img = photo(12, 14, 3, np.uint16)
    write_image(tmp_path / "a.png", img)
    r = process_one(tmp_path / "a.png", tmp_path / "out" / "a.png", tiny)
    assert r.status == "ok"
    out = read_image(tmp_path / "out" / "a.png").pixels
    assert out.dtype == np.uint16
    near(out, np.floor(reference(img, tiny) * 65535 + 0.5))


def test_skip_overwrite_and_never_the_input(tiny, tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    write_image(src, photo(8, 8))
    dst = tmp_path / "o" / "a.png"
    assert process_one(src, dst, tiny).status == "ok"
    stamp = dst.stat().st_mtime_ns
    r = process_one(src, dst, tiny)
    assert r.status == "skipped" and "--overwrite" in r.reason and dst.stat().st_mtime_ns == stamp
    assert process_one(src, dst, tiny, UpscaleOptions(overwrite=True)).status == "ok"
    before = src.read_bytes()
    r = process_one(src, src, tiny, UpscaleOptions(overwrite=True))
    assert r.status == "failed" and "never overwritten" in r.reason and src.read_bytes() == before


def test_outscale_format_quality_orientation_icc(tiny, tmp_path: Path) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape 20x10, shown portrait 10x20
    src = tmp_path / "p.jpg"
    Image.fromarray(photo(10, 20)).save(src, exif=exif, icc_profile=icc, quality=95)
    r = process_one(src, tmp_path / "p.png", tiny)
    assert r.in_size == (10, 20) and r.out_size == (40, 80)
    r = process_one(src, tmp_path / "p35.webp", tiny, UpscaleOptions(outscale=3.5, quality=80))
    assert r.out_size == (35, 70)
    with Image.open(tmp_path / "p35.webp") as im:
        assert im.size == (35, 70) and im.info.get("icc_profile") == icc and im.getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize("content, reason", [(b"", "not an image"), (b"GIF89a junk", "not an image"),
                                             ("truncated", "truncated")])
def test_bad_files_fail_with_a_reason_and_leave_nothing(tiny, tmp_path: Path, content, reason: str) -> None:
    src = tmp_path / "bad.png"
    if content == "truncated":
        write_image(src, photo(64, 64))
        content = src.read_bytes()[:300]
    src.write_bytes(content)
    out = tmp_path / "out"
    r = process_one(src, out / "bad.png", tiny)
    assert r.status == "failed" and reason in r.reason and "bad.png" in r.reason
    assert not out.exists() or list(out.iterdir()) == []


def test_max_pixels(tiny, tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", photo(10, 10))
    r = process_one(tmp_path / "a.png", tmp_path / "o.png", tiny, UpscaleOptions(max_pixels=99))
    assert r.status == "failed" and "--max-pixels" in r.reason and not (tmp_path / "o.png").exists()


def tree(root: Path) -> list[str]:
    """Files under ``root`` but the batch's own record of which input each output came from."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != OUTPUTS_NAME)


def test_plan_mirrors_dedupes_and_stays_inside(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    for rel in ("a.png", "a.jpg", "sub/b.png", "sub/deep/c.bmp", "notes.txt", ".hidden.png"):
        (inp / rel).parent.mkdir(parents=True, exist_ok=True)
        (inp / rel).write_bytes(b"x")
    out = tmp_path / "out"
    flat = plan_jobs([inp], out, fmt="png")  # a.png keeps its name whatever else is there; a.jpg gets _2
    assert [(j.src.name, str(j.dst.relative_to(out))) for j in flat] == [("a.jpg", "a_2.png"), ("a.png", "a.png")]
    deep = plan_jobs([inp], out, recursive=True)
    assert [str(j.dst.relative_to(out)) for j in deep] == ["a.jpg", "a.png", "sub/b.png", "sub/deep/c.bmp"]
    assert [str(j.dst.relative_to(out)) for j in plan_jobs([inp], out, recursive=True, glob="b.*")] == ["sub/b.png"]
    two = plan_jobs([inp / "sub", inp / "a.png"], out, recursive=True, grid=True)
    assert [str(j.dst.relative_to(out)) for j in two] == ["sub/b.png", "sub/deep/c.bmp", "a.png"]
    assert two[0].grid == out / "grids" / "sub" / "b.png" and two[0].rel == Path("b.png")
    with pytest.raises(UsageError, match="does not exist"):
        plan_jobs([tmp_path / "nope"], out)


def test_plan_refuses_inputs_and_symlink_escapes(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    (inp / "a.png").write_bytes(b"x")
    (inp / "sub" / "b.png").write_bytes(b"x")
    same = plan_jobs([inp], inp)
    assert all("never overwritten" in j.error for j in same)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    jobs = {j.src.name: j for j in plan_jobs([inp], out, recursive=True)}
    assert "outside the output folder" in jobs["b.png"].error and jobs["a.png"].error == ""
    nested = plan_jobs([inp], inp / "up", recursive=True)  # OUT inside the input: outputs never re-read
    (inp / "up").mkdir()
    (inp / "up" / "a.png").write_bytes(b"x")
    assert len(plan_jobs([inp], inp / "up", recursive=True)) == len(nested) == 2


def test_batch_goes_on_past_bad_files(tiny_path: Path, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    write_image(inp / "good.png", photo(9, 11))
    write_image(inp / "sub" / "gray.png", photo(7, 5, 1))
    (inp / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    write_image(inp / "big.png", photo(40, 40))
    out = tmp_path / "out"
    report = upscale_batch([inp], out, model=tiny_path, device="cpu", recursive=True,
                           options=UpscaleOptions(max_pixels=1000, tile=4))
    status = {r.src.name: r.status for r in report.results}
    assert status == {"good.png": "ok", "gray.png": "ok", "corrupt.jpg": "failed", "big.png": "failed"}
    assert report.exit_code == 1 and report.counts == {"ok": 2, "skipped": 0, "failed": 2}
    assert tree(out) == ["good.png", "sub/gray.png"]
    again = upscale_batch([inp], out, model=tiny_path, device="cpu", recursive=True)
    assert {r.src.name: r.status for r in again.results}["good.png"] == "skipped"


def test_batch_setup_errors(tiny_path: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images"):
        upscale_batch([tmp_path / "empty"], tmp_path / "o", model=tiny_path)
    write_image(tmp_path / "a.png", photo(4, 4))
    with pytest.raises(ModelNotFoundError, match="missing.onnx"):
        upscale_batch([tmp_path / "a.png"], tmp_path / "o", model=tmp_path / "missing.onnx")
    with pytest.raises(UsageError, match="--hr"):
        upscale_batch([tmp_path / "a.png"], tmp_path / "o", model=tiny_path, metrics_csv=tmp_path / "m.csv")


def test_metrics_and_grids_against_hr(tiny_path: Path, tiny, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SRGAN_MODELS_DIR", str(tmp_path / "no-models"))  # no LPIPS model: the text column
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir()
    lr_dir.mkdir()
    for i, (h, w, c) in enumerate([(48, 64, 3), (52, 40, 1), (44, 44, 3)]):
        hr = photo(h, w, c, seed=i)
        write_image(hr_dir / f"im{i}.png", hr)
        write_image(lr_dir / f"im{i}.png", imresize(hr, 0.25))
    (hr_dir / "im2.png").unlink()  # one image without a reference
    out = tmp_path / "out"
    report = upscale_batch([lr_dir], out, model=tiny_path, device="cpu", hr_dir=hr_dir, grid=True,
                           metrics_csv=tmp_path / "m.csv")
    assert report.exit_code == 0 and report.metrics_csv == tmp_path / "m.csv"
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert [r["file"] for r in rows] == ["im0.png", "im1.png", "im2.png", "mean"]
    assert rows[2]["psnr_y"] == "" and "no HR" in rows[2]["note"]
    assert rows[1]["psnr_rgb"].startswith("n/a") is False  # gray vs gray: both one channel
    assert all(r["lpips"] == "unavailable: run cli.py export-lpips" for r in rows[:2] + rows[3:])
    mean_psnr = (float(rows[0]["psnr_y"]) + float(rows[1]["psnr_y"])) / 2
    assert float(rows[3]["psnr_y"]) == pytest.approx(mean_psnr, abs=1e-5)
    assert "2 of 3" in rows[3]["note"]
    # the CSV's numbers are the metrics module's numbers on the written files
    from srgan.runtime.metrics import psnr
    sr = read_image(out / "im0.png").pixels
    expected = psnr(sr, read_image(hr_dir / "im0.png").pixels, border=4)
    assert float(rows[0]["psnr_y"]) == pytest.approx(expected, abs=1e-5)
    grid = read_image(out / "grids" / "im0.png").pixels
    assert grid.shape[1] > 4 * 64 * 4 - 1 and grid.shape[2] == 3  # four panels side by side
    assert tree(out) == ["grids/im0.png", "grids/im1.png", "grids/im2.png", "im0.png", "im1.png", "im2.png"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_process_one_reports_progress_in_lr_pixels(tiny, tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", photo(30, 20))
    seen: list[int] = []
    process_one(tmp_path / "a.png", tmp_path / "b.png", tiny, UpscaleOptions(tile=8), progress=seen.append)
    assert sum(seen) == 600 and len(seen) > 1


def test_no_temp_files_survive_an_interrupted_write(tiny, tmp_path: Path, monkeypatch) -> None:
    import srgan.runtime.imageio as io_mod

    write_image(tmp_path / "a.png", photo(16, 16))

    def interrupted(fh, *args, **kw):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(io_mod, "_write_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        process_one(tmp_path / "a.png", tmp_path / "out" / "a.png", tiny)
    assert os.listdir(tmp_path / "out") == []


def test_metrics_csv_has_lpips_when_the_lpips_model_is_shipped(tiny_path: Path, tmp_path: Path, monkeypatch) -> None:
    from srgan.runtime.lpips import LpipsOnnx
    from srgan.runtime.registry import models_dir

    shipped = models_dir() / "lpips_alex.onnx"
    if not shipped.is_file():
        pytest.skip("models/lpips_alex.onnx not present")
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir()
    lr_dir.mkdir()
    hr = photo(64, 64, 3, seed=3)
    write_image(hr_dir / "a.png", hr)
    write_image(lr_dir / "a.png", imresize(hr, 0.25))
    out = tmp_path / "out"
    upscale_batch([lr_dir], out, model=tiny_path, device="cpu", hr_dir=hr_dir)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    expected = LpipsOnnx(shipped).distance(read_image(out / "a.png").pixels, hr)
    assert float(rows[0]["lpips"]) == pytest.approx(expected, abs=1e-6)
    assert float(rows[0]["bicubic_lpips"]) >= 0 and float(rows[1]["lpips"]) == pytest.approx(expected, abs=1e-6)


class Counting:
    """An SR model wrapper that records each call's input shape and can fail on call ``fail_at``."""

    def __init__(self, model, fail_at: int | None = None) -> None:
        self.model, self.fail_at, self.shapes = model, fail_at, []
        for k in ("scale", "receptive_radius", "batch_pixels", "bytes_per_pixel", "max_batch", "path"):
            setattr(self, k, getattr(model, k))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        if len(self.shapes) == self.fail_at:
            raise ModelRunError("out of memory (simulated)")
        return self.model(x)


def test_max_memory_shrinks_the_calls_not_the_result(tiny, caplog) -> None:
    img = photo(90, 70, channels=4)
    free = Counting(tiny)
    capped = Counting(tiny)
    budget = 16 << 20  # 16 MiB at the tiny model's 16 KiB/pixel estimate: contexts of at most 32 x 32 pixels
    with caplog.at_level("INFO", logger="srgan.runtime.pipeline"):
        out = upscale_image(img, capped, tile=64, alpha="model", max_memory=budget)
    np.testing.assert_array_equal(out, upscale_image(img, free, tile=64, alpha="model", max_memory=None))
    assert max(n * h * w for n, _, h, w in capped.shapes) * tiny.bytes_per_pixel <= budget
    assert max(n * h * w for n, _, h, w in free.shapes) * tiny.bytes_per_pixel > budget
    assert f"tile 64 -> {32 - 2 * tiny.receptive_radius}" in caplog.text


@pytest.mark.parametrize("name, channels, dtype", [("a.png", 3, np.uint8), ("a.png", 4, np.uint16),
                                                   ("a.jpg", 3, np.uint8), ("a.jpg", 1, np.uint8),
                                                   ("a.webp", 4, np.uint8)])
def test_streamed_output_equals_the_in_memory_result(tiny, tmp_path: Path, name: str, channels: int,
                                                     dtype: type) -> None:
    img = photo(70, 45, channels, dtype, seed=3)
    src = tmp_path / ("in.png" if name.endswith(".png") or channels in (2, 4) else "in.tif")
    write_image(src, img)
    options = UpscaleOptions(tile=16, max_memory=None)
    streamed = process_one(src, tmp_path / "s" / name, tiny, options)
    in_memory = process_one(src, tmp_path / "m" / name, tiny, options, compare=True)  # the full-buffer path
    assert streamed.status == in_memory.status == "ok" and streamed.out_size == (180, 280)
    a, b = read_image(streamed.dst).pixels, read_image(in_memory.dst).pixels
    assert a.shape == (280, 180, channels)
    if name.endswith(".jpg"):  # different JPEG streams (restart markers), same image up to the codec
        assert np.abs(a.astype(int) - b).mean() < 0.5
    else:
        np.testing.assert_array_equal(a, b)
        if name.endswith(".png"):  # lossless: exactly the model's result
            np.testing.assert_array_equal(a, upscale_image(img, tiny, tile=16))


@pytest.mark.parametrize("name", ["a.png", "a.jpg"])
def test_inference_failing_half_way_leaves_no_file(tiny, tmp_path: Path, name: str) -> None:
    write_image(tmp_path / "in.png", photo(64, 64))
    out = tmp_path / "out"
    r = process_one(tmp_path / "in.png", out / name, Counting(tiny, fail_at=3), UpscaleOptions(tile=16))
    assert r.status == "failed" and "simulated" in r.reason
    assert os.listdir(out) == []


# ---------------------------------------------------------------- write-behind (encode on a second thread)

def test_batch_writes_behind_with_the_same_bytes_as_one_file_at_a_time(tiny, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    names = []
    for i, (h, w, suffix) in enumerate([(23, 31, "png"), (17, 12, "jpg"), (30, 9, "png"), (11, 26, "jpg")]):
        write_image(inp / f"f{i}.{suffix}", photo(h, w, seed=i))
        names.append(f"f{i}.{suffix}")
    report = upscale_batch([inp], tmp_path / "batch", model=tiny)
    assert [r.src.name for r in report.results] == names and report.exit_code == 0
    for name in names:
        one = process_one(inp / name, tmp_path / "one" / name, tiny)
        assert one.status == "ok"
        assert (tmp_path / "batch" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_batch_write_failure_is_that_files_result_and_the_rest_go_on(tiny, tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for i in range(3):
        write_image(inp / f"f{i}.png", photo(9, 13, seed=i))
    (out / "f1.png").mkdir(parents=True)  # a folder where the output should go: the final rename fails
    (out / "f1.png" / "keep").write_bytes(b"x")
    report = upscale_batch([inp], out, model=tiny, options=UpscaleOptions(overwrite=True))
    assert [(r.src.name, r.status) for r in report.results] == [("f0.png", "ok"), ("f1.png", "failed"),
                                                                 ("f2.png", "ok")]
    assert "f1.png" in report.results[1].reason and (out / "f1.png" / "keep").read_bytes() == b"x"
    assert sorted(p.name for p in out.iterdir()) == [OUTPUTS_NAME, "f0.png", "f1.png", "f2.png"]  # no temp left


def _stream(dst: Path, bands) -> Any:
    from srgan.runtime.pipeline import _Stream

    return _Stream(dst, dst, (5, 4), 1, 3, np.dtype(np.uint8), bands, {"root": dst.parent}, 0.0)


def test_write_behind_writer_that_fails_first_drains_and_returns(tmp_path: Path) -> None:
    from srgan.runtime.pipeline import _WriteBehind

    def bands():
        for _ in range(4):
            yield np.zeros((1, 5, 3), np.uint8)

    behind = _WriteBehind()
    try:  # unknown suffix: the writer fails before reading a band, the computing side must not block
        result = behind.submit(_stream(tmp_path / "x.unknown", bands())).result(timeout=60)
    finally:
        behind.close()
    assert result.status == "failed" and "x.unknown" in result.reason and list(tmp_path.iterdir()) == []


def test_write_behind_interrupt_part_way_leaves_nothing(tmp_path: Path) -> None:
    from srgan.runtime.pipeline import _WriteBehind

    def bands():
        yield np.zeros((2, 5, 3), np.uint8)
        raise KeyboardInterrupt

    behind = _WriteBehind()
    with pytest.raises(KeyboardInterrupt):
        behind.submit(_stream(tmp_path / "x.png", bands()))
    behind.close()
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file


def test_write_behind_close_cancels_a_file_whose_end_marker_never_came(tmp_path: Path) -> None:
    """A signal can stop the computing thread anywhere, even before it hands over the end marker: closing
    the writer must then cancel that file (no output, no temp), not wait for it forever."""
    import queue
    import threading

    from srgan.runtime.pipeline import _WriteBehind

    behind = _WriteBehind()
    slot: queue.Queue = queue.Queue(maxsize=1)
    slot.put(np.zeros((2, 5, 3), np.uint8))  # one of the four rows' bands, then nothing
    done = behind._pool.submit(behind._write, _stream(tmp_path / "x.png", iter(())), slot, threading.Event())
    closer = threading.Thread(target=behind.close)
    closer.start()
    closer.join(60)
    assert not closer.is_alive()
    result = done.result(timeout=1)
    assert result.status == "failed" and "stopped" in result.reason and list(tmp_path.iterdir()) == []

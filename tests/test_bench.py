"""cli.py bench: FLOP counting, fraction-of-peak arithmetic, latency and quality end to end on tiny data."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ROOT, photo
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tiny_models import build_tiny_sr
from typer.testing import CliRunner

from srgan import cli
from srgan.runtime import metrics
from srgan.runtime.bench import (
    achieved,
    bench_latency,
    bench_quality,
    count_macs,
    load_dataset,
    matmul_gflops,
    read_quality_rows,
    write_latency,
    write_quality,
)
from srgan.runtime.grids import LPIPS_UNAVAILABLE, bicubic_baseline
from srgan.runtime.imageio import write_image
from srgan.runtime.peers import _rgb_only
from srgan.runtime.pipeline import upscale_image
from srgan.runtime.resize import imresize

runner = CliRunner()

# tiny_models: conv3x3 3->8, conv3x3 8->48, conv1x1 3->48, all at LR resolution
TINY_MACS = 8 * 3 * 9 + 48 * 8 * 9 + 48 * 3


def test_fraction_of_peak_on_known_numbers() -> None:
    gflops, frac = achieved(1e6, 1000, 0.5, 40.0)  # 2 * 1e9 FLOP in 0.5 s
    assert gflops == pytest.approx(4.0) and frac == pytest.approx(0.1)
    # DESIGN.md: 2.2 M MACs per LR pixel is 0.275 TFLOP per x4 output megapixel (62,500 LR pixels)
    assert achieved(2.2e6, 1e6 / 16, 1.0, 550.0) == pytest.approx((275.0, 0.5))
    with pytest.raises(ValueError):
        achieved(1e6, 1000, 0.0, 40.0)


def test_count_macs_of_the_tiny_model(tiny_path: Path) -> None:
    macs = count_macs(tiny_path)
    assert macs.per_lr_pixel == pytest.approx(TINY_MACS) and macs.by_op == {"Conv": pytest.approx(TINY_MACS)}


def test_count_macs_of_conv_transpose_matmul_and_gemm(tmp_path: Path) -> None:
    """(1,3,4,6) -> ConvTranspose k2 s2 -> (1,2,8,12) -> MatMul (12,5) -> (1,2,8,5) -> Flatten (1,80) -> Gemm (80,7)."""
    inits = [numpy_helper.from_array(np.ones((3, 2, 2, 2), np.float32), "wt"),
             numpy_helper.from_array(np.ones((12, 5), np.float32), "m"),
             numpy_helper.from_array(np.ones((7, 80), np.float32), "g")]
    nodes = [helper.make_node("ConvTranspose", ["x", "wt"], ["a"], strides=[2, 2]),
             helper.make_node("MatMul", ["a", "m"], ["b"]),
             helper.make_node("Flatten", ["b"], ["c"]),
             helper.make_node("Gemm", ["c", "g"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "ops.onnx"))
    macs = count_macs(tmp_path / "ops.onnx", probe_hw=(4, 6))
    lr = 4 * 6
    expected = {"ConvTranspose": 3 * lr * 2 * 2 * 2 / lr, "MatMul": 2 * 8 * 5 * 12 / lr, "Gemm": 7 * 80 / lr}
    assert macs.by_op == pytest.approx(expected)
    assert macs.per_lr_pixel == pytest.approx(sum(expected.values()))


def test_matmul_peak_is_measured() -> None:
    assert 0.1 < matmul_gflops(1, n=256, runs=3) < 1e5


def test_latency_end_to_end(tiny_path: Path, tmp_path: Path) -> None:
    report = bench_latency(tiny_path, tiles=(0, 8), threads=(1,), providers=["CPUExecutionProvider"],
                           lr_size=(24, 32), runs=2, matmul_n=256,
                           engines=[("onnxruntime", "fp32"), ("openvino", "fp32")])
    # per engine: smallest tile first, whole image last
    assert [(r.provider, r.tile, r.tiles) for r in report.rows] == [
        ("onnxruntime fp32", 8, 12), ("onnxruntime fp32", 0, 1), ("openvino fp32", 8, 12), ("openvino fp32", 0, 1)]
    assert report.macs.per_lr_pixel == pytest.approx(TINY_MACS)
    for r in report.rows:
        assert r.ms_per_tile * r.tiles == pytest.approx(r.ms_per_image)
        assert r.output_mp_per_s == pytest.approx(96 * 128 / (r.ms_per_image / 1000) / 1e6)
        assert r.gflops == pytest.approx(2 * TINY_MACS * 24 * 32 / (r.ms_per_image / 1000) / 1e9)
        assert r.fraction_of_peak == pytest.approx(r.gflops / r.peak_gflops)
        assert r.peak_rss_mib > 10
    written = write_latency(report, tmp_path / "out")
    assert sorted(p.name for p in written) == ["latency.csv", "latency.md", "latency.png"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "latency.csv")))
    assert [r["tile"] for r in rows] == ["8", "0", "8", "0"] and float(rows[0]["macs_per_lr_pixel"]) == TINY_MACS
    md = (tmp_path / "out" / "latency.md").read_text()
    assert "| onnxruntime fp32 | 1 | 8 | 12 |" in md and "| openvino fp32 | 1 | whole | 1 |" in md and "- cpu:" in md
    with Image.open(tmp_path / "out" / "latency.png") as im:
        assert im.format == "PNG" and im.width > 300


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """HR/ with two RGB images (one not a multiple of 4) and a gray one; official LR for one of them."""
    root = tmp_path / "tinyset"
    (root / "HR").mkdir(parents=True)
    (root / "LR_bicubic_x4").mkdir()
    write_image(root / "HR" / "a.png", photo(48, 40, seed=1))
    write_image(root / "HR" / "b.png", photo(50, 47, seed=2))
    write_image(root / "HR" / "g.png", photo(44, 44, channels=1, seed=3))
    lr = photo(12, 10, seed=4)  # an "official" LR that is not imresize(HR): it must be used as is
    write_image(root / "LR_bicubic_x4" / "a.png", lr)
    return root


def test_load_dataset_pairs_official_lr_and_makes_the_rest(dataset: Path) -> None:
    samples = {s.name: s for s in load_dataset(dataset)}
    assert sorted(samples) == ["a.png", "b.png", "g.png"]
    np.testing.assert_array_equal(samples["a.png"].lr, photo(12, 10, seed=4))
    b = samples["b.png"]
    assert b.hr.shape == (48, 44, 3)  # cropped top-left to a multiple of 4
    np.testing.assert_array_equal(b.lr, imresize(photo(50, 47, seed=2)[:48, :44], 0.25))
    assert samples["g.png"].lr.shape == (11, 11, 1)


def test_quality_end_to_end(tiny, dataset: Path, tmp_path: Path) -> None:
    samples = load_dataset(dataset)
    methods = {"tiny": lambda lr: upscale_image(lr, tiny, tile=0), "bicubic": lambda lr: bicubic_baseline(lr, 4)}
    report = bench_quality([samples], methods)
    assert [(r.method, r.image) for r in report.rows] == [(m, n) for n in ("a.png", "b.png", "g.png") for m in methods]
    for r in report.rows:
        s = next(s for s in samples if s.name == r.image)
        sr = methods[r.method](s.lr)
        assert r.psnr_y == pytest.approx(metrics.psnr(sr, s.hr, border=4))
        assert r.ssim_y == pytest.approx(metrics.ssim(sr, s.hr, border=4))
        assert r.lpips == LPIPS_UNAVAILABLE and r.output_pixels == s.hr.shape[0] * s.hr.shape[1]
    gray = next(r for r in report.rows if r.image == "g.png")
    assert gray.psnr_rgb == pytest.approx(gray.psnr_y)  # a gray reference: compared on its gray values
    summary = {(s.dataset, s.method): s for s in report.summary()}
    assert summary[("tinyset", "bicubic")].psnr_y == pytest.approx(
        np.mean([r.psnr_y for r in report.rows if r.method == "bicubic"]))

    written = write_quality(report, tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == ["per_image_tinyset.png", "quality.md", "quality_per_image.csv", "quality_summary.csv",
                     "quality_vs_speed.png"]
    back = read_quality_rows(tmp_path / "out" / "quality_per_image.csv")
    assert [(r.method, r.image, r.lpips) for r in back] == [(r.method, r.image, r.lpips) for r in report.rows]
    assert [r.psnr_y for r in back] == pytest.approx([r.psnr_y for r in report.rows], abs=1e-6)
    rows = list(csv.DictReader(open(tmp_path / "out" / "quality_per_image.csv")))
    assert len(rows) == 6 and rows[0]["method"] == "tiny" and float(rows[0]["psnr_y"]) == pytest.approx(
        report.rows[0].psnr_y, abs=1e-6)
    md = (tmp_path / "out" / "quality.md").read_text().splitlines()
    assert md[0] == "| method | tinyset PSNR-Y | tinyset SSIM-Y | tinyset LPIPS | tinyset colour | output MP/s |"
    assert [r.color for r in back] == pytest.approx([r.color for r in report.rows], abs=1e-6)
    assert report.rows[0].color == pytest.approx(metrics.color_shift(methods["tiny"](samples[0].lr), samples[0].hr))
    bicubic_mean = summary[("tinyset", "bicubic")].psnr_y
    assert md[2].startswith("| tiny | ") and md[3].startswith(f"| bicubic | {bicubic_mean:.2f} | ")
    for png in ("quality_vs_speed.png", "per_image_tinyset.png"):
        with Image.open(tmp_path / "out" / png) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200


def test_quality_rejects_a_method_with_the_wrong_size(dataset: Path) -> None:
    with pytest.raises(ValueError, match="expected"):
        bench_quality([load_dataset(dataset)], {"x2": lambda lr: imresize(lr, 2.0)})


def test_gray_runs_as_rgb_and_is_averaged_back() -> None:
    seen = []

    def rgb_only(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape)
        out = np.repeat(np.repeat(x, 4, 0), 4, 1).astype(np.int32)
        out[..., 0] += 1  # channel means of (v+1, v, v) are v + 1/3: rounds back to v
        return np.clip(out, 0, 255).astype(np.uint8)

    g = photo(5, 6, channels=1)
    out = _rgb_only(rgb_only)(g)
    assert seen == [(5, 6, 3)] and out.shape == (20, 24, 1)
    np.testing.assert_array_equal(out, np.repeat(np.repeat(g, 4, 0), 4, 1))


def test_cli_bench_quality_with_a_peer_folder(model_dir: Path, dataset: Path, tmp_path: Path) -> None:
    """`--peers-dir` with the tiny 0-255 model standing in for ESRGAN slim: the runtime honours its range."""
    peers = tmp_path / "peers"
    peers.mkdir()
    build_tiny_sr(peers / "upscalerjs-esrgan-slim-x4.onnx", input_range="0-255")
    out = tmp_path / "out"
    base = ["bench", "quality", str(dataset), "-o", str(out), "-m", str(model_dir / "tiny_x4.onnx"), "--device", "cpu",
            "--peers-dir", str(peers)]
    r = runner.invoke(cli.app, [*base, "--peer", "esrgan-slim"])
    assert r.exit_code == 0, r.output
    assert "| tiny_x4 |" in r.stdout and "| esrgan-slim |" in r.stdout
    rows = list(csv.DictReader(open(out / "quality_per_image.csv")))
    by = {(row["method"], row["image"]): float(row["psnr_y"]) for row in rows}
    assert by[("esrgan-slim", "a.png")] == pytest.approx(by[("tiny_x4", "a.png")], abs=0.01)  # same net, same result

    r = runner.invoke(cli.app, [*base, "--peer", "esrgan-slim", "--color-fix", "-o", str(tmp_path / "fix")])
    assert r.exit_code == 0, r.output
    summary = {row["method"]: row for row in csv.DictReader(open(tmp_path / "fix" / "quality_summary.csv"))}
    assert list(summary) == ["tiny_x4", "tiny_x4+fix", "bicubic", "esrgan-slim", "esrgan-slim+fix"]
    # the model's fix runs tiled inside the tiler, the peer's on its whole uint8 output: the same net, the same fix
    assert float(summary["esrgan-slim+fix"]["psnr_y"]) == pytest.approx(float(summary["tiny_x4+fix"]["psnr_y"]),
                                                                        abs=0.02)
    assert abs(float(summary["tiny_x4+fix"]["color"])) < abs(float(summary["tiny_x4"]["color"]))

    r = runner.invoke(cli.app, [*base, "--peer", "nope"])
    assert r.exit_code == 2 and "'nope' is not one of" in r.output
    r = runner.invoke(cli.app, [*base, "--peer", "esrgan-thick"])
    assert r.exit_code == 2 and "upscalerjs-esrgan-thick-x4.onnx not found" in r.output


def test_cli_bench_quality_several_models_take_turns(model_dir: Path, dataset: Path, tmp_path: Path) -> None:
    """`-m` repeats: every model is scored, and the methods take turns image by image (a load change falls on all)."""
    twin = tmp_path / "twin_x4.onnx"
    shutil.copyfile(model_dir / "tiny_x4.onnx", twin)
    out = tmp_path / "out"
    base = ["bench", "quality", str(dataset), "-o", str(out), "--device", "cpu"]
    r = runner.invoke(cli.app, [*base, "-m", str(model_dir / "tiny_x4.onnx"), "-m", str(twin)])
    assert r.exit_code == 0, r.output
    assert "| tiny_x4 |" in r.stdout and "| twin_x4 |" in r.stdout and "| bicubic |" in r.stdout
    rows = list(csv.DictReader(open(out / "quality_per_image.csv")))
    images = sorted({row["image"] for row in rows})
    assert len(images) >= 2 and len(rows) == 3 * len(images)
    assert [row["method"] for row in rows[:6]] == ["tiny_x4", "twin_x4", "bicubic"] * 2  # turns, not blocks
    assert len({row["image"] for row in rows[:3]}) == 1
    by = {(row["method"], row["image"]): float(row["psnr_y"]) for row in rows}
    assert all(by[("tiny_x4", i)] == by[("twin_x4", i)] for i in images)  # the same net gives the same scores

    r = runner.invoke(cli.app, [*base, "-m", str(twin), "--no-model"])
    assert r.exit_code == 2 and "exclude each other" in r.output
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(twin, other / "twin_x4.onnx")
    r = runner.invoke(cli.app, [*base, "-m", str(twin), "-m", str(other / "twin_x4.onnx")])
    assert r.exit_code == 2 and "two models are named twin_x4" in r.output


def test_cli_bench_latency(tiny_path: Path, tmp_path: Path) -> None:
    r = runner.invoke(cli.app, ["bench", "latency", "-m", str(tiny_path), "--tile", "16", "--tile", "0",
                                "--threads", "1", "--size", "32", "--runs", "1", "--device", "cpu",
                                "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "| onnxruntime fp32 | 1 | 16 | 4 |" in r.stdout and (tmp_path / "latency.png").is_file()
    assert "deprecated" not in r.output


def test_bench_runs_without_torch(tiny_path: Path, dataset: Path, tmp_path: Path,
                                  torchless_env: dict[str, str]) -> None:
    """The base install has no torch: both bench commands must not need it."""
    env = torchless_env
    cli_py = str(ROOT / "cli.py")
    for args in (["bench", "quality", str(dataset), "-m", str(tiny_path), "-o", str(tmp_path / "q")],
                 ["bench", "latency", "-m", str(tiny_path), "--size", "16", "--tile", "8", "--threads", "1",
                  "--runs", "1", "-o", str(tmp_path / "l")]):
        r = subprocess.run([sys.executable, cli_py, *args, "--device", "cpu"], env=env, capture_output=True,
                           text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "q" / "quality.md").is_file() and (tmp_path / "l" / "latency.md").is_file()

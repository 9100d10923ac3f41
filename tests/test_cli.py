"""cli.py upscale through typer's CliRunner and real subprocesses (one where torch cannot be imported)."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, photo
from typer.testing import CliRunner

from srgan import cli
from srgan.runtime.formats import FORMATS
from srgan.runtime.imageio import read_image, write_image
from srgan.runtime.registry import DEFAULT_MODEL, MODELS
from srgan.runtime.resize import imresize

runner = CliRunner()
EXAMPLES = ROOT / "examples"


def run(*args: str | Path, env: dict[str, str] | None = None):
    return runner.invoke(cli.app, [str(a) for a in args], env=env)


def test_version_and_help() -> None:
    r = run("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"srgan {cli.__version__}"
    r = run("upscale", "--help")
    assert r.exit_code == 0 and "--tile" in r.stdout and DEFAULT_MODEL in r.stdout
    assert {f.value for f in cli.OutputFormat} == set(FORMATS)


def test_examples_all_ok(tiny_path: Path, tmp_path: Path) -> None:
    r = run("upscale", EXAMPLES, "-o", tmp_path / "out", "--model", tiny_path, "--device", "cpu")
    assert r.exit_code == 0, r.output
    for src in EXAMPLES.glob("*.*"):
        if src.suffix == ".md":
            continue
        a, b = read_image(src).pixels, read_image(tmp_path / "out" / src.name).pixels
        assert b.shape == (a.shape[0] * 4, a.shape[1] * 4, a.shape[2])
    assert "4 ok, 0 skipped, 0 failed" in r.stdout
    again = run("upscale", EXAMPLES, "-o", tmp_path / "out", "--model", tiny_path)
    assert again.exit_code == 0 and "0 ok, 4 skipped" in again.stdout


def test_some_failed_is_exit_1(tiny_path: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "good.png", photo(8, 8))
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    r = run("upscale", tmp_path / "in", "-o", tmp_path / "out", "-m", tiny_path)
    assert r.exit_code == 1
    assert "1 ok, 0 skipped, 1 failed" in r.stdout and "bad.png" in r.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".srgan-outputs.jsonl", "good.png"]


@pytest.mark.parametrize("args, message", [
    (["--tile", "-1"], "--tile"),
    (["--quality", "0"], "--quality"),
    (["--device", "tpu"], "tpu"),
    (["--format", "gif"], "gif"),
    (["--metrics", "m.csv"], "--hr"),
])
def test_usage_errors_are_exit_2(tiny_path: Path, tmp_path: Path, args: list[str], message: str) -> None:
    write_image(tmp_path / "a.png", photo(4, 4))
    r = run("upscale", tmp_path / "a.png", "-o", tmp_path / "out", "-m", tiny_path, *args)
    assert r.exit_code == 2 and message in r.output
    assert not (tmp_path / "out").exists()


def test_missing_inputs_and_no_images_are_exit_2(tiny_path: Path, tmp_path: Path) -> None:
    assert run("upscale", tmp_path / "nope", "-o", tmp_path / "o", "-m", tiny_path).exit_code == 2
    (tmp_path / "empty").mkdir()
    r = run("upscale", tmp_path / "empty", "-o", tmp_path / "o", "-m", tiny_path)
    assert r.exit_code == 2 and "no images found" in r.output


def test_missing_default_model_names_the_file(tmp_path: Path) -> None:
    r = run("upscale", EXAMPLES, "-o", tmp_path / "out", env={"SRGAN_MODELS_DIR": str(tmp_path / "models")})
    assert r.exit_code == 2
    assert MODELS[DEFAULT_MODEL].filename in r.output and "cli.py train" in r.output
    r = run("upscale", EXAMPLES, "-o", tmp_path / "out", "-m", "esrgan-unknown")
    assert r.exit_code == 2 and "srresnet, srgan, srcnn" in r.output


def test_default_model_name_resolves_through_the_registry(tiny_path: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_path, models / MODELS[DEFAULT_MODEL].filename)
    r = run("upscale", EXAMPLES / "astronaut.png", "-o", tmp_path / "out", env={"SRGAN_MODELS_DIR": str(models)})
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "astronaut.png").is_file()


def test_options_reach_the_files(tiny_path: Path, tmp_path: Path) -> None:
    r = run("upscale", EXAMPLES / "coffee.jpg", EXAMPLES / "chelsea_rgba.png", "-o", tmp_path / "o", "-m", tiny_path,
            "--format", "webp", "--quality", "70", "--outscale", "2", "--tile", "32", "--alpha", "model",
            "--threads", "1")
    assert r.exit_code == 0, r.output
    assert read_image(tmp_path / "o" / "coffee.webp").pixels.shape == (240, 320, 3)
    assert read_image(tmp_path / "o" / "chelsea_rgba.webp").pixels.shape == (192, 256, 4)


def test_metrics_csv_and_grids(tiny_path: Path, tmp_path: Path) -> None:
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    hr.mkdir()
    lr.mkdir()
    for i in range(2):
        img = photo(40, 48, seed=i)
        write_image(hr / f"x{i}.png", img)
        write_image(lr / f"x{i}.png", imresize(img, 0.25))
    r = run("upscale", lr, "-o", tmp_path / "out", "-m", tiny_path, "--hr", hr, "--grid")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "metrics.csv")))
    assert [row["file"] for row in rows] == ["x0.png", "x1.png", "mean"]
    assert all(float(row["psnr_y"]) > 20 and 0 < float(row["ssim_y"]) <= 1 for row in rows)
    assert all(float(row["bicubic_psnr_y"]) > 20 for row in rows)
    assert sorted(p.name for p in (tmp_path / "out" / "grids").iterdir()) == ["x0.png", "x1.png"]


def test_runtime_imports_without_torch(torchless_env: dict[str, str]) -> None:
    code = ("import importlib, sys\n"
            "try:\n    import torch\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('torch not blocked')\n"
            "import srgan.runtime\n"
            "for m in ('errors','formats','defaults','session','tiler','imageio','metrics','registry','pipeline',"
            "'grids','resize','watch','bench','peers','charts'):\n    importlib.import_module('srgan.runtime.' + m)\n"
            "import srgan.cli\n"
            "assert not any(k.split('.')[0] in ('torch', 'torchvision', 'lpips') for k in sys.modules)\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], env=torchless_env, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_cli_upscale_without_torch(torchless_env: dict[str, str], tiny_path: Path, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "upscale", str(EXAMPLES / "astronaut.png"),
                        "-o", str(tmp_path / "out"), "--model", str(tiny_path), "--device", "cpu"],
                       env=torchless_env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert read_image(tmp_path / "out" / "astronaut.png").pixels.shape == (512, 512, 3)

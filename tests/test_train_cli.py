"""`cli.py train` / `cli.py eval` end to end on tiny configs and real images, and DDP on 2 gloo processes."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from srgan.cli import app
from srgan.trainer.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "T91").is_dir(), reason="../shared/data not present")
TINY = ["--set", "blocks=2", "--set", "channels=8", "--set", "batch=2", "--set", "hr_patch=32",
        "--set", "workers=0", "--set", "amp=off", "--set", "channels_last=false", "--set", "log_every=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("train")
    for src in sorted((SHARED / "T91" / "HR").glob("*.png"))[:4]:
        (folder / src.name).symlink_to(src)
    return folder


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("val")
    for sub in ("HR", "LR_bicubic_x4"):
        (folder / sub).mkdir()
        for name in ("baby.png", "bird.png"):
            (folder / sub / name).symlink_to(SHARED / "Set5" / sub / name)
    return folder


def test_train_resume_eval_cli(tmp_path, data_dir, val_dir):
    run = tmp_path / "run"
    runner = CliRunner()
    args = ["train", "--preset", "report", "--data", str(data_dir), "--out", str(run), "--steps", "4",
            "--random-vgg-weights-not-a-perceptual-loss", "--val", str(val_dir), "--set", "warmup_steps=2",
            "--set", "checkpoint_every=2", *TINY]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preset"] == "report" and cfg["lr_g"] == 1e-4 and cfg["d_every"] == 6
    assert cfg["_resolved"]["warmup_steps"] == 2 and cfg["_resolved"]["epoch_steps"] == 2
    with open(run / "val.csv") as fh:
        val = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in val] == [2, 4] and all(float(r["psnr_y"]) > 5 for r in val)
    assert sorted(p.name for p in (run / "val" / "step_0000004" / "grids" / val_dir.name).iterdir()) == \
        ["baby.png", "bird.png"]
    names = zipfile.ZipFile(run / "results.zip").namelist()
    assert "losses.csv" in names and "val.csv" in names and not any(n.endswith(".pt") for n in names)

    # resume to 6 steps: the saved config is kept, only steps change
    res = runner.invoke(app, ["train", "--data", str(data_dir), "--out", str(run), "--steps", "6", "--resume",
                              "--random-vgg-weights-not-a-perceptual-loss"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6
    with open(run / "losses.csv") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4, 5, 6]

    res = runner.invoke(app, ["eval", str(run / "generator.pt"), "--data", str(val_dir), "-o", str(tmp_path / "ev"),
                              "--device", "cpu", "--grids", "0"])  # no grids: the folder must still be made
    assert res.exit_code == 0, res.output
    with open(tmp_path / "ev" / f"{val_dir.name}.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == ["baby.png", "bird.png", "mean"]
    assert abs(float(rows[2]["bicubic_psnr_y"]) - (float(rows[0]["bicubic_psnr_y"]) + float(rows[1]["bicubic_psnr_y"])) / 2) < 1e-4

    # export the trained generator, evaluate the ONNX file and record the numbers in its card
    onnx_path = tmp_path / "m" / "tiny_x4.onnx"
    res = runner.invoke(app, ["export", str(run / "generator.pt"), "-o", str(onnx_path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", str(onnx_path), "--data", str(val_dir), "-o", str(tmp_path / "ev2"),
                              "--device", "cpu", "--record"])
    assert res.exit_code == 0, res.output
    with open(tmp_path / "ev2" / "summary.csv") as fh:
        summary = next(csv.DictReader(fh))
    card = json.loads(onnx_path.with_name("tiny_x4.card.json").read_text())
    measured = card["quality"][val_dir.name]
    assert measured["model"]["psnr_y"] == pytest.approx(float(summary["psnr_y"]), abs=1e-5)
    assert measured["bicubic"]["psnr_y"] == pytest.approx(float(summary["bicubic_psnr_y"]), abs=1e-5)
    res = runner.invoke(app, ["eval", str(run / "generator.pt"), "--data", str(val_dir), "--record"])
    assert res.exit_code == 2 and "--record needs" in res.output


def test_train_cli_errors(tmp_path, data_dir):
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--data", str(data_dir), "--out", str(tmp_path), "--set", "nope=1"])
    assert res.exit_code == 2 and "unknown config key 'nope'" in res.output
    res = runner.invoke(app, ["train", "--preset", "bogus", "--data", str(data_dir), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown preset" in res.output
    res = runner.invoke(app, ["train", "--data", str(data_dir), "--out", str(tmp_path / "r"), "--resume"])
    assert res.exit_code == 2 and "checkpoint.pt does not exist" in res.output


def test_ddp_two_gloo_processes(tmp_path, data_dir):
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           str(ROOT / "cli.py"), "train", "--preset", "psnr", "--data", str(data_dir), "--out", str(run),
           "--steps", "3", *TINY, "--set", "bn=true"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["_resolved"]["world_size"] == 2
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["step"] == 3 and all(torch.isfinite(v).all() for v in ck["g"].values() if v.is_floating_point())

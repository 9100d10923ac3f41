"""`cli.py train` / `cli.py eval` end to end on tiny configs and real images, and DDP on 2 gloo processes."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
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

    # resume to 6 steps: data and config come from the run; a new step count is a change to allow
    resume = ["train", "--out", str(run), "--steps", "6", "--resume", "--random-vgg-weights-not-a-perceptual-loss"]
    res = runner.invoke(app, resume)
    assert res.exit_code == 2 and "steps: 4 -> 6" in res.output and "--allow-changes" in res.output
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 4
    res = runner.invoke(app, [*resume, "--allow-changes"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6
    with open(run / "losses.csv") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4, 5, 6]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["steps"] == 6 and cfg["d_every"] == 6 and cfg["_resolved"]["data"] == [str(data_dir)]
    assert [(h["action"], h["step"], h.get("changes")) for h in cfg["_resolved"]["history"]] == \
        [("start", 0, None), ("resume", 4, {"steps": [4, 6]})]

    res = runner.invoke(app, ["eval", str(run / "generator.pt"), "--data", str(val_dir), "-o", str(tmp_path / "ev"),
                              "--device", "cpu", "--grids", "0"])  # no grids: the folder must still be made
    assert res.exit_code == 0, res.output
    with open(tmp_path / "ev" / f"{val_dir.name}.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == ["baby.png", "bird.png", "mean"]
    bicubic = [float(r["bicubic_psnr_y"]) for r in rows]
    assert abs(bicubic[2] - (bicubic[0] + bicubic[1]) / 2) < 1e-4

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
    assert res.exit_code == 2 and "bogus" in res.output
    res = runner.invoke(app, ["train", "--data", str(data_dir), "--out", str(tmp_path / "r"), "--resume"])
    assert res.exit_code == 2 and "checkpoint.pt does not exist" in res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--data is needed" in res.output
    assert not (tmp_path / "r").exists()


def _steps(run: Path) -> list[int]:
    with open(run / "losses.csv") as fh:
        return [int(r["step"]) for r in csv.DictReader(fh)]


def test_existing_run_is_refused_unless_resume_or_overwrite(tmp_path, data_dir):
    run, runner = tmp_path / "run", CliRunner()
    start = ["train", "--preset", "psnr", "--data", str(data_dir), "-o", str(run), "--steps", "2", *TINY]
    assert runner.invoke(app, start).exit_code == 0
    (run / "val").mkdir()
    (run / "notes.txt").write_text("mine")
    before = (run / "checkpoint.pt").read_bytes()
    res = runner.invoke(app, [*start[:-len(TINY) - 1], "3", *TINY])
    assert res.exit_code == 2 and "already holds a run" in res.output and "--overwrite" in res.output
    assert (run / "checkpoint.pt").read_bytes() == before and _steps(run) == [1, 2]

    res = runner.invoke(app, [*start[:-len(TINY) - 1], "3", *TINY, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert _steps(run) == [1, 2, 3] and load_checkpoint(run / "checkpoint.pt")["step"] == 3
    assert not (run / "val").exists() and (run / "notes.txt").read_text() == "mine"  # only the run's own files go
    history = json.loads((run / "config.json").read_text())["_resolved"]["history"]
    assert [h["action"] for h in history] == ["overwrite"]
    assert runner.invoke(app, [*start, "--resume", "--overwrite"]).exit_code == 2


def test_resume_refuses_other_data_settings_or_preset(tmp_path, data_dir):
    run, runner = tmp_path / "run", CliRunner()
    res = runner.invoke(app, ["train", "--preset", "psnr", "--data", str(data_dir), "-o", str(run), "--steps", "2",
                              *TINY])
    assert res.exit_code == 0, res.output
    saved = (run / "config.json").read_text()
    other = tmp_path / "other"
    other.mkdir()
    for src in sorted(data_dir.iterdir())[:3]:
        (other / src.name).symlink_to(src.resolve())
    resume = ["train", "-o", str(run), "--resume"]
    for extra, said in [(["--data", str(other)], "data: "), (["--set", "lr_g=3e-4"], "lr_g: 0.0002 -> 0.0003"),
                        (["--set", "degradation=pil"], "degradation: matlab -> pil")]:
        res = runner.invoke(app, [*resume, *extra])
        assert res.exit_code == 2 and said in res.output and "--allow-changes" in res.output, (extra, res.output)
    res = runner.invoke(app, [*resume, "--preset", "srgan"])
    assert res.exit_code == 2 and "keeps its preset" in res.output
    assert (run / "config.json").read_text() == saved  # nothing was touched

    # the same folder with other files in it: a change of content, found by the fingerprint
    (data_dir / "zz_extra.png").symlink_to(sorted(data_dir.iterdir())[0].resolve())
    try:
        res = runner.invoke(app, resume)
        assert res.exit_code == 2 and "the files differ (4 -> 5 images)" in res.output
        res = runner.invoke(app, [*resume, "--allow-changes", "--set", "lr_g=3e-4", "--steps", "3"])
        assert res.exit_code == 0, res.output
    finally:
        (data_dir / "zz_extra.png").unlink()
    cfg = json.loads((run / "config.json").read_text())
    changes = cfg["_resolved"]["history"][-1]["changes"]
    assert cfg["lr_g"] == 3e-4 and changes["lr_g"] == [2e-4, 3e-4] and changes["steps"] == [2, 3]
    assert [c["images"] for c in changes["data_content"]] == [4, 5]
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 3 and _steps(run) == [1, 2, 3]


def _wait_for_rows(proc: subprocess.Popen, csv_path: Path, rows: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not (csv_path.is_file() and csv_path.read_text().count("\n") > rows):  # header + complete rows
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "training did not log its first steps in time"
        time.sleep(0.05)


@pytest.mark.parametrize(("sig", "workers"), [(signal.SIGINT, 0), (signal.SIGTERM, 1)])
def test_signal_checkpoints_the_current_step_and_resume_continues_exactly(tmp_path, data_dir, sig, workers):
    """A real process stopped by SIGINT/SIGTERM mid-run writes a checkpoint at the step it reached (no
    periodic checkpoint is due) and exits 128 + signal; --resume continues from that step, and (checked
    once: the resume is the same for both signals) the result equals an uninterrupted run bit for bit."""
    run, ref = tmp_path / "run", tmp_path / "ref"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    tiny = [*TINY, "--set", f"workers={workers}", "--set", "checkpoint_every=100000"]
    cmd = [sys.executable, str(ROOT / "cli.py"), "train", "--preset", "psnr", "--data", str(data_dir)]
    proc = subprocess.Popen([*cmd, "-o", str(run), "--steps", "100000", *tiny], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_rows(proc, run / "losses.csv", 3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig.value, err[-3000:]
    assert f"stopped by {sig.name}" in err
    stopped = load_checkpoint(run / "checkpoint.pt")["step"]
    assert stopped >= 3 and _steps(run) == list(range(1, stopped + 1))  # log_every=1: the last row is the stop
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]

    resume = [sys.executable, str(ROOT / "cli.py"), "train", "-o", str(run), "--resume", "--steps",
              str(stopped + 2)]
    proc2 = subprocess.run(resume, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc2.returncode == 2 and "--allow-changes" in proc2.stderr  # a new total is a change
    proc2 = subprocess.run([*resume, "--allow-changes"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=240)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert _steps(run) == list(range(1, stopped + 3))
    history = json.loads((run / "config.json").read_text())["_resolved"]["history"]
    assert [(h["action"], h["step"]) for h in history] == [("start", 0), ("resume", stopped)]
    assert history[1]["changes"] == {"steps": [100000, stopped + 2]}
    if sig != signal.SIGINT:
        return
    proc3 = subprocess.run([*cmd, "-o", str(ref), "--steps", str(stopped + 2), *tiny], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=240)
    assert proc3.returncode == 0, proc3.stderr[-3000:]
    a, b = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(ref / "checkpoint.pt")
    assert a["step"] == b["step"] == stopped + 2
    for key in ("g", "g_ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)


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

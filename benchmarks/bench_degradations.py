"""Is training with ``--degradation real`` data-bound on this machine? Measures, in one process:

1. degradations/s of each per-sample model (``--models``, default every one the trainer knows:
   ``real``, ``real-mean``, ``real-mix``, ``real-orders``) for one HR patch of 96, 128 and 256 px
   (one thread, a real photograph, a new seed per call);
2. the time to build one training batch (``PatchBatches[step]``, the data loader's unit of work) with
   ``real`` and with ``matlab`` (stored LR crops), for the two presets' shapes;
3. the trainer's end-to-end steps/s with ``degradation=real`` and ``matlab`` for the same config,
   interleaved (real, matlab, real, matlab), with the preset's data workers.

Prints a Markdown report with machine details. Usage:
    python benchmarks/bench_degradations.py [--steps 40] [--presets real-psnr,psnr] [--models real,...] [--threads 0]
(``--presets ''`` measures the degradations only.)
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srgan.runtime.bench import machine_info
from srgan.runtime.paths import data_dir
from srgan.trainer.config import ON_THE_FLY, apply_overrides, preset
from srgan.trainer.data import PatchBatches, degradation_config, find_images, load_pairs
from srgan.trainer.degradations import DEGRADATIONS, DegradationConfig, degrade
from srgan.trainer.train import train


def degradations_per_s(photo: np.ndarray, size: int, model: DegradationConfig, seconds: float = 4.0) -> float:
    hr = np.ascontiguousarray(photo[:size, :size])
    degrade(hr, model, np.random.default_rng([size, 2**31]))  # warm-up (a seed the loop never uses)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        degrade(hr, model, np.random.default_rng([size, n]))
        n += 1
    return n / (time.perf_counter() - t0)


def batch_ms(pairs, cfg, degradation: str, batches: int = 6) -> float:
    ds = PatchBatches(pairs, scale=cfg.scale, lr_patch=cfg.lr_patch, batch=cfg.batch, seed=0,
                      degradation=degradation_config(degradation))
    times = []
    for step in range(batches):
        t0 = time.perf_counter()
        ds[step]
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def train_steps_per_s(name: str, degradation: str, steps: int, data: list[Path], every: int = 5) -> float:
    """Median steps/s over the logged windows of ``every`` steps, the first window (worker start-up) left out."""
    cfg = apply_overrides(preset(name), dict(steps=steps, degradation=degradation, log_every=every,
                                             checkpoint_every=10**9, warmup_steps=None, epochs=None))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, data, Path(tmp) / "run", on_log=rows.append)
    later = rows[1:]
    return statistics.median(r["steps_per_s"] for r in later) if later else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--presets", default="real-psnr,psnr")
    ap.add_argument("--models", default=",".join(ON_THE_FLY), help="per-sample models, comma-separated")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    models = [DEGRADATIONS[m] for m in args.models.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    data = [data_dir() / "BSD200"]
    with Image.open(find_images(data_dir() / "BSD200")[0]) as im:  # a real 481x321 photograph
        photo = np.asarray(im.convert("RGB"))
    info = machine_info()
    print("## Degradation speed (`benchmarks/bench_degradations.py`)\n")
    print("Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + f"; torch threads {torch.get_num_threads()}\n")
    print("Degradations per second, one thread (ms each):\n")
    print("| HR patch | " + " | ".join(f"`{m.name}`" for m in models) + " |\n|---|" + "---|" * len(models))
    for size in (96, 128, 256):
        rates = [degradations_per_s(photo, size, m) for m in models]
        print(f"| {size} | " + " | ".join(f"{r:.1f} ({1000 / r:.1f})" for r in rates) + " |")
    print("\n| preset (arch, HR patch, batch) | batch build, real (ms) | batch build, matlab (ms) |"
          " train steps/s, real | train steps/s, matlab | real / matlab |\n|---|---|---|---|---|---|")
    for name in filter(None, args.presets.split(",")):
        cfg = preset(name)
        pairs_m = load_pairs(data, cfg.scale, "matlab", min_hr=cfg.hr_patch)
        pairs_r = load_pairs(data, cfg.scale, "real", min_hr=cfg.hr_patch)
        b_real, b_mat = batch_ms(pairs_r, cfg, "real"), batch_ms(pairs_m, cfg, "matlab")
        real_runs, mat_runs = [], []
        for _ in range(2):
            real_runs.append(train_steps_per_s(name, "real", args.steps, data))
            mat_runs.append(train_steps_per_s(name, "matlab", args.steps, data))
        sr, sm = statistics.mean(real_runs), statistics.mean(mat_runs)
        print(f"| {name} ({cfg.arch}, {cfg.hr_patch}, {cfg.batch}; {cfg.workers} workers) | {b_real:.0f} | {b_mat:.1f} "
              f"| {sr:.2f} ({', '.join(f'{x:.2f}' for x in real_runs)}) "
              f"| {sm:.2f} ({', '.join(f'{x:.2f}' for x in mat_runs)}) | {sr / sm:.2f} |")


if __name__ == "__main__":
    main()

"""Training throughput on this machine: steps/s and images/s, fp32 vs bf16 autocast (channels_last).

Runs the real training step (trainer.train.train) on real photographs for a few
steps per setting, in one process, and prints a Markdown table with machine
details. Usage: python benchmarks/bench_train.py [--steps 30] [--threads N]
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from srgan.runtime.bench import machine_info
from srgan.trainer.config import apply_overrides, preset
from srgan.trainer.train import train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "T91"


def run(preset_name: str, amp: str, steps: int, extra: dict) -> float:
    cfg = apply_overrides(preset(preset_name), dict(steps=steps, amp=amp, workers=1, log_every=steps,
                                                    checkpoint_every=10**9, **extra))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows = []
        train(cfg, [DATA], Path(tmp), on_log=rows.append, random_vgg=True)
        total = time.perf_counter() - t0
        with open(Path(tmp) / "losses.csv") as fh:
            list(csv.reader(fh))
    return rows[-1]["steps_per_s"] if rows else steps / total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = [
        ("psnr (SRResNet-16, no BN, L1)", "psnr", {}),
        ("srgan phase 2 (G + D + VGG)", "srgan", {}),
    ]
    print(f"# training throughput, {date.today()}\n")
    print(f"machine: {machine_info()['cpu']}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"bf16 kernels: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}\n")
    print("| setting | batch x HR patch | fp32 steps/s | bf16 steps/s | fp32 img/s | bf16 img/s | bf16 speed-up |")
    print("|---|---|---|---|---|---|---|")
    for label, name, extra in settings:
        cfg = preset(name)
        fp32 = run(name, "off", args.steps, extra)
        bf16 = run(name, "bf16", args.steps, extra)
        print(f"| {label} | {cfg.batch} x {cfg.hr_patch} | {fp32:.2f} | {bf16:.2f} | {fp32 * cfg.batch:.1f} | "
              f"{bf16 * cfg.batch:.1f} | {bf16 / fp32:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

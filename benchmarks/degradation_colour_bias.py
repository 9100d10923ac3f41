"""How much each degradation step moves an image's channel means (the colour bias a real-photo model learns to undo).

For the centre 256-px crop of every ``--every``-th image in the given folders, four draws each of: the training
model (``trainer.degradations.REAL``), the same without its noise steps, without its JPEG steps, without either,
``REAL_MEAN`` (``--degradation real-mean``: REAL with the LR's channel means kept at the HR's), and the benchmark's
model (``BENCH``). Printed: the mean and standard deviation over all draws of (LR channel mean - HR
channel mean), in 0-255 levels, R G B. A model trained on LR whose blue is on average brighter than its HR learns to
darken blue, and does so on input that lacks that bias (benchmarks/TRAINING.md, fourteenth session).

usage: python benchmarks/degradation_colour_bias.py ../shared/data/BSD200 ../shared/data/Photos [--every 4]
"""
from __future__ import annotations

import argparse
import dataclasses as dc
from pathlib import Path

import numpy as np
from PIL import Image

from srgan.trainer.degradations import BENCH, REAL, REAL_MEAN, DegradationConfig, degrade

SIZE = 256


def without(cfg: DegradationConfig, *, noise: bool, jpeg: bool) -> DegradationConfig:
    """``cfg`` with its noise and / or JPEG steps switched off (probability 0)."""
    stages = tuple(dc.replace(s, noise=dc.replace(s.noise, prob=0.0) if noise else s.noise,
                              jpeg=dc.replace(s.jpeg, prob=0.0) if jpeg else s.jpeg) for s in cfg.stages)
    return dc.replace(cfg, stages=stages, final_jpeg=dc.replace(cfg.final_jpeg, prob=0.0) if jpeg else cfg.final_jpeg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--draws", type=int, default=4)
    a = ap.parse_args()
    files = [f for d in a.folders for f in sorted(p for p in d.rglob("*") if p.suffix.lower() in (".png", ".jpg"))
             [:: a.every]]
    crops = []
    for f in files:
        im = np.asarray(Image.open(f).convert("RGB"))
        h, w = im.shape[:2]
        if min(h, w) >= SIZE:
            crops.append(im[(h - SIZE) // 2:(h + SIZE) // 2, (w - SIZE) // 2:(w + SIZE) // 2])
    print(f"{len(crops)} crops of {SIZE} px from {', '.join(map(str, a.folders))}; {a.draws} draws each")
    models = {"REAL (training)": REAL, "REAL, no noise": without(REAL, noise=True, jpeg=False),
              "REAL, no JPEG": without(REAL, noise=False, jpeg=True),
              "REAL, neither": without(REAL, noise=True, jpeg=True), "REAL_MEAN": REAL_MEAN,
              "BENCH (benchmark)": BENCH}
    for name, cfg in models.items():
        d = np.array([degrade(hr, cfg, np.random.default_rng(1000 * i + k))[0].astype(np.float64).mean(axis=(0, 1))
                      - hr.astype(np.float64).mean(axis=(0, 1)) for i, hr in enumerate(crops) for k in range(a.draws)])
        mean, sd = " ".join(f"{v:+.2f}" for v in d.mean(0)), " ".join(f"{v:.2f}" for v in d.std(0))
        print(f"{name:18s} mean R G B {mean}   sd {sd}")


if __name__ == "__main__":
    main()

"""Colour noise and wobbly lines on facades: chroma-noise ratio, edge wobble and lattice ratio
of SR models on the Set14/BSD100 crops with the most straight edges, against HR and bicubic.

    python benchmarks/facade_artifacts.py models/srresnet_x4.onnx models/srgan_x4.onnx \
        [--sets Set14 BSD100] [--crops 8] [--side 192] [-o runs/facades]

Crops are chosen from the HR images alone (no model involved): the ``side`` x ``side`` window
(on a ``side / 2`` grid) with the most straight-edge points as :func:`runtime.metrics.edge_wobble`
finds them, the best window per image, the ``crops`` best images over all sets. LR = MATLAB
bicubic x1/4 of the HR crop (as the benchmark sets' LR is made). Writes ``facades.csv``
(per crop and model), ``facades.md`` (means) and one PNG per crop (LR nearest | bicubic | each
model | HR) into the output folder. Evaluation sets are only measured here, never trained on.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from srgan.runtime import metrics
from srgan.runtime.imageio import read_image, write_image
from srgan.runtime.paths import data_dir
from srgan.runtime.pipeline import upscale_image
from srgan.runtime.resize import imresize
from srgan.runtime.session import load_model

SCALE = 4


def straight_edge_points(hr: np.ndarray) -> int:
    """Number of straight-edge points (both orientations) edge_wobble would measure in ``hr``."""
    y = metrics.to_y(hr)
    n = 4 * SCALE
    return sum(int(d.size) for d in metrics._edge_deviations(y, y, SCALE, 20.0, n)
               + metrics._edge_deviations(y.T, y.T, SCALE, 20.0, n))


def pick_crops(sets: list[str], side: int, count: int) -> list[tuple[str, np.ndarray]]:
    found = []
    for name in sets:
        for path in sorted((data_dir() / name / "HR").glob("*.png")):
            hr = read_image(path).pixels
            if hr.ndim == 2 or hr.shape[2] != 3:
                continue
            h, w = hr.shape[:2]
            best = (0, 0, 0)
            for y in range(0, h - side + 1, side // 2):
                for x in range(0, w - side + 1, side // 2):
                    best = max(best, (straight_edge_points(hr[y:y + side, x:x + side]), y, x))
            pts, y, x = best
            found.append((pts, f"{name}/{path.stem}@{y},{x}", hr[y:y + side, x:x + side]))
    found.sort(key=lambda t: -t[0])
    return [(label, crop) for _, label, crop in found[:count]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--sets", nargs="+", default=["Set14", "BSD100"])
    ap.add_argument("--crops", type=int, default=8)
    ap.add_argument("--side", type=int, default=192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("-o", "--out", type=Path, default=Path("runs/facades"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    crops = pick_crops(args.sets, args.side, args.crops)
    sessions = {p.stem: load_model(p, device="cpu", threads=args.threads, engine="onnxruntime", precision="fp32")
                for p in args.models}
    rows = []
    for label, hr in crops:
        lr = imresize(hr, 1.0 / SCALE)
        results = {"bicubic": imresize(lr, float(SCALE))}
        results |= {name: upscale_image(lr, s, tile=0, max_memory=None) for name, s in sessions.items()}
        results["HR"] = hr
        for name, sr in results.items():
            rows.append({"crop": label, "model": name, "chroma_noise": metrics.chroma_noise_ratio(sr, hr, SCALE),
                         "edge_wobble": metrics.edge_wobble(sr, hr, SCALE),
                         "lattice": metrics.lattice_ratio(sr, hr, SCALE),
                         "psnr_y": metrics.psnr(sr, hr, border=SCALE) if name != "HR" else float("inf")})
        panels = [np.repeat(np.repeat(lr, SCALE, 0), SCALE, 1), *results.values()]
        gap = np.full((args.side, 4, 3), 255, np.uint8)
        strip = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
        write_image(args.out / f"{label.replace('/', '_').replace('@', '_').replace(',', '_')}.png", strip)
    with open(args.out / "facades.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    names = list(dict.fromkeys(r["model"] for r in rows))
    lines = [f"Crops ({args.side} px HR, {len(crops)}): " + ", ".join(label for label, _ in crops), "",
             "| model | chroma_noise | edge_wobble (px) | lattice | PSNR-Y |", "|---|---|---|---|---|"]
    for n in names:
        sel = [r for r in rows if r["model"] == n]
        mean = {k: metrics.nan_mean([r[k] for r in sel]) for k in ("chroma_noise", "edge_wobble", "lattice", "psnr_y")}
        lines.append(f"| {n} | {mean['chroma_noise']:.3f} | {mean['edge_wobble']:.3f} | {mean['lattice']:.2f} | "
                     f"{mean['psnr_y']:.2f} |")
    (args.out / "facades.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

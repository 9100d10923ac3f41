"""What ``--denoise`` does, measured: PSNR-Y, SSIM-Y, LPIPS and chroma noise of ``-m real --denoise t``
for several ``t`` on degraded LR (the fixed benchmark of make_degraded_bench.py) and on clean bicubic LR.

``t = 1`` is ``real_x4`` itself (trained on JPEG, noise, blur and resizing), ``t = 0`` its partner
``srgan_x4`` (clean bicubic training), in between the weight blend of runtime/blend.py.

Usage: python benchmarks/bench_denoise.py [--t 0 0.25 0.5 0.75 1] [--sets runs/bench_real/Set14 SET14]
(default sets: the degraded Set14 from make_degraded_bench.py and clean Set14). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from srgan.runtime.api import evaluate, load
from srgan.runtime.paths import data_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--sets", type=Path, nargs="+",
                    default=[Path("runs/bench_real/Set14"), data_dir() / "Set14"])
    ap.add_argument("--model", default="real")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    names = [f"{p.parent.name}/{p.name}" for p in args.sets]
    print("| --denoise | " + " | ".join(f"{n} PSNR-Y / SSIM-Y / LPIPS / chroma" for n in names) + " |")
    print("|--:|" + "--:|" * len(names))
    for t in args.t:
        model = load(args.model, denoise=t, threads=args.threads)
        report = evaluate(model, args.sets)
        cells = [f"{s.means['psnr_y']:.2f} / {s.means['ssim_y']:.4f} / {s.means['lpips']:.4f} / "
                 f"{s.means['chroma_noise']:.2f}" for s in report.sets]
        print(f"| {t:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

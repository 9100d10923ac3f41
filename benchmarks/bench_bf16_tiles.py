"""bf16 tiled vs whole-image output at 8 bits: max and mean level difference over many tile sizes.

Runs SRResNet x4 through OpenVINO bf16 (and fp32 as the control) on Set14 LR images (cropped to at
most ``--crop`` LR pixels a side so the whole-image run stays small), whole and tiled with
the model's receptive radius as pad, and prints one Markdown row per (engine precision, tile).
Usage: python benchmarks/bench_bf16_tiles.py [--crop 128] [--threads 2] [--images 4] [--precision fp32 bf16]
"""
from __future__ import annotations

import argparse

import numpy as np

from srgan.runtime.imageio import read_image
from srgan.runtime.paths import data_dir, models_dir
from srgan.runtime.session import load_model
from srgan.runtime.tiler import upscale_tiled

TILES = (24, 32, 40, 48, 64, 96)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    args = ap.parse_args()
    paths = sorted((data_dir() / "Set14" / "LR_bicubic_x4").glob("*.png"))[:args.images]
    print(f"images: {', '.join(p.name for p in paths)} (crop {args.crop})")
    print("| engine | precision | tile | max level diff | mean level diff | pixels differing |")
    print("|---|---|---|---|---|---|")
    for precision in args.precision:
        m = load_model(models_dir() / "srresnet_x4.onnx", engine="openvino", precision=precision, threads=args.threads)
        wholes = []
        for p in paths:
            px = read_image(p).pixels
            img = np.repeat(px[:, :, :1], 3, 2) if px.shape[2] in (1, 2) else px[:, :, :3]
            img = np.ascontiguousarray(img[:args.crop, :args.crop])
            out = np.empty((img.shape[0] * 4, img.shape[1] * 4, 3), np.uint8)
            wholes.append((img, upscale_tiled(img, m, 4, tile=0, pad=m.receptive_radius, out=out)))
        for tile in TILES:
            mx, tot, n, diff = 0, 0.0, 0, 0
            for img, whole in wholes:
                tiled = upscale_tiled(img, m, 4, tile=tile, pad=m.receptive_radius, out=np.empty_like(whole))
                d = np.abs(tiled.astype(np.int16) - whole)
                mx, tot, n, diff = max(mx, int(d.max())), tot + float(d.sum()), n + d.size, diff + int((d > 0).sum())
            print(f"| openvino | {precision} | {tile} | {mx} | {tot / n:.4f} | {diff / n:.2%} |", flush=True)


if __name__ == "__main__":
    main()

"""No-reference look at real JPEG photos (issue 16): each method's x4 output side by side.

Input: a fixed 160x160 crop of a few photographs from ``<data>/Photos`` (JPEG q95 originals; they are
training photographs, as HR, so ``--held-out`` takes four BSD100 HR images instead, never trained on),
re-encoded as JPEG at quality 50 (Pillow, 4:2:0), as a web photo often is. Each method upscales
the same decoded q50 pixels; ``OUT/<photo>.png`` shows, left to right: the q50 input (nearest x4),
then every method, labelled; ``OUT/times.tsv`` has each method's seconds per image. There is no
reference, so there are no numbers on quality: look for JPEG blocks carried through, invented
noise, ringing and over-sharpening.

Usage: python benchmarks/real_photo_grids.py [--out runs/bench_real/photo_grids] [--held-out] [--method NAME ...]
(methods: bicubic, shipped model names or .onnx paths, peer names, ``real:T`` for ``-m real --denoise T``,
any of them with ``+fix`` for ``--color-fix``; default bicubic srgan srresnet srcnn esrgan-thick realesrgan).
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from srgan.runtime.api import load, upscale
from srgan.runtime.colorfix import fix_image
from srgan.runtime.grids import bicubic_baseline
from srgan.runtime.imageio import atomic_write
from srgan.runtime.paths import data_dir
from srgan.runtime.peers import PEERS, load_peer

PHOTOS = ("Photos/0007.jpg", "Photos/0023.jpg", "Photos/0051.jpg", "Photos/0094.jpg")  # chosen by number before looking
HELD_OUT = ("BSD100/HR/img_005.png", "BSD100/HR/img_033.png", "BSD100/HR/img_058.png", "BSD100/HR/img_087.png")
CROP = 160
QUALITY = 50
DEFAULT_METHODS = ("bicubic", "srgan", "srresnet", "srcnn", "esrgan-thick", "realesrgan")
FIX = "+fix"


def q50_crop(path: Path) -> np.ndarray:
    """The centre CROP x CROP pixels of ``path``, JPEG-encoded at QUALITY and decoded: (CROP, CROP, 3) uint8."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        left, top = (rgb.width - CROP) // 2, (rgb.height - CROP) // 2
        crop = rgb.crop((left, top, left + CROP, top + CROP))
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=QUALITY)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def method(name: str):
    if name.endswith(FIX):  # the colour fix on the whole output, as --color-fix gives (tiled == whole)
        run = method(name[: -len(FIX)])
        return lambda lr: fix_image(lr, np.asarray(run(lr)), 4)
    if name == "bicubic":
        return lambda lr: bicubic_baseline(lr, 4)
    if name in PEERS:
        return load_peer(name)
    base, _, denoise = name.partition(":")
    model = load(base, denoise=float(denoise)) if denoise else load(name)
    return lambda lr: upscale(lr, model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_real/photo_grids"))
    ap.add_argument("--held-out", action="store_true", help="BSD100 HR crops instead of training photographs")
    ap.add_argument("--method", action="append", help="repeatable; default: " + " ".join(DEFAULT_METHODS))
    args = ap.parse_args()
    names = args.method or list(DEFAULT_METHODS)
    runners = {n: method(n) for n in names}
    args.out.mkdir(parents=True, exist_ok=True)
    times: list[str] = ["photo\t" + "\t".join(names)]
    for photo in HELD_OUT if args.held_out else PHOTOS:
        lr = q50_crop(data_dir() / photo)
        panels = [("JPEG q50 input (nearest)", np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1))]
        row = [photo]
        for n in names:
            t0 = time.perf_counter()
            sr = np.asarray(runners[n](lr))
            row.append(f"{time.perf_counter() - t0:.2f}")
            panels.append((n, sr))
        times.append("\t".join(row))
        side, gap, label = CROP * 4, 6, 22
        grid = Image.new("RGB", (len(panels) * (side + gap) - gap, side + label), "white")
        draw = ImageDraw.Draw(grid)
        for i, (title, img) in enumerate(panels):
            grid.paste(Image.fromarray(img), (i * (side + gap), label))
            draw.text((i * (side + gap) + 4, 4), title, fill="black")
        buf = io.BytesIO()
        grid.save(buf, format="PNG")
        with atomic_write(args.out / f"{Path(photo).stem}.png", root=args.out) as fh:
            fh.write(buf.getvalue())
        print(photo, " ".join(f"{n} {t}s" for n, t in zip(names, row[1:])))
    with atomic_write(args.out / "times.tsv", root=args.out) as fh:
        fh.write(("\n".join(times) + "\n").encode())


if __name__ == "__main__":
    main()

"""Make a compact training shard (issue "fast generator", point 5): high-texture HR crops that fit
beside the repository on a lent GPU machine, where ``../shared/data`` does not travel.

From each training set under the data folder (``srgan.runtime.paths.data_dir()``; default T91,
BSD200, BSDS500_test200, Photos; images found as the trainer finds them, ``runtime.datasets.discover``)
every image is scored on its luma Y = 0.299 R + 0.587 G + 0.114 B: a CROP x CROP window (on a grid
of CROP/4, MARGIN px from the borders) scores the mean central-difference gradient magnitude of its
*flattest quarter*, so windows that are half sky or bokeh rank low. Per image the best windows that
overlap an earlier pick by at most a quarter are kept (at most --per-image, score >= --min-texture).
The crops are then taken round by round (every image's best crop before any image's second), the
sets interleaved, best score first within a round, and written until the next one would pass the
byte budget (--max-mib, every file of the shard counted). JPEG q95 4:4:4 (or PNG). No randomness:
same inputs and arguments -> byte-identical files.

Layout of OUT (default ``shard/``, git-ignored)::

    train/<set>_<stem>_<k>.jpg    the training crops: train with ``cli.py train --data OUT/train``
    val/Set5/HR, LR_bicubic_x4    Set5 copied byte for byte, for --val only (never train on it;
                                  ``--data OUT`` would pick it up: point --data at OUT/train)
    manifest.tsv                  one row per file: crop, use, set, source_file, box, texture,
                                  licence, author_credit, source_repo, source_commit, source_path
    README.md                     what this is, and the attribution the photographs need
    vgg16_int8.safetensors        with --vgg FILE: that VGG-16 trunk, int8 with a scale per output channel
                                  (``trainer.pretrained.quantize_int8``; 14.7 MB against 29 MB in fp16), so
                                  a perceptual phase can run there: ``--vgg-weights OUT/vgg16_int8.safetensors``
    Photos_README.md, Photos_MANIFEST.tsv   copies of Photos/README.md and MANIFEST.tsv

Set5, Set14 and BSD100 (evaluation sets) are refused as training sets.

The budget: a device run carries at most 64 MiB, *including the repository* (about 39 MiB of
tracked files on 2026-12-03, mostly models/), so the default budget is what fits: 63 MiB less the
checkout's files (with ``--vgg`` the 14 MiB VGG file leaves ~10 MiB: 348 crops); the summary line
prints what would travel when OUT is inside it.

Usage: python benchmarks/make_train_shard.py [-o shard] [--max-mib MIB] [--crop 192] [--format jpeg|png]
       [--sets T91,BSD200,BSDS500_test200,Photos] [--data-dir DIR] [--no-val] [--vgg FILE]
"""
from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from srgan.runtime.datasets import discover
from srgan.runtime.paths import checkout_root, data_dir

TRAIN_SETS = ("T91", "BSD200", "BSDS500_test200", "Photos")
EVAL_SETS = ("Set5", "Set14", "BSD100")  # never training data (BSD100 = BSDS500 val)
VAL_SET = "Set5"
VGG_FILE = "vgg16_int8.safetensors"
TERMS = {  # licence and credit of the sets without a per-file manifest (../shared/data/SOURCES.md)
    "T91": ("research use only", "Yang et al., TIP 2010 (91 images)"),
    "BSD200": ("BSDS500: non-commercial research and educational use only",
               "Berkeley Segmentation Dataset, Martin et al., ICCV 2001"),
    "BSDS500_test200": ("BSDS500: non-commercial research and educational use only",
                        "Berkeley Segmentation Dataset, Arbelaez et al., TPAMI 2011"),
    "Set5": ("research use only", "Bevilacqua et al., BMVC 2012; LR x4: Huang et al., CVPR 2015"),
}
COLUMNS = ["crop", "use", "set", "source_file", "box", "texture", "licence", "author_credit",
           "source_repo", "source_commit", "source_path"]
README = """# Training shard (made by benchmarks/make_train_shard.py)

High-texture {crop} x {crop} crops of the training sets {sets} (../shared/data), for a GPU
machine where the data folder is not there. Train with `--data <this folder>/train`.
`val/Set5` is Set5 (an evaluation set) copied unchanged, for `--val` only: never train on it.

Attribution. The crops are modified images: cut from the source files named in manifest.tsv
(box = x0,y0,x1,y1 in the source) and re-encoded ({fmt}). Each row carries its source's
licence and credit. Photos rows under CC BY / CC BY-SA need the credit in `author_credit`,
the licence named and linked, and this note that the images were modified; BY-SA crops keep
their licence. Photos_README.md and Photos_MANIFEST.tsv are the Photos folder's own notes.
BSDS, T91 and Set5 images: non-commercial research use only.
vgg16_int8.safetensors, when present: the ImageNet VGG-16 features trunk (torchvision's weights, see
../shared/weights/README.md), int8 with one scale per output channel, for the content loss only.
"""


def _refuse_eval(sets: list[str], root: Path) -> None:
    evals = {(root / e).resolve() for e in EVAL_SETS}
    for name in sets:
        if name.lower() in {e.lower() for e in EVAL_SETS} or (root / name).resolve() in evals:
            sys.exit(f"refused: {name} is an evaluation set ({', '.join(EVAL_SETS)}) and never training data")


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)


def pick_windows(rgb: np.ndarray, crop: int, margin: int, per_image: int,
                 min_texture: float) -> list[tuple[float, int, int]]:
    """(score, x0, y0) of the chosen windows, best first."""
    h, w = rgb.shape[:2]
    if min(h, w) < crop:
        return []
    gy, gx = np.gradient(luma(rgb.astype(np.float32)))
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = np.hypot(gx, gy).cumsum(0).cumsum(1)
    q = crop // 2

    def axis(n: int) -> list[int]:
        m = min(margin, (n - crop) // 2)
        pos = list(range(m, n - m - crop + 1, crop // 4))
        return pos + [n - m - crop] if pos[-1] != n - m - crop else pos

    cands = []
    for y in axis(h):
        for x in axis(w):
            quarters = [integral[b + q, a + q] - integral[b, a + q] - integral[b + q, a] + integral[b, a]
                        for b in (y, y + q) for a in (x, x + q)]
            cands.append((round(min(quarters) / (q * q), 4), x, y))
    cands.sort(key=lambda c: (-c[0], c[2], c[1]))
    chosen: list[tuple[float, int, int]] = []
    for score, x, y in cands:
        if len(chosen) == per_image or score < min_texture:
            break
        if all(max(0, crop - abs(x - cx)) * max(0, crop - abs(y - cy)) <= crop * crop // 4 for _, cx, cy in chosen):
            chosen.append((score, x, y))
    return chosen


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(pixels).save(buf, "JPEG", quality=95, subsampling=0, optimize=True)
    else:
        Image.fromarray(pixels).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def _int8_vgg(path: Path) -> bytes:
    """The VGG-16 features trunk of ``path``, int8 per output channel, as safetensors bytes."""
    from safetensors.torch import save

    from srgan.trainer.pretrained import quantize_int8, read_state_dict
    sd = {k: v for k, v in read_state_dict(path).items() if k.startswith("features.") or k[0].isdigit()}
    return save(quantize_int8(sd))


def _tree_mib(root: Path) -> float | None:
    """MiB of what a device call sends of the checkout: tracked and untracked-not-ignored files."""
    try:
        names = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=Path("shard"))
    ap.add_argument("--data-dir", type=Path, default=None, help="default: srgan.runtime.paths.data_dir()")
    ap.add_argument("--sets", default=",".join(TRAIN_SETS), help="training sets (folders of the data dir)")
    ap.add_argument("--max-mib", type=float, default=None,
                    help="byte budget of the whole shard, MiB (default: what fits beside the checkout in a device "
                         "call's 64 MiB, less 1 MiB; 9 outside a checkout)")
    ap.add_argument("--crop", type=int, default=192, help="crop side, px (a multiple of 4)")
    ap.add_argument("--margin", type=int, default=8, help="px left out at each image border")
    ap.add_argument("--per-image", type=int, default=8, help="at most this many crops per image")
    ap.add_argument("--min-texture", type=float, default=4.0, help="skip windows scoring under this")
    ap.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    ap.add_argument("--no-val", action="store_true", help="do not pack Set5 into val/Set5")
    ap.add_argument("--vgg", type=Path, default=None,
                    help="also pack this VGG-16 features file as OUT/vgg16_int8.safetensors (needs torch)")
    args = ap.parse_args(argv)
    if args.max_mib is None:
        checkout = checkout_root()
        tree = _tree_mib(checkout) if checkout is not None else None
        args.max_mib = 9.0 if tree is None else max(1.0, float(int(63.0 - tree)))
    root = args.data_dir or data_dir()
    sets = [s for s in args.sets.split(",") if s]
    _refuse_eval(sets, root)
    if args.crop % 4:
        sys.exit("--crop must be a multiple of 4 (the trainer's scale)")
    out, budget, ext = args.out, int(args.max_mib * 2**20), "jpg" if args.format == "jpeg" else "png"
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.tsv").is_file():
            sys.exit(f"{out} is not empty and holds no manifest.tsv: not a shard, left alone")
        shutil.rmtree(out)
    (out / "train").mkdir(parents=True)

    photos = {}
    if "Photos" in sets:
        with open(root / "Photos" / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
            photos = {r["file"]: r for r in csv.DictReader(fh, delimiter="\t")}
    per_set: dict[str, list[tuple[int, float, str, bytes, list[str]]]] = {}
    for name in sets:
        rows = []
        for hr, _ in discover(root / name, 4):
            assert not set(hr.resolve().parts) & set(EVAL_SETS), hr  # an evaluation image never gets in
            with Image.open(hr) as im:
                rgb = np.asarray(im.convert("RGB"))
            rel = hr.relative_to(root / name).as_posix()
            meta = photos.get(hr.name) if name == "Photos" else None
            if name == "Photos" and meta is None:
                sys.exit(f"{hr} is not in Photos/MANIFEST.tsv: its licence is unknown")
            terms = ([meta["licence"], meta["author_credit"], meta["source_repo"], meta["source_commit"],
                      meta["source_path"]] if meta else [*TERMS.get(name, ("see SOURCES.md", "")), "", "", ""])
            windows = pick_windows(rgb, args.crop, args.margin, args.per_image, args.min_texture)
            for k, (score, x, y) in enumerate(windows):
                data = encode(np.ascontiguousarray(rgb[y:y + args.crop, x:x + args.crop]), args.format)
                file = f"train/{name}_{hr.stem}_{k}.{ext}"
                info = [file, "train", name, rel, f"{x},{y},{x + args.crop},{y + args.crop}", f"{score:.4f}", *terms]
                rows.append((k, score, file, data, info))
        per_set[name] = sorted(rows, key=lambda r: (r[0], -r[1], r[2]))

    fixed: list[tuple[Path, bytes]] = [(out / "README.md", README.format(
        crop=args.crop, sets=", ".join(sets), fmt="JPEG q95, 4:4:4" if ext == "jpg" else "PNG").encode())]
    if photos:
        fixed += [(out / f"Photos_{f}", (root / "Photos" / f).read_bytes()) for f in ("README.md", "MANIFEST.tsv")]
    if args.vgg is not None:
        fixed.append((out / VGG_FILE, _int8_vgg(args.vgg)))
    manifest = ["\t".join(COLUMNS)]
    if not args.no_val:
        val_terms = [*TERMS[VAL_SET], "", "", ""]
        for hr, lr in discover(root / VAL_SET, 4):
            for src, sub in ((hr, "HR"), (lr, "LR_bicubic_x4")):
                if src is not None:
                    fixed.append((out / "val" / VAL_SET / sub / src.name, src.read_bytes()))
                    manifest.append("\t".join([f"val/{VAL_SET}/{sub}/{src.name}", "validation only, never train",
                                               VAL_SET, f"{sub}/{src.name}", "", "", *val_terms]))
    used = sum(len(b) for _, b in fixed) + sum(len(r) + 1 for r in manifest)
    if used > budget:
        shutil.rmtree(out)
        sys.exit(f"the shard's fixed files (README, Set5, the VGG file) take {used / 2**20:.1f} MiB, over the "
                 f"{args.max_mib:g} MiB budget: raise --max-mib, or leave out --vgg / add --no-val")
    queues = [per_set[s] for s in sets]
    order = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]
    counts = dict.fromkeys(sets, 0)
    for _, _, file, data, info in order:
        row = "\t".join(info)
        if used + len(data) + len(row) + 1 > budget:
            break
        used += len(data) + len(row) + 1
        fixed.append((out / file, data))
        manifest.append(row)
        counts[info[2]] += 1
    for path, data in fixed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (out / "manifest.tsv").write_text("\n".join(manifest) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert total <= budget, (total, budget)
    repo, travel = checkout_root(), ""
    if repo is not None and out.resolve().is_relative_to(repo):
        tree = _tree_mib(repo)
        if tree is not None:
            travel = f"; travels with the {tree:.1f} MiB tree: {tree + total / 2**20:.1f} MiB of 64"
    n = sum(counts.values())
    val = "" if args.no_val else f" + val/{VAL_SET}"
    print(f"{out}: {n} crops of {args.crop} px, {total / 2**20:.2f} MiB of {args.max_mib:g} "
          f"({', '.join(f'{s} {c}' for s, c in counts.items())}){val}{travel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

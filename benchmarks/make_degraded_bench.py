"""Make the fixed degraded-LR benchmark (issue 16): Set14 and BSD100 HR with blur, noise and JPEG.

For each set, ``OUT/<set>/`` gets the layout ``cli.py bench quality`` reads (runtime.datasets):

    HR/<name>               the original HR file, byte for byte
    LR_bicubic_x4/<name>    the degraded LR PNG, (floor(H/4), floor(W/4)), of HR's top-left
                            multiple-of-4 crop (the folder name is what the reader expects;
                            these LR images are *not* bicubic)
    manifest.json           the degradation model (trainer.degradations.BENCH, in full), the
                            seed, and per image: its seed words, every drawn parameter, LR sha256
    manifest.tsv            one row per image: blur, noise, JPEG quality (the same numbers, flat)

The model is :data:`srgan.trainer.degradations.BENCH`: the classical first-order degradation
(Gaussian blur on HR, exact x4 shrink with a random interpolation, Gaussian or Poisson noise,
JPEG q 30-90), a different model from the second-order one training draws from, with its
own seed words (``[seed, 0xBE4C, crc32(set name), image index]``; training uses
``[seed, step, rank, sample, 0x5EA1]``). Same arguments -> byte-identical LR files.

``--model NAME`` makes the same layout with another model of ``trainer.degradations.DEGRADATIONS``
(e.g. ``real-mean``, the second order training draws from, but with the benchmark's seed words): a
check set for how a model does on input unlike the benchmark's, not the benchmark.

Usage: python benchmarks/make_degraded_bench.py [--out runs/bench_real] [--seed 2016] [--first N] [--model bench]
       [SET_DIR ...]
then: python cli.py bench quality runs/bench_real/Set14 runs/bench_real/BSD100 -o runs/bench_real/results ...
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from srgan.runtime.datasets import DatasetError, discover
from srgan.runtime.imageio import atomic_write, read_image
from srgan.runtime.paths import data_dir
from srgan.trainer.degradations import BENCH, DEGRADATIONS, DegradationConfig, degrade

BENCH_STREAM = 0xBE4C  # seed word that keeps benchmark draws apart from training's (0x5EA1)
DEFAULT_SETS = ("Set14", "BSD100")


def _plain(cfg: DegradationConfig) -> Any:
    """The config as plain JSON types (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buf, format="PNG")
    return buf.getvalue()


def _summary(trace: list[dict[str, Any]]) -> dict[str, Any]:
    """One flat row (manifest.tsv) from an image's trace; ops after the first stage get their stage as a prefix
    (``2_jpeg_quality``, ``final_sinc_omega``: check sets of a second-order model)."""
    row: dict[str, Any] = {}
    for op in trace:
        pre = "" if op["stage"] == "1" else f"{op['stage']}_"
        if op["op"] in ("blur", "sinc"):
            row.update({f"{pre}kernel": op.get("kernel", "sinc"), f"{pre}kernel_size": op["size"]})
            row.update({f"{pre}{k}": round(op[k], 4) for k in ("sigma_x", "sigma_y", "theta", "beta", "omega")
                        if k in op and not (k == "beta" and op[k] == 1.0)})
        elif op["op"] == "resize":
            row[f"{pre}resize_mode"] = op["mode"]
        elif op["op"] == "noise":
            level = op["sigma"] if op["noise"] == "gaussian" else op["scale"]
            row.update({f"{pre}noise": op["noise"], f"{pre}noise_level": round(level, 4),
                        f"{pre}noise_gray": op["gray"]})
        elif op["op"] == "jpeg":
            row[f"{pre}jpeg_quality"] = op["quality"]
    return row


def make_set(src: Path, dst: Path, cfg: DegradationConfig = BENCH, seed: int = 2016,
             first: int | None = None) -> list[dict[str, Any]]:
    """Write ``dst/HR``, ``dst/LR_bicubic_x4`` and the manifests for the benchmark set ``src`` (HR/ layout).

    ``first``: only the first N images by name; each is byte-identical to its file in the full set
    (the seed words depend on the set's name and the image's index, not on N).

    Returns the manifest's per-image entries. Raises DatasetError for a folder without images.
    Every file is written atomically; nothing outside ``dst`` is touched.
    """
    s = cfg.scale
    dst.mkdir(parents=True, exist_ok=True)
    set_word = zlib.crc32(src.name.encode())
    entries = []
    for index, (hr_path, _) in enumerate(discover(src, s)[:first]):
        hr = read_image(hr_path).pixels
        if hr.dtype != np.uint8:
            raise DatasetError(f"{hr_path}: benchmark images must be 8-bit, got {hr.dtype}")
        hr = hr[:, :, :1] if hr.shape[2] in (1, 2) else hr[:, :, :3]  # alpha dropped, as runtime.datasets does
        words = [seed, BENCH_STREAM, set_word, index]
        lr, trace = degrade(np.ascontiguousarray(hr), cfg, np.random.default_rng(words))
        data = _png_bytes(lr)
        with atomic_write(dst / "HR" / hr_path.name, root=dst) as fh:
            fh.write(hr_path.read_bytes())
        with atomic_write(dst / f"LR_bicubic_x{s}" / f"{hr_path.stem}.png", root=dst) as fh:
            fh.write(data)
        entries.append({"name": hr_path.name, "hr_size": [hr.shape[0], hr.shape[1]], "lr_size": list(lr.shape[:2]),
                        "seed_words": words, "lr_sha256": hashlib.sha256(data).hexdigest(), "trace": trace})
    if not entries:
        raise DatasetError(f"no images under {src}")
    manifest = {"source": str(src), "model": _plain(cfg), "seed": seed, "first": first, "images": entries,
                "made_by": "benchmarks/make_degraded_bench.py"}
    with atomic_write(dst / "manifest.json", root=dst) as fh:
        fh.write(json.dumps(manifest, indent=1, sort_keys=True).encode())
    rows = [{"name": e["name"], **_summary(e["trace"])} for e in entries]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    text = "\t".join(columns) + "\n" + "".join("\t".join(str(r.get(c, "")) for c in columns) + "\n" for r in rows)
    with atomic_write(dst / "manifest.tsv", root=dst) as fh:
        fh.write(text.encode())
    return entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="*", type=Path, help="benchmark set folders with HR/ (default Set14, BSD100)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_real"), help="output folder (default runs/bench_real)")
    ap.add_argument("--seed", type=int, default=2016)
    ap.add_argument("--first", type=int, default=None,
                    help="only the first N images of each set (a fixed subset, identical to the full set's files)")
    ap.add_argument("--model", choices=sorted(DEGRADATIONS), default=BENCH.name,
                    help=f"degradation model (default {BENCH.name}, the benchmark's; others make check sets)")
    args = ap.parse_args()
    sets = args.sets or [data_dir() / name for name in DEFAULT_SETS]
    for src in sets:
        if src.name == args.out.name or src.resolve() == args.out.resolve():
            raise SystemExit(f"error: {src} and --out {args.out} would collide; give another --out")
        entries = make_set(src, args.out / src.name, DEGRADATIONS[args.model], seed=args.seed, first=args.first)
        q = [op["quality"] for e in entries for op in e["trace"] if op["op"] == "jpeg"]
        jpeg = f"JPEG q {min(q)}-{max(q)}, mean {np.mean(q):.1f}" if q else "no JPEG"
        print(f"{src.name}: {len(entries)} images -> {args.out / src.name} ({args.model}; {jpeg})")


if __name__ == "__main__":
    main()

"""The default engine (openvino, bf16 where gated in) vs onnxruntime fp32, through the real CLI, as ratios.

Two comparisons, each run interleaved (A, B, A, B, ...) so a shared machine's load
falls on both alike; every run is a fresh ``cli.py upscale`` process whose peak
RSS (VmHWM) is read at its end (benchmarks/bench_memory.py):

1. ``set14``: ``upscale SET14_LR -o OUT -m srresnet --tile 0 --threads 2`` (defaults) vs the same
   with ``--engine onnxruntime --precision fp32``: wall time of the 14 images, and the mean
   Y-PSNR (border 4) of both outputs against Set14 HR.
2. ``big``: the default ``upscale`` (model, tile, memory cap all default) of a 4000x3000 JPEG
   (``--size`` to change it) vs the same with ``--engine onnxruntime --precision fp32``; wall
   time and peak RSS of both. ``--whole-crop N`` adds the whole-image (``--tile 0``) throughput
   of the default engine on an N x N crop, for the tiled/whole throughput ratio.

3. ``interior``: one interior default tile (context = core + 2 x radius) vs a whole-image call on that
   context: the cost of the tiles on a large photo, most of whose tiles are interior.
4. ``ratio``: in one process, interleaved, on a ``--size N`` synthetic image: the default path vs a
   whole-image call on the default engine (the tiles' cost) and vs onnxruntime fp32 at its default tiles.

Usage: python benchmarks/bench_engines.py set14 [--repeats 2]
       python benchmarks/bench_engines.py set14-inproc
       python benchmarks/bench_engines.py interior [--repeats 2]
       python benchmarks/bench_engines.py ratio --size 640 [--repeats 2]
       python benchmarks/bench_engines.py big [--size 4000x3000] [--repeats 1] [--whole-crop 600]
Prints Markdown rows.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_memory import big_image, upscale_peak

from srgan.runtime.imageio import read_image
from srgan.runtime.metrics import psnr
from srgan.runtime.paths import data_dir

REFERENCE = ("--engine", "onnxruntime", "--precision", "fp32")


def _mean_psnr(out_dir: Path, hr_dir: Path) -> float:
    scores = []
    for out in sorted(out_dir.glob("*.png")):
        sr = read_image(out).pixels
        hr = read_image(hr_dir / out.name).pixels
        hr = hr[:sr.shape[0], :sr.shape[1], :sr.shape[2]]
        scores.append(psnr(sr, hr, border=4))
    return float(np.mean(scores))


def set14(repeats: int) -> None:
    lr, hr = data_dir() / "Set14" / "LR_bicubic_x4", data_dir() / "Set14" / "HR"
    cases = {"default (auto engine, auto precision)": (), "--engine onnxruntime --precision fp32": REFERENCE}
    times: dict[str, list[float]] = {k: [] for k in cases}
    peaks: dict[str, list[int]] = {k: [] for k in cases}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {k: Path(tmp) / f"out{i}" for i, k in enumerate(cases)}
        for _ in range(repeats):
            for name, extra in cases.items():
                peak, sec = upscale_peak(lr, outs[name], "srresnet", "--tile", "0", "--threads", "2", *extra)
                times[name].append(sec)
                peaks[name].append(peak)
        scores = {k: _mean_psnr(outs[k], hr) for k in cases}
    ref = statistics.median(times[list(cases)[1]])
    print("| Set14 LR, `-m srresnet --tile 0 --threads 2` | seconds (median) | speed-up | mean Y-PSNR dB "
          "| peak RSS MiB |")
    print("|---|--:|--:|--:|--:|")
    for name in cases:
        sec = statistics.median(times[name])
        print(f"| {name} | {sec:.1f} ({', '.join(f'{t:.1f}' for t in times[name])}) | {ref / sec:.2f}x "
              f"| {scores[name]:.4f} | {max(peaks[name]) / 2**20:.0f} |", flush=True)


def big(size: tuple[int, int], repeats: int, whole_crop: int, reference: bool) -> None:
    w, h = size
    cases = {"default (auto engine, auto precision, default tile and --max-memory)": ()}
    if reference:
        cases["--engine onnxruntime --precision fp32"] = REFERENCE
    out_mp = w * h * 16 / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        src = big_image(Path(tmp) / "big.jpg", height=h, width=w)
        rows: dict[str, list[tuple[int, float]]] = {k: [] for k in cases}
        for _ in range(repeats):
            for name, extra in cases.items():
                rows[name].append(upscale_peak(src, Path(tmp) / "out", "srgan", "--threads", "2", *extra,
                                               timeout=4 * 3600))
        print(f"| {w}x{h} JPEG -> {4 * w}x{4 * h} JPEG, `-m srgan --threads 2` | seconds | output MP/s | speed-up "
              "| peak RSS MiB |")
        print("|---|--:|--:|--:|--:|")
        secs = {k: statistics.median(s for _, s in v) for k, v in rows.items()}
        ref = secs.get("--engine onnxruntime --precision fp32")
        for name, v in rows.items():
            print(f"| {name} | {secs[name]:.0f} | {out_mp / secs[name]:.3f} | "
                  f"{f'{ref / secs[name]:.2f}x' if ref else 'n/a'} | {max(p for p, _ in v) / 2**20:.0f} |", flush=True)
        if whole_crop:
            crop = big_image(Path(tmp) / "crop.jpg", height=whole_crop, width=whole_crop)
            tiled = upscale_peak(crop, Path(tmp) / "c1", "srgan", "--threads", "2")
            whole = upscale_peak(crop, Path(tmp) / "c2", "srgan", "--threads", "2", "--tile", "0", "--max-memory", "0")
            mp = whole_crop * whole_crop * 16 / 1e6
            print(f"| {whole_crop}x{whole_crop} crop, default tiles | {tiled[1]:.0f} | {mp / tiled[1]:.3f} | | "
                  f"{tiled[0] / 2**20:.0f} |")
            print(f"| {whole_crop}x{whole_crop} crop, `--tile 0 --max-memory 0` (whole image) | {whole[1]:.0f} | "
                  f"{mp / whole[1]:.3f} | | {whole[0] / 2**20:.0f} |")
            print(f"| big default vs whole-image throughput | | {out_mp / secs[list(cases)[0]] / (mp / whole[1]):.2f} "
                  "| | |", flush=True)


def set14_inproc() -> None:
    """Set14 LR whole images in one process, models loaded once, engines interleaved per image:
    onnxruntime fp32 vs the default (first sight of each size, then warm)."""
    import time

    from srgan.runtime.pipeline import upscale_image
    from srgan.runtime.registry import resolve_model
    from srgan.runtime.session import load_model

    t = time.perf_counter()
    fast = load_model(resolve_model("srresnet"), device="cpu", threads=2)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    ref = load_model(resolve_model("srresnet"), device="cpu", threads=2, engine="onnxruntime", precision="fp32")
    t_ref = time.perf_counter() - t
    total = {"default, first": 0.0, "onnxruntime fp32": 0.0, "default, warm": 0.0}
    for p in sorted((data_dir() / "Set14" / "LR_bicubic_x4").glob("*.png")):
        img = read_image(p).pixels
        for name, m in zip(total, (fast, ref, fast), strict=True):
            t = time.perf_counter()
            upscale_image(img, m, tile=0)
            total[name] += time.perf_counter() - t
    print(f"load: {fast.runs_on} {t_fast:.1f} s, {ref.runs_on} {t_ref:.1f} s")
    for name, sec in total.items():
        print(f"| {name} | {sec:.1f} s | {total['onnxruntime fp32'] / sec:.2f}x |", flush=True)


def interior(repeats: int) -> None:
    """The throughput of one interior default tile (core = the fitted tile, context = core + 2 x radius:
    what most of a large photo is made of) relative to a whole-image call on the same context, interleaved."""
    import time

    from srgan.runtime.defaults import DEFAULT_MAX_MEMORY, DEFAULT_TILE
    from srgan.runtime.registry import resolve_model
    from srgan.runtime.session import load_model
    from srgan.runtime.tiler import fit_tile

    m = load_model(resolve_model("srgan"), device="cpu", threads=2)
    core = fit_tile(DEFAULT_TILE, m.receptive_radius, m.bytes_per_pixel, DEFAULT_MAX_MEMORY)
    pad = m.receptive_radius
    n = core + 2 * pad
    x = np.random.default_rng(0).random((1, 3, n, n), dtype=np.float32)
    m(x[:, :, :64, :64])
    whole, tile = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        m(x)
        whole.append(time.perf_counter() - t)
        t = time.perf_counter()
        m.upscale_region(x, (pad, pad + core, pad, pad + core))
        tile.append(time.perf_counter() - t)
    w, r = statistics.median(whole), statistics.median(tile)
    print(f"{m.runs_on}: whole {n}x{n} call {w:.1f} s, interior {core}-px tile of it {r:.1f} s; "
          f"tile throughput / whole-image throughput = {(core * core / r) / (n * n / w):.3f}", flush=True)


def ratio(size: int, repeats: int, reference: bool = True) -> None:
    """In one process, interleaved: the default path (default tile and --max-memory) vs a whole-image call,
    both on the default engine, and onnxruntime fp32 at its default tiles, on a size x size image."""
    import time

    from srgan.runtime.defaults import DEFAULT_MAX_MEMORY, DEFAULT_TILE
    from srgan.runtime.pipeline import upscale_image
    from srgan.runtime.registry import resolve_model
    from srgan.runtime.session import load_model
    from srgan.runtime.tiler import fit_tile

    with tempfile.TemporaryDirectory() as tmp:
        img = read_image(big_image(Path(tmp) / "x.png", height=size, width=size)).pixels
    fast = load_model(resolve_model("srgan"), device="cpu", threads=2)
    ref = load_model(resolve_model("srgan"), device="cpu", threads=2, engine="onnxruntime", precision="fp32")
    def fitted(m: object) -> int:
        return fit_tile(DEFAULT_TILE, m.receptive_radius, m.bytes_per_pixel, DEFAULT_MAX_MEMORY)  # type: ignore

    cases = {f"default: {fast.runs_on}, tile {fitted(fast)}": (fast, DEFAULT_TILE, DEFAULT_MAX_MEMORY),
             f"whole image: {fast.runs_on}, --tile 0": (fast, 0, None),
             f"{ref.runs_on}, tile {fitted(ref)}": (ref, DEFAULT_TILE, DEFAULT_MAX_MEMORY)}
    if not reference:
        cases.pop(list(cases)[2])
    times: dict[str, list[float]] = {k: [] for k in cases}
    outs = {}
    for _ in range(repeats):
        for name, (m, tile, cap) in cases.items():
            t = time.perf_counter()
            outs[name] = upscale_image(img, m, tile=tile, max_memory=cap)
            times[name].append(time.perf_counter() - t)
    names = list(cases)
    whole = statistics.median(times[names[1]])
    base = statistics.median(times[names[2]]) if reference else float("nan")
    print(f"| {size}x{size} synthetic, `-m srgan --threads 2`, in one process | seconds (median of {repeats}) "
          "| output MP/s | vs whole image | vs onnxruntime fp32 |")
    print("|---|--:|--:|--:|--:|")
    for name in names:
        sec = statistics.median(times[name])
        print(f"| {name} | {sec:.1f} | {size * size * 16 / 1e6 / sec:.3f} | {whole / sec:.2f} | {base / sec:.2f}x |")
    d = np.abs(outs[names[0]].astype(int) - outs[names[1]])
    print(f"\ndefault tiles vs whole image (bf16): max {d.max()} / mean {d.mean():.4f} 8-bit levels", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=["set14", "set14-inproc", "big", "ratio", "interior"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--whole-crop", type=int, default=0)
    ap.add_argument("--no-reference", action="store_true", help="big, ratio: skip the onnxruntime fp32 run")
    a = ap.parse_args()
    if a.which == "set14":
        set14(a.repeats)
    elif a.which == "interior":
        interior(a.repeats)
    elif a.which == "set14-inproc":
        set14_inproc()
    elif a.which == "ratio":
        ratio(int(a.size.lower().split("x")[0]), a.repeats, not a.no_reference)
    else:
        w, h = map(int, a.size.lower().split("x"))
        big((w, h), a.repeats, a.whole_crop, not a.no_reference)


if __name__ == "__main__":
    sys.exit(main())

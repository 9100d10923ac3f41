"""Peak memory of ``cli.py upscale`` on a 4000x3000 photo-sized input, in a fresh process each.

Each case runs the real CLI (``upscale BIG -o OUT --tile 256 --model M``) in its
own Python process and reports that process's peak resident set (Linux VmHWM,
which unlike ``ru_maxrss`` does not inherit the parent's peak), the wall time
and output megapixels per second. Usage (several models, JPEG and PNG):

    python benchmarks/bench_memory.py models/srresnet_x4.onnx [--format jpg png] [--threads 2] [--max-memory 512]

Prints one Markdown table row per case. ``tests/test_memory.py`` uses the same
functions with assertions.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

# Runs the real CLI in this process and prints its exit code and its own peak RSS in bytes.
_MEASURE = """
import re, sys
sys.path.insert(0, {root!r})
from srgan import cli
try:
    cli.app(sys.argv[1:])
except SystemExit as e:
    code = e.code
status = open("/proc/self/status").read()
print(code, int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024)
"""


def big_image(path: Path, height: int = 3000, width: int = 4000) -> Path:
    """A smooth synthetic RGB image (sizes of a 12 MP camera photo), saved to ``path`` (JPEG q90 or PNG)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(xx / 37 + yy / 53), 128 + 100 * np.sin(xx / 23 - yy / 41),
                    128 + 100 * np.cos(xx / 61 + yy / 29)], axis=2).astype(np.uint8)
    Image.fromarray(img).save(path, quality=90, compress_level=1)
    return path


def upscale_peak(src: Path, out_dir: Path, model: Path | str, *args: str, timeout: float = 3600) -> tuple[int, float]:
    """Run ``cli.py upscale SRC -o OUT_DIR --model MODEL --device cpu ARGS`` in a fresh process.

    Returns (peak RSS bytes, wall seconds). Raises RuntimeError if the CLI fails.
    """
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _MEASURE.format(root=str(ROOT)), "upscale", str(src), "-o", str(out_dir),
                        "--model", str(model), "--device", "cpu", "--overwrite", *args],
                       capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    try:
        code, peak = map(int, r.stdout.split()[-2:])
    except ValueError:
        raise RuntimeError(f"upscale did not report: {r.stderr[-2000:]}") from None
    if code != 0:
        raise RuntimeError(f"upscale exited {code}: {r.stderr[-2000:]}")
    return peak, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--format", nargs="+", default=["jpg"], choices=["jpg", "png"])
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-memory", type=int, default=None, help="MiB (default: the CLI's)")
    a = ap.parse_args()
    print("| model | input -> output | --tile | --max-memory MiB | threads | peak RSS MiB | seconds | output MP/s |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in a.format:
            src = big_image(Path(tmp) / f"big.{fmt}")
            for model in a.models:
                extra = ["--tile", str(a.tile), "--threads", str(a.threads)]
                if a.max_memory is not None:
                    extra += ["--max-memory", str(a.max_memory)]
                peak, sec = upscale_peak(src, Path(tmp) / "out", model, *extra)
                print(f"| {Path(model).name} | 4000x3000 {fmt} -> 16000x12000 {fmt} | {a.tile} | "
                      f"{a.max_memory if a.max_memory is not None else 'default'} | {a.threads or 'all'} | "
                      f"{peak / 2**20:.0f} | {sec:.0f} | {192 / sec:.2f} |", flush=True)


if __name__ == "__main__":
    main()

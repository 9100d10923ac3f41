"""Throughput of the runtime's upscale vs PyTorch eager, against the machine's fp32 matmul peak.

Measures, in one run on one machine:
- ``runtime.pipeline.upscale_image`` (onnxruntime, CPU) on an SRResNet-16 x4, in
  output megapixels per second, at --tile 64/128/256/whole and 1 and 2 threads;
- the same network in PyTorch eager (whole image, inference mode), 1 and 2 threads;
- fp32 matmul GFLOP/s (torch.mm, 2048x2048), 1 and 2 threads;
- the achieved fraction of that peak, counting the network's useful FLOPs per
  output pixel (measured with forward hooks, ~0.28 TFLOP per output MP); tiles
  also compute their overlap, shown as the "overlap" factor.

The network has random weights (trainer.models.SRResNet, exported here with
torch.onnx): speed does not depend on the weight values. Needs the train/export
extras (torch, onnx). Writes its table into benchmarks/RESULTS.md between
markers and prints it. Usage: python benchmarks/bench_upscale.py [--size 288] [--repeats 1]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START, END = "<!-- bench_upscale:start -->", "<!-- bench_upscale:end -->"


def srresnet_onnx(path: Path):
    """Export a random-weight SRResNet-16 x4 to ``path`` with metadata; return the torch model."""
    import onnx
    import torch

    from srgan.trainer.models import SRResNet

    torch.manual_seed(0)
    net = SRResNet(scale=4, channels=64, blocks=16, bn=True).eval()
    x = torch.rand(1, 3, 48, 48)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter still works
    torch.onnx.export(net, (x,), str(path), input_names=["lr"], output_names=["sr"], opset_version=17,
                      dynamic_axes={"lr": {0: "N", 2: "H", 3: "W"}, "sr": {0: "N", 2: "H4", 3: "W4"}},
                      dynamo=False)
    model = onnx.load(str(path))
    # head 9x9 (4) + 16 blocks x 2 convs (32) + trunk (1) + up-conv at x1 (1) and x2 (0.5) + tail 9x9 at x4 (1)
    for key, value in {"scale": "4", "receptive_radius": "40", "input_range": "0-1", "arch": "srresnet",
                       "note": "random weights, benchmark only"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return net


def flops_per_output_pixel(net) -> float:
    """Useful FLOPs (2 x multiply-adds of every conv) per output pixel, from one hooked forward pass."""
    import torch

    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += 2 * out.numel() * k * mod.in_channels // mod.groups

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        out = net(torch.rand(1, 3, 32, 32))
    for h in handles:
        h.remove()
    return total / (out.shape[2] * out.shape[3])


def best_of(fn, repeats: int, warmup=None) -> float:
    (warmup or fn)()  # session/graph caches, thread pools
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    return 2 * n ** 3 / best_of(lambda: torch.mm(a, b), repeats) / 1e9


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import onnxruntime
    import torch

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{cpu}; {os.cpu_count()} logical CPUs; load average before the run {load}; "
            f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, "
            f"numpy {np.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=288, help="LR side of the test image (px)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    import torch
    from skimage.data import astronaut

    from srgan.runtime.pipeline import upscale_image
    from srgan.runtime.resize import imresize
    from srgan.runtime.session import load_model
    from srgan.runtime.tiler import plan_tiles

    info = machine()
    lr = imresize(astronaut(), args.size / 512)[: args.size, : args.size]
    out_mp = lr.shape[0] * lr.shape[1] * 16 / 1e6
    rows: list[tuple[str, int, str, float, str]] = []  # (engine, threads, tile, MP/s, overlap)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "srresnet16_random.onnx"
        net = srresnet_onnx(path)
        flop_px = flops_per_output_pixel(net)
        peaks = {t: matmul_gflops(t) for t in (1, 2)}
        for threads in (1, 2):
            model = load_model(path, device="cpu", threads=threads)
            for tile in (64, 128, 256, 0):
                warm = lr[:64, :64]
                seconds = best_of(lambda m=model, t=tile: upscale_image(lr, m, tile=t, max_memory=None),
                                  args.repeats,
                                  warmup=lambda m=model, t=tile, c=warm: upscale_image(c, m, tile=t, max_memory=None))
                ctx = sum((t.ctx[1] - t.ctx[0]) * (t.ctx[3] - t.ctx[2])
                          for t in plan_tiles(*lr.shape[:2], tile, model.receptive_radius))
                rows.append(("onnxruntime", threads, str(tile or "whole"), out_mp / seconds,
                             f"{ctx / (lr.shape[0] * lr.shape[1]):.2f}"))
            torch.set_num_threads(threads)
            x = torch.from_numpy(lr.transpose(2, 0, 1)[None].astype(np.float32) / 255)
            with torch.inference_mode():
                seconds = best_of(lambda x=x: net(x).clamp_(0, 1), args.repeats,
                                  warmup=lambda x=x: net(x[..., :64, :64]))
            rows.append(("torch eager", threads, "whole", out_mp / seconds, "1.00"))

    lines = [
        f"## upscale throughput (benchmarks/bench_upscale.py, {dt.date.today().isoformat()})",
        "",
        f"Machine: {info}.",
        f"Model: SRResNet-16 x4 with **random weights** (speed does not depend on them), "
        f"{flop_px * 1e6 / 1e12:.3f} TFLOP per output MP (measured with conv hooks). "
        f"Input {lr.shape[1]}x{lr.shape[0]} LR -> {out_mp:.2f} output MP, in memory "
        f"(`upscale_image`, no file I/O), best of {args.repeats} after a warm-up on a 64x64 crop.",
        f"fp32 matmul peak (torch.mm 2048x2048): {peaks[1]:.1f} GFLOP/s on 1 thread, {peaks[2]:.1f} on 2.",
        "'overlap' = LR pixels computed / LR pixels in the image (tile context, pad = receptive radius 40); "
        "it explains most of the cost of small tiles.",
        "When the load average exceeds the core count, other processes compete for the cores: "
        "the 2-thread rows then cannot show a speed-up, and all rows are lower bounds.",
        "",
        "| engine | threads | tile | output MP/s | useful GFLOP/s | fraction of matmul peak | overlap |",
        "|---|---|---|---|---|---|---|",
    ]
    for engine, threads, tile, mps, overlap in rows:
        gflops = mps * 1e6 * flop_px / 1e9
        lines.append(f"| {engine} | {threads} | {tile} | {mps:.3f} | {gflops:.1f} | "
                     f"{gflops / peaks[threads]:.0%} | {overlap} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_write:
        results = ROOT / "benchmarks" / "RESULTS.md"
        text = results.read_text() if results.exists() else "# Benchmark results\n"
        section = f"{START}\n{table}{END}"
        if START in text:
            text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        results.write_text(text)
        print(f"wrote {results}")


if __name__ == "__main__":
    main()

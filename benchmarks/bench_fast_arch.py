"""The fast generator against SRResNet-16: multiply-adds per LR pixel, parameters and CPU
throughput on the same engine and thread count, measured in one run (interleaved, so load
from other processes falls on both models alike).

    python benchmarks/bench_fast_arch.py runs/fast_psnr/generator.pt [--reference models/srresnet_x4.onnx]
        [--size 256] [--threads 1 2] [--runs 5] [-o benchmarks/results/fast_arch]

The checkpoint is exported with ``export.onnx_export.export_generator`` (deploy form, parity
checked against the checkpoint) into the output folder; MACs come from
``runtime.bench.count_macs`` on both ONNX files. Writes ``fast_arch.json`` and prints a
markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from srgan.export.onnx_export import export_generator
from srgan.runtime.bench import count_macs, machine_info
from srgan.runtime.engines import ENGINES
from srgan.runtime.session import load_model


def _params(path: Path) -> int:
    import onnx

    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def _untrained(preset_name: str, path: Path) -> Path:
    import dataclasses

    import torch

    from srgan.trainer.checkpoint import save_checkpoint
    from srgan.trainer.config import preset
    from srgan.trainer.models import build_generator

    cfg = preset(preset_name)
    torch.manual_seed(0)
    g = build_generator(cfg.arch, **cfg.model_kwargs())
    save_checkpoint({"format_version": 1, "arch": cfg.arch, "hparams": g.hparams, "g": g.state_dict(),
                     "g_ema": None, "step": 0, "phase": 1, "warmup_steps": 0, "config": dataclasses.asdict(cfg),
                     "content_loss": None, "train_images": 0}, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="trainer checkpoint (.pt), or a preset name (e.g. fast-psnr) for an "
                                       "untrained network of that preset's architecture (speed does not depend "
                                       "on the weights; MACs and parameters neither)")
    ap.add_argument("--reference", type=Path, default=Path("models/srresnet_x4.onnx"))
    ap.add_argument("--size", type=int, default=256, help="LR side of the timed image")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("-o", "--out", type=Path, default=Path("benchmarks/results/fast_arch"))
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    fast = args.out / "fast_candidate_x4.onnx"
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        checkpoint = _untrained(args.checkpoint, args.out / "untrained" / "generator.pt")
    report = export_generator(checkpoint, fast)
    models = {"fast": fast, "reference": args.reference}
    result: dict = {"machine": machine_info(), "size": args.size, "runs": args.runs,
                    "receptive_radius": {"derived": report.receptive_radius, "measured": report.measured_radius},
                    "parity_max_abs": report.parity.max_abs, "models": {}, "timing": []}
    for name, path in models.items():
        result["models"][name] = {"path": str(path), "macs_per_lr_pixel": count_macs(path).per_lr_pixel,
                                  "params": _params(path)}
    x = np.random.default_rng(0).random((1, 3, args.size, args.size), dtype=np.float32)
    engines = [e for e in ("onnxruntime", "openvino") if e in ENGINES]
    for engine in engines:
        for threads in args.threads:
            try:
                sessions = {n: load_model(p, device="cpu", threads=threads, engine=engine, precision="fp32")
                            for n, p in models.items()}
            except Exception as exc:  # an engine that is not installed here: say so, do not fall back
                result["timing"].append({"engine": engine, "threads": threads, "error": str(exc)})
                continue
            times: dict[str, list[float]] = {n: [] for n in sessions}
            for s in sessions.values():  # warm-up
                s(x)
            for _ in range(args.runs):
                for n, s in sessions.items():
                    t0 = time.perf_counter()
                    s(x)
                    times[n].append(time.perf_counter() - t0)
            med = {n: statistics.median(t) for n, t in times.items()}
            row = {"engine": engine, "threads": threads, "seconds": med,
                   "lr_mpix_per_s": {n: args.size ** 2 / t / 1e6 for n, t in med.items()},
                   "speedup": med["reference"] / med["fast"]}
            result["timing"].append(row)
            print(f"{engine} threads={threads}: fast {med['fast']*1000:.0f} ms, reference "
                  f"{med['reference']*1000:.0f} ms, speed-up {row['speedup']:.2f}x", flush=True)
    (args.out / "fast_arch.json").write_text(json.dumps(result, indent=2, default=str))
    f, r = result["models"]["fast"], result["models"]["reference"]
    print(f"\n| model | MACs / LR px | params |\n|---|---|---|\n| fast | {f['macs_per_lr_pixel']/1e6:.3f} M | "
          f"{f['params']:,} |\n| reference | {r['macs_per_lr_pixel']/1e6:.3f} M | {r['params']:,} |\n"
          f"MAC ratio: {r['macs_per_lr_pixel'] / f['macs_per_lr_pixel']:.2f}x; receptive radius "
          f"{report.receptive_radius} (measured {report.measured_radius}); parity {report.parity.max_abs:.2e}")


if __name__ == "__main__":
    main()

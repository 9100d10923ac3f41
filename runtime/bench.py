"""Benchmarks behind ``cli.py bench``: latency (with a fraction of the machine's peak) and quality vs peers.

Latency (:func:`bench_latency`): an SR model on one synthetic LR image, for
each tile size x thread count x execution provider: warm-up runs, then the
median of N timed runs of :func:`runtime.pipeline.upscale_image`, giving ms per
tile, output megapixels per second and peak RSS. In the same run it measures
the machine's fp32 matmul throughput (:func:`matmul_gflops`, numpy's BLAS at
the same thread count) and counts the model's multiply-adds per LR pixel from
its ONNX graph (:func:`count_macs`), so each row also says what fraction of
that peak the model achieved on useful work (:func:`achieved`).

Quality (:func:`bench_quality`): each method (an :data:`Upscale`: the model,
MATLAB bicubic, peers from :mod:`runtime.peers`) runs on the same LR images
of each dataset folder (``HR/`` + optional ``LR_bicubic_x{s}/``), scored with
:func:`runtime.grids.score_one` (PSNR / SSIM on Y, border = scale, gray
references on their gray values; LPIPS when a scorer is given), and timed.
Writers: :func:`write_quality` and :func:`write_latency` (CSV, Markdown, PNG).
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import charts, grids
from .datasets import Sample, load_dataset
from .errors import UsageError
from .imageio import atomic_write
from .peers import Upscale
from .reports import LatencyReport, LatencyRow, MacCount, QualityReport, QualityRow, QualitySummary

__all__ = [
    "Upscale", "Sample", "QualityRow", "QualitySummary", "QualityReport", "load_dataset", "bench_quality",
    "read_quality_rows", "write_quality", "quality_markdown", "MacCount", "count_macs", "matmul_gflops", "achieved",
    "engine_matmul_gflops", "DEFAULT_ENGINES",
    "LatencyRow", "LatencyReport", "bench_latency", "write_latency", "latency_markdown", "machine_info",
    "DEFAULT_TILES",
]

log = logging.getLogger(__name__)

#: Tile sides benchmarked by default (LR pixels; 0 = the whole image in one call).
DEFAULT_TILES = (64, 128, 256, 0)
#: (engine, precision) pairs benchmarked on the CPU by default (those that cannot run here are skipped).
DEFAULT_ENGINES = (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"))
_PROVIDER_DEVICE = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda"}


# ---------------------------------------------------------------- machine

def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _blas_name() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        return str(cfg["Build Dependencies"]["blas"]["name"])
    except Exception:  # numpy's config layout is not a stable API; the name is only a label
        return "unknown BLAS"


def machine_info() -> dict[str, str]:
    """Where and when a benchmark ran: date (UTC), CPU, cores, load, library versions."""
    import onnxruntime as ort

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_name(),
        "cores": str(os.cpu_count()),
        "load_1min": f"{load[0]:.2f}",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": f"{ort.__version__} ({', '.join(ort.get_available_providers())})",
        "numpy": f"{np.__version__} ({_blas_name()})",
    }


def _machine_lines(info: dict[str, str]) -> list[str]:
    return [f"- {k}: {v}" for k, v in info.items()]


# ---------------------------------------------------------------- peak RSS

def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs``); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak resident set size in MiB since the last reset (Linux), else since process start."""
    try:
        m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        if m:
            return int(m.group(1)) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux)."""
    m = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    if m is None:
        raise OSError("no VmRSS in /proc/self/status")
    return int(m.group(1)) / 1024


def measure_memory_per_pixel(path: str | Path, sizes: tuple[int, ...] = (128, 192), *,
                             engine: str = "onnxruntime", precision: str = "fp32") -> int | None:
    """Host memory one CPU inference call takes per LR input pixel, in bytes, measured.

    For each size a fresh session of ``engine`` / ``precision`` runs one size x size
    input; the rise of the peak RSS above the resident set just before the call,
    divided by the input's pixels, is that size's figure, and the largest is
    returned (what the tiler's memory budget uses: ``memory_bytes_per_pixel``
    metadata, per engine in ``memory_bytes_per_pixel_by_engine``).
    None where the peak cannot be reset (not Linux).
    """
    from .session import load_model

    worst = 0.0
    for n in sizes:
        model = load_model(path, device="cpu", engine=engine, precision=precision)
        x = np.full((1, 3, n, n), 0.5, np.float32)
        before = _rss_mb()
        if not _reset_peak_rss():
            return None
        model(x)
        worst = max(worst, (_peak_rss_mb() - before) * (1 << 20) / (n * n))
        del model
    return int(math.ceil(worst))


# ---------------------------------------------------------------- FLOPs and peak

_MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _node_macs(node: Any, shape: Callable[[str], tuple[int, ...]]) -> int:  # node: onnx.NodeProto
    """MACs of one Conv / ConvTranspose / MatMul / Gemm node, from its concrete input and output shapes."""
    out = shape(node.output[0])
    if node.op_type == "Conv":  # every output value: Cin/group * kh * kw MACs
        return int(np.prod(out, dtype=np.int64)) * int(np.prod(shape(node.input[1])[1:], dtype=np.int64))
    if node.op_type == "ConvTranspose":  # every input value is spread over Cout/group * kh * kw outputs
        return int(np.prod(shape(node.input[0]), dtype=np.int64)) * int(np.prod(shape(node.input[1])[1:],
                                                                                 dtype=np.int64))
    a = shape(node.input[0])
    if node.op_type == "MatMul":
        return int(np.prod(out, dtype=np.int64)) * a[-1]
    trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
    return int(np.prod(out, dtype=np.int64)) * (a[0] if trans_a else a[1])


def count_macs(path: str | Path, probe_hw: tuple[int, int] = (32, 48)) -> MacCount:
    """Count the multiply-adds of Conv, ConvTranspose, MatMul and Gemm nodes per LR input pixel.

    The shapes come from running the model once on a (1, 3, *probe_hw) input
    with the needed intermediate values exposed as outputs, so models whose
    shapes shape inference cannot follow are counted too. Other ops (adds,
    activations, resizes) are not counted: they are a small share of an SR
    network's work. Needs the ``onnx`` package (``bench`` extra): raises
    :class:`~runtime.errors.UsageError` without it.
    """
    try:
        import onnx
    except ImportError:
        raise UsageError("counting FLOPs needs the onnx package: pip install 'srgan-toolkit[bench]'") from None
    import onnxruntime as ort

    proto = onnx.load(str(path))
    graph = proto.graph
    known = {i.name: tuple(int(d) for d in i.dims) for i in graph.initializer}
    nodes = [n for n in graph.node if n.op_type in _MAC_OPS]
    wanted = {name for n in nodes for name in (n.input[0], n.input[1], n.output[0]) if name and name not in known}
    present = {o.name for o in graph.output}
    graph.output.extend(onnx.ValueInfoProto(name=name) for name in sorted(wanted - present))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node as written
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    h, w = probe_hw
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(names, {inp.name: np.full((1, 3, h, w), 0.5, dtype)})))
    by_op: dict[str, float] = {}
    for n in nodes:
        macs = _node_macs(n, lambda name: known[name] if name in known else tuple(values[name].shape))
        by_op[n.op_type] = by_op.get(n.op_type, 0.0) + macs / (h * w)
    return MacCount(sum(by_op.values()), by_op)


_MATMUL_CODE = """
import sys, time
import numpy as np
n, runs = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
a @ b
times = []
for _ in range(runs):
    t = time.perf_counter(); a @ b; times.append(time.perf_counter() - t)
print(min(times))
"""


def matmul_gflops(threads: int = 0, *, n: int = 2048, runs: int = 10) -> float:
    """The machine's fp32 peak in GFLOP/s: the fastest of ``runs`` n x n sgemm calls (2 n^3 FLOP each; a
    peak is what the hardware can do, so the best run, not a typical one, which a neighbour's load lowers).

    Runs numpy's BLAS in a child process whose BLAS thread count is ``threads``
    (0 = the library's default, all cores), since most BLAS libraries read it
    only at start. Raises RuntimeError if the child fails.
    """
    env = dict(os.environ)
    # Tuning overrides some machines set for other programs slow current OpenBLAS down: unset here only.
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
            env[var] = str(threads)
    done = subprocess.run([sys.executable, "-c", _MATMUL_CODE, str(n), str(runs)], env=env, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"matmul benchmark failed: {done.stderr.strip()[-500:]}")
    return 2.0 * n ** 3 / float(done.stdout.strip()) / 1e9


def engine_matmul_gflops(engine: str, precision: str, threads: int = 0, *, n: int = 2048, runs: int = 10) -> float:
    """Throughput in GFLOP/s of the engine's own n x n MatMul (constant weights) at ``precision``: the peak
    its convolutions can be held to (2 n^3 FLOP per call; the fastest of ``runs`` after one warm-up).
    Needs the ``onnx`` package (``bench`` extra): raises UsageError without it; raises as
    :func:`runtime.engines.open_session` for an engine or precision that cannot run here."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise UsageError("the engine matmul peak needs the onnx package: pip install 'srgan-toolkit[bench]'") from None
    import tempfile

    from .engines import open_session

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(rng.random((n, n), np.float32), "b")])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        sess = open_session(path, engine=engine, precision=precision, device="cpu", threads=threads, gated=False)
    a = {"a": rng.random((n, n), np.float32)}
    sess.run(a)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(a)
        times.append(time.perf_counter() - t)
    return 2.0 * n ** 3 / min(times) / 1e9


def achieved(macs_per_lr_pixel: float, lr_pixels: float, seconds: float, peak_gflops: float) -> tuple[float, float]:
    """(GFLOP/s achieved, fraction of ``peak_gflops``) for ``lr_pixels`` upscaled in ``seconds``.

    One multiply-add counts as 2 FLOP. Example: 1e6 MACs per pixel, 1000
    pixels in 0.5 s is 4 GFLOP/s, 0.1 of a 40 GFLOP/s peak.
    """
    if seconds <= 0 or peak_gflops <= 0:
        raise ValueError(f"seconds and peak must be positive, got {seconds}, {peak_gflops}")
    gflops = 2.0 * macs_per_lr_pixel * lr_pixels / seconds / 1e9
    return gflops, gflops / peak_gflops


# ---------------------------------------------------------------- latency

def _engine_setups(providers: Sequence[str], engines: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(provider, engine, precision) to run: each CPU engine pair (defaults: those that run here), and
    onnxruntime in the graph's precision on CUDA."""
    from .engines import ENGINES, cpu_supports

    out = []
    for provider in providers:
        if _PROVIDER_DEVICE[provider] != "cpu":
            out.append((provider, "onnxruntime", "auto"))
            continue
        pairs = list(engines) or [(e, p) for e, p in DEFAULT_ENGINES
                                  if ENGINES[e].available() and (e == "onnxruntime" or cpu_supports(p))]
        out += [(provider, e, p) for e, p in pairs]
    return out


def _measure_peaks(peaks: dict[tuple[str, int], float], engine: str, precision: str, threads: int, n: int,
                   progress: Callable[[str], None] | None) -> None:
    """Fill ``peaks[(precision, threads)]`` with the fastest GEMM of that precision (numpy sgemm for fp32,
    and the engine's own MatMul), once per key."""
    if (precision, threads) in peaks:
        return
    found = {f"{engine} MatMul {precision}": engine_matmul_gflops(engine, precision, threads, n=n)}
    if precision == "fp32":
        found["numpy sgemm"] = matmul_gflops(threads, n=n)
    for name, value in found.items():
        _say(progress, f"{name} peak at {threads} threads: {value:.1f} GFLOP/s")
    peaks[(precision, threads)] = max(found.values())


def _bench_image(h: int, w: int) -> np.ndarray:
    """A deterministic smooth-plus-noise (h, w, 3) uint8 image (conv cost does not depend on content)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [0.5 + 0.35 * np.sin(xx / (3 + i) + yy / (5 + 2 * i)) + 0.1 * rng.random((h, w)) for i in range(3)]
    img: np.ndarray = np.round(np.clip(np.stack(planes, axis=2), 0, 1) * 255).astype(np.uint8)
    return img


def bench_latency(model_path: str | Path, *, tiles: Sequence[int] = DEFAULT_TILES, threads: Sequence[int] = (),
                  providers: Sequence[str] = (), lr_size: tuple[int, int] = (320, 320), runs: int = 3,
                  warmup: int = 1, matmul_n: int = 2048, engines: Sequence[tuple[str, str]] = (),
                  progress: Callable[[str], None] | None = None) -> LatencyReport:
    """Time ``upscale_image`` on an ``lr_size`` (h, w) image for every tile x threads x provider x engine.

    ``threads``: intra-op thread counts (default 1 and all cores; ignored on
    CUDA). ``providers``: onnxruntime provider names (default every available
    one of CPU and CUDA). ``engines``: (engine, precision) pairs run on the CPU
    (default :data:`DEFAULT_ENGINES`, skipping those this machine cannot run; an
    explicit pair that cannot run raises EngineError); the row's ``provider`` reads
    e.g. ``openvino bf16``. ``matmul_n``: side of the peak-measuring matmul
    (0 = do not measure): each row's peak is the fastest GEMM of its precision
    measured in this run (numpy's sgemm for fp32, and the engine's own MatMul).
    Tile sizes run smallest first, whole image last, in a fresh session per
    (provider, threads, engine), so each row's peak RSS is its own
    (memory the session already holds counts, as it would in a real run).

    Raises :class:`~runtime.errors.ModelError` / :class:`~runtime.errors.DeviceError`
    from loading, UsageError for bad arguments.
    """
    import onnxruntime as ort

    from .pipeline import upscale_image
    from .session import load_model
    from .tiler import plan_tiles

    if runs < 1 or warmup < 0 or min(lr_size) < 1:
        raise UsageError(f"need runs >= 1, warmup >= 0 and a positive size, got {runs}, {warmup}, {lr_size}")
    if any(t < 0 for t in tiles):
        raise UsageError(f"tile sizes must be >= 0 (0 = whole image), got {list(tiles)}")
    available = [p for p in ort.get_available_providers() if p in _PROVIDER_DEVICE]
    providers = list(providers) or available
    for p in providers:
        if p not in available:
            raise UsageError(f"provider {p} is not available here (available: {', '.join(available)})")
    threads = sorted(set(threads)) or sorted({1, os.cpu_count() or 1})
    order = sorted(set(tiles), key=lambda t: (t == 0, t))
    macs, note = None, ""
    try:
        macs = count_macs(model_path)
    except UsageError as e:
        note = str(e)
    report = LatencyReport(Path(model_path), lr_size, 0, runs, macs, note, machine=machine_info())
    img = _bench_image(*lr_size)
    lr_pixels = lr_size[0] * lr_size[1]
    setups = _engine_setups(providers, engines)
    peaks: dict[tuple[str, int], float] = {}
    for provider, engine, precision in setups:
        device = _PROVIDER_DEVICE[provider]
        for n_threads in threads if device == "cpu" else [0]:
            model = load_model(model_path, device=device, threads=n_threads,  # type: ignore[arg-type]
                               engine=engine, precision=precision)
            if device == "cpu" and matmul_n:
                _measure_peaks(peaks, model.engine, model.precision, n_threads, matmul_n, progress)
            peak = peaks.get((model.precision, n_threads)) if device == "cpu" else None
            label = provider if device != "cpu" else f"{model.engine} {model.precision}"
            report.scale, pad = model.scale, model.receptive_radius
            for tile in order:
                n_tiles = len(plan_tiles(*lr_size, tile, pad))
                _reset_peak_rss()
                for _ in range(warmup):
                    upscale_image(img, model, tile=tile, max_memory=None)
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    out = upscale_image(img, model, tile=tile, max_memory=None)
                    times.append(time.perf_counter() - t0)
                sec = statistics.median(times)
                gflops = frac = None
                if macs is not None and peak:
                    gflops, frac = achieved(macs.per_lr_pixel, lr_pixels, sec, peak)
                row = LatencyRow(label, n_threads, tile, n_tiles, 1000 * sec / n_tiles, 1000 * sec,
                                 out.shape[0] * out.shape[1] / sec / 1e6, _peak_rss_mb(), peak, gflops, frac)
                report.rows.append(row)
                _say(progress, f"{label} threads={n_threads} tile={tile or 'whole'}: "
                               f"{row.ms_per_tile:.1f} ms/tile, {row.output_mp_per_s:.3f} MP/s")
            del model
    report.machine["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    report.machine["load_1min_end"] = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"
    return report


def _say(progress: Callable[[str], None] | None, text: str) -> None:
    """Report progress to ``progress`` when given, else to the log (INFO)."""
    if progress is not None:
        progress(text)
    else:
        log.info("%s", text)


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def latency_markdown(report: LatencyReport) -> str:
    """The latency table as Markdown, with the model's MACs and the machine it ran on."""
    h, w = report.lr_size
    macs = (f"{report.macs.per_lr_pixel / 1e6:.3f} M MACs per LR pixel "
            f"({', '.join(f'{k} {v / 1e6:.3f} M' for k, v in report.macs.by_op.items())})"
            if report.macs else f"MACs not counted: {report.macs_note}")
    s = report.scale
    lines = [f"Model `{report.model.name}` (x{s}), {macs}. LR input {w}x{h}, output {w * s}x{h * s}; "
             f"median of {report.runs} runs after warm-up.", "",
             "| provider | threads | tile | tiles | ms/tile | ms/image | output MP/s | peak RSS MiB "
             "| matmul peak GFLOP/s | model GFLOP/s | fraction of peak |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in report.rows:
        lines.append(f"| {r.provider.removesuffix('ExecutionProvider')} | {r.threads or 'default'} "
                     f"| {r.tile or 'whole'} | {r.tiles} | {r.ms_per_tile:.1f} | {r.ms_per_image:.0f} "
                     f"| {r.output_mp_per_s:.3f} | {r.peak_rss_mib:.0f} | {_num(r.peak_gflops, '.1f')} "
                     f"| {_num(r.gflops, '.1f')} | {_num(r.fraction_of_peak, '.1%')} |")
    lines += ["", "Machine:", *_machine_lines(report.machine)]
    return "\n".join(lines) + "\n"


def write_latency(report: LatencyReport, out_dir: str | Path) -> list[Path]:
    """Write ``latency.csv``, ``latency.md`` and ``latency.png`` (when matplotlib is there) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"model": report.model.name, "lr_h": report.lr_size[0], "lr_w": report.lr_size[1],
             "macs_per_lr_pixel": report.macs.per_lr_pixel if report.macs else "", **asdict(r)} for r in report.rows]
    written = [_write_csv(out / "latency.csv", rows), _write_text(out / "latency.md", latency_markdown(report))]
    written += charts.latency_chart(report, out / "latency.png")
    return written


# ---------------------------------------------------------------- quality

def read_quality_rows(path: str | Path) -> list[QualityRow]:
    """The rows of a ``quality_per_image.csv`` written by :func:`write_quality` (to redraw or compare).

    Text cells of ``psnr_rgb``/``lpips`` (e.g. :data:`runtime.grids.LPIPS_UNAVAILABLE`) stay text.
    Raises KeyError or ValueError if the file is not such a CSV.
    """
    def number_or_text(v: str) -> float | str:
        try:
            return float(v)
        except ValueError:
            return v

    with open(path, newline="", encoding="utf-8") as fh:
        return [QualityRow(r["dataset"], r["image"], r["method"], float(r["psnr_y"]), float(r["ssim_y"]),
                           number_or_text(r["psnr_rgb"]), number_or_text(r["lpips"]), float(r["seconds"]),
                           int(r["output_pixels"]), float(r.get("color") or "nan")) for r in csv.DictReader(fh)]


def bench_quality(datasets: Sequence[Sequence[Sample]], methods: dict[str, Upscale], *, scale: int = 4,
                  lpips: grids.LpipsFn | None = None,
                  progress: Callable[[str], None] | None = None) -> QualityReport:
    """Run and score every method on every sample; each method is warmed up once before timing, then
    the methods take turns image by image, so a change in the machine's load falls on all alike.

    ``methods``: name -> :data:`Upscale` (all get the same LR pixels).
    ``lpips``: a scorer (see :class:`runtime.lpips.LpipsOnnx`), or None for
    the :data:`runtime.grids.LPIPS_UNAVAILABLE` text. Raises ValueError if a
    method returns the wrong shape or dtype.
    """
    rows = []
    samples = [s for d in datasets for s in d]
    if not samples:
        raise UsageError("no images to benchmark")
    machine = machine_info()  # the start of the run; the end is added below
    first = samples[0].lr
    for upscale in methods.values():
        upscale(first[: min(32, first.shape[0]), : min(32, first.shape[1])])  # sessions, caches, thread pools
    for s in samples:
        for name, upscale in methods.items():
            t0 = time.perf_counter()
            sr = upscale(s.lr)
            seconds = time.perf_counter() - t0
            if sr.shape != s.hr.shape or sr.dtype != np.uint8:
                raise ValueError(f"{name} returned {sr.shape} {sr.dtype} for {s.dataset}/{s.name}; "
                                 f"expected {s.hr.shape} uint8")
            m = grids.score_one(sr, s.hr, scale, lpips)
            rows.append(QualityRow(s.dataset, s.name, name, float(m["psnr_y"]), float(m["ssim_y"]), m["psnr_rgb"],
                                   m["lpips"], seconds, sr.shape[0] * sr.shape[1], float(m["color_shift"])))
            _say(progress, f"{name} {s.dataset}/{s.name}: {m['psnr_y']:.2f} dB in {seconds:.2f} s")
    machine["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return QualityReport(rows, list(methods), scale, machine=machine)


def quality_markdown(report: QualityReport) -> str:
    """Mean PSNR-Y / SSIM-Y / LPIPS / colour cast per dataset and method, output MP/s, machine, peers not run."""
    ds = report.datasets
    by = {(s.dataset, s.method): s for s in report.summary()}
    head = ["method", *(f"{d} {k}" for d in ds for k in ("PSNR-Y", "SSIM-Y", "LPIPS", "colour")), "output MP/s"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "--:|" * (len(head) - 1)]
    for m in report.methods:
        cells = [m]
        for d in ds:
            s = by.get((d, m))
            cells += ["" if s is None else f"{s.psnr_y:.2f}", "" if s is None else f"{s.ssim_y:.4f}",
                      "" if s is None else (f"{s.lpips:.4f}" if isinstance(s.lpips, float) else "n/a"),
                      "" if s is None else f"{s.color:+.2f}"]
        cells.append(f"{report.speed(m):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    counts = ", ".join(f"{d} {sum(1 for r in report.rows if r.dataset == d and r.method == report.methods[0])}"
                       for d in ds)
    notes = [f"Images: {counts}. Y of BT.601 YCbCr, border {report.scale}; gray images on their gray values; "
             "LPIPS AlexNet v0.1 (lower is better). colour: the mean over images of the largest shift of a "
             "channel's mean against the HR, in 0-255 levels (a cast; 0 is best). Speed: output megapixels per "
             "second of the upscale call alone, on the machine below (shared and loaded: read it as a ranking, "
             "not a spec)."]
    if any(isinstance(s.lpips, str) for s in by.values()):
        notes.append(f"LPIPS {grids.LPIPS_UNAVAILABLE} (or pass --lpips PATH).")
    if report.descriptions:
        notes += ["", "Methods:", *(f"- {k}: {v}" for k, v in report.descriptions.items())]
    if report.skipped:
        notes += ["", "Not run:", *(f"- {k}: {v}" for k, v in report.skipped.items())]
    return "\n".join([*lines, "", *notes, "", "Machine:", *_machine_lines(report.machine)]) + "\n"


def _fmt(v: object) -> object:
    return f"{v:.6f}" if isinstance(v, float) else v


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    w.writeheader()
    w.writerows({k: _fmt(v) for k, v in r.items()} for r in rows)
    return _write_text(path, buf.getvalue())


def _write_text(path: Path, text: str) -> Path:
    with atomic_write(path) as fh:
        fh.write(text.encode())
    return path


def write_quality(report: QualityReport, out_dir: str | Path) -> list[Path]:
    """Write ``quality_per_image.csv``, ``quality_summary.csv``, ``quality.md`` and, when matplotlib
    is installed, ``quality_vs_speed.png`` and ``per_image_<dataset>.png``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [_write_csv(out / "quality_per_image.csv", [asdict(r) for r in report.rows]),
               _write_csv(out / "quality_summary.csv", [asdict(s) for s in report.summary()]),
               _write_text(out / "quality.md", quality_markdown(report))]
    written += charts.quality_charts(report, out)
    return written

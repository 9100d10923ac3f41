"""Reduced-precision variants of an exported fp32 generator, each measured against it.

- ``fp16``: weights and activations in float16, input and output kept float32
  (Cast at both ends). Meant for GPUs; onnxruntime's CPU provider runs it too.
- ``int8``: static QDQ quantisation (per-channel int8 weights, uint8
  activations, MinMax calibration on LR crops of *training* images, never the
  evaluation sets); the last convolution's output stays float.

bf16 is not offered: ONNX Conv has no bfloat16 type and onnxruntime's CPU
provider has no bfloat16 kernels for these ops (checked with onnxruntime 1.32).

Each variant is scored on the evaluation sets (Y-PSNR, border = scale, through
the runtime exactly as users run it) next to the fp32 model, and timed on this
machine in the same process. A variant that loses more than
:data:`MAX_PSNR_LOSS_DB` on any set is refused as a default.
"""
from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from srgan.runtime.paths import data_dir

from ._io import atomic_write_bytes, sidecar
from .errors import ExportError, VariantError
from .onnx_meta import check_onnx, read_metadata, set_metadata
from .parity import ParityReport, measure_parity, parity_inputs, read_rgb

__all__ = ["VARIANTS", "MAX_PSNR_LOSS_DB", "VariantReport", "build_variant", "calibration_crops",
           "set_psnr", "latency_ms", "build_and_evaluate"]

log = logging.getLogger(__name__)

VARIANTS = ("fp16", "int8")
#: A variant losing more Y-PSNR than this on any evaluation set is never the default.
MAX_PSNR_LOSS_DB = 0.05
_LATENCY_SHAPE = (1, 3, 96, 96)  # one LR tile-sized input: 384x384 output


@dataclass
class VariantReport:
    """Measurements of one variant file.

    ``psnr``: {set: {"fp32": dB, "variant": dB, "loss_db": fp32 - variant}} (mean
    Y-PSNR over the set's images). ``latency_ms``: median ms for one
    (1, 3, h, w) LR input (``latency_input``) for fp32 and the variant, measured
    interleaved in one process on the CPU provider. ``default_ok``: the PSNR loss
    is measured and <= MAX_PSNR_LOSS_DB on every set; ``verdict`` says why.
    """

    name: str
    path: Path
    parity: ParityReport
    psnr: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_input: tuple[int, ...] = ()
    default_ok: bool = False
    verdict: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = self.path.name
        d["parity"] = self.parity.to_dict()
        return d


def _toposort(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (in place)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise VariantError(f"graph has a cycle or a dangling input at node {rest[0].name!r}")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def _fp16(proto):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: Cast nodes at both ends, so callers feed and get float32.
    out = convert_float_to_float16(proto, keep_io_types=True)
    _toposort(out.graph)  # the converter appends its input Casts after their consumers
    return out


def calibration_crops(folders: Sequence[Path], scale: int, *, count: int = 32, size: int = 48,
                      seed: int = 0) -> list[np.ndarray]:
    """``count`` LR crops for int8 calibration: float32 (1, 3, size, size) in [0, 1].

    Images from ``folders`` (training data, HR) spread evenly over the list, each
    downscaled with the MATLAB-compatible bicubic ``imresize`` (the training
    degradation) and cropped at a random position. Raises VariantError if the
    folders hold no image at least ``size * scale`` pixels on each side.
    """
    from srgan.runtime.resize import imresize
    from srgan.trainer.data import find_images

    files = [f for d in folders if Path(d).is_dir() for f in find_images(Path(d))]
    rng = np.random.default_rng(seed)
    crops: list[np.ndarray] = []
    for i in np.linspace(0, max(len(files) - 1, 0), num=min(count * 2, len(files)), dtype=int):
        if len(crops) == count:
            break
        try:
            px = read_rgb(files[i])
        except ValueError:  # 16-bit: not what the 8-bit training pipeline sees
            continue
        if min(px.shape[:2]) < size * scale:
            continue
        lr = imresize(px, 1.0 / scale)
        y, x = (int(rng.integers(0, lr.shape[k] - size + 1)) for k in (0, 1))
        crops.append(np.ascontiguousarray(lr[y:y + size, x:x + size].transpose(2, 0, 1)[None], np.float32) / 255)
    if not crops:
        raise VariantError(f"int8 calibration needs 8-bit training images of at least {size * scale} px per side; "
                           f"found none in {', '.join(map(str, folders)) or 'no folder'}. Pass calibration "
                           "folders (cli.py export --calib DIR).")
    return crops


def _int8(fp32_path: Path, crops: list[np.ndarray]):
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(crops)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {"lr": x}

    with tempfile.TemporaryDirectory() as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        outputs = {o.name for o in graph.output}
        last = [n.name for n in graph.node if outputs & set(n.output)]
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=last)
        return onnx.load(str(out))


def build_variant(kind: str, fp32_path: Path, out_path: Path, *, calibration: list[np.ndarray] | None = None
                  ) -> Path:
    """Write the ``kind`` variant (``fp16`` or ``int8``) of ``fp32_path`` to ``out_path``.

    Metadata is copied from the fp32 file, plus ``variant`` and ``variant_of``
    (the fp32 file name). ``int8`` needs ``calibration`` (see :func:`calibration_crops`).
    Raises VariantError for an unknown kind, missing calibration, or a graph that
    fails ``onnx.checker``.
    """
    import onnx

    if kind not in VARIANTS:
        raise VariantError(f"unknown variant {kind!r}; choose from {', '.join(VARIANTS)}")
    if kind == "int8":
        if not calibration:
            raise VariantError("the int8 variant needs calibration crops of training images")
        proto = _int8(fp32_path, calibration)
    else:
        proto = _fp16(onnx.load(str(fp32_path)))
    meta = read_metadata(fp32_path)
    meta.update(variant=kind, variant_of=Path(fp32_path).name)
    set_metadata(proto, meta)
    try:
        check_onnx(proto)
    except ExportError as exc:
        raise VariantError(f"the {kind} variant: {exc}") from exc
    atomic_write_bytes(out_path, proto.SerializeToString())
    return out_path


def _eval_pairs(set_dir: Path) -> list[tuple[str, Path, Path]]:
    """(name, official LR file, HR file) of a benchmark folder (``HR/`` + ``LR_bicubic_x4/``)."""
    hr_dir, lr_dir = set_dir / "HR", set_dir / "LR_bicubic_x4"
    return [(p.name, lr_dir / p.name, p) for p in sorted(hr_dir.glob("*.png")) if (lr_dir / p.name).is_file()]


def set_psnr(model_path: Path, set_dir: Path) -> float:
    """Mean Y-PSNR (border = scale, runtime.metrics) of a model over a benchmark folder.

    Runs through ``runtime`` exactly as ``upscale`` does (whole image, CPU, output
    clamped and rounded to the input's dtype). Raises VariantError if the folder
    holds no LR/HR pair.
    """
    from srgan.runtime.grids import match_reference
    from srgan.runtime.imageio import read_image
    from srgan.runtime.metrics import psnr
    from srgan.runtime.pipeline import upscale_image
    from srgan.runtime.session import load_model

    pairs = _eval_pairs(set_dir)
    if not pairs:
        raise VariantError(f"{set_dir} holds no HR/*.png with a matching LR_bicubic_x4/ file")
    model = load_model(model_path, device="cpu", engine="onnxruntime")  # the variants are onnxruntime graphs
    scores = []
    for _, lr_path, hr_path in pairs:
        lr, hr = read_image(lr_path).pixels, read_image(hr_path).pixels
        sr = upscale_image(lr, model, tile=0)
        hr = match_reference(hr[:, :, :sr.shape[2]], sr.shape[0], sr.shape[1], model.scale)
        scores.append(psnr(sr, hr, border=model.scale))
    return float(np.mean(scores))


def latency_ms(paths: Sequence[Path], shape: tuple[int, int, int, int] = _LATENCY_SHAPE, *, repeats: int = 5,
               threads: int = 0) -> dict[str, float]:
    """Median latency in ms of each model on one random input of ``shape``, CPU provider.

    Runs are interleaved (a, b, a, b, ...) after one warm-up each, so background
    load on a shared machine affects all models alike. Keys are file names.
    """
    from srgan.runtime.session import load_model

    models = [load_model(p, device="cpu", threads=threads, engine="onnxruntime") for p in paths]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    times: list[list[float]] = [[] for _ in models]
    for m in models:
        m(x)
    for _ in range(repeats):
        for i, m in enumerate(models):
            t = time.perf_counter()
            m(x)
            times[i].append((time.perf_counter() - t) * 1000.0)
    return {Path(p).name: statistics.median(t) for p, t in zip(paths, times)}


def _verdict(kind: str, rep: VariantReport) -> tuple[bool, str]:
    """(default_ok, sentence): the PSNR rule decides; the speed on this CPU is stated beside it."""
    worst = max((p["loss_db"] for p in rep.psnr.values()), default=None)
    if worst is None:
        ok, text = False, "not a default: PSNR loss not measured (no evaluation sets)"
    elif worst > MAX_PSNR_LOSS_DB:
        ok, text = False, f"refused as default: loses {worst:.3f} dB Y-PSNR (limit {MAX_PSNR_LOSS_DB} dB)"
    else:
        ok, text = True, f"within the {MAX_PSNR_LOSS_DB} dB limit (loses {max(worst, 0.0):.3f} dB Y-PSNR)"
    speed = rep.latency_ms["fp32"] / rep.latency_ms[kind]
    text += f"; {speed:.2f}x fp32 speed on this CPU"
    if speed <= 1.0:
        text += " (no gain here: keep fp32 on CPU" + ("; fp16 is meant for GPUs)" if kind == "fp16" else ")")
    return ok, text


def default_eval_sets() -> list[Path]:
    """Set5 and Set14 under ../shared/data, where present."""
    return [d for d in (data_dir() / "Set5", data_dir() / "Set14") if (d / "HR").is_dir()]


def build_and_evaluate(model: nn.Module, fp32_path: Path, kinds: Sequence[str], *,
                       calibration_dirs: Sequence[Path] | None = None, default_calibration: Sequence[Path] = (),
                       eval_sets: Sequence[Path] | None = None) -> list[VariantReport]:
    """Build each variant next to ``fp32_path`` (``NAME.fp16.onnx``, ``NAME.int8.onnx``) and measure it.

    ``model``: the torch generator (parity reference). ``calibration_dirs``
    (else ``default_calibration``): training image folders for int8.
    ``eval_sets``: benchmark folders for the PSNR comparison (default Set5 and
    Set14 in ../shared/data; without any, ``default_ok`` stays False with the reason).
    Raises VariantError.
    """
    unknown = [k for k in kinds if k not in VARIANTS]
    if unknown:
        raise VariantError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if not kinds:
        return []
    scale = int(model.scale)  # type: ignore[arg-type]  # every generator in trainer.models has .scale
    sets = [Path(d) for d in eval_sets] if eval_sets is not None else default_eval_sets()
    fp32_psnr = {d.name: set_psnr(fp32_path, d) for d in sets}
    reports = []
    for kind in dict.fromkeys(kinds):
        crops = None
        if kind == "int8":
            crops = calibration_crops(list(calibration_dirs or default_calibration), scale)
        path = build_variant(kind, fp32_path, sidecar(fp32_path, f".{kind}.onnx"), calibration=crops)
        # Variants are judged by PSNR, not by the fp32 threshold: the parity rows are informative.
        parity = measure_parity(model, path, parity_inputs(), threshold=float("inf"))
        if not np.isfinite(parity.max_abs):
            raise VariantError(f"{path}: the {kind} model produces non-finite values (overflow); do not use it")
        rep = VariantReport(name=kind, path=path, parity=parity)
        for d in sets:
            v = set_psnr(path, d)
            rep.psnr[d.name] = {"fp32": fp32_psnr[d.name], "variant": v, "loss_db": fp32_psnr[d.name] - v}
        lat = latency_ms([fp32_path, path])
        rep.latency_ms = {"fp32": lat[Path(fp32_path).name], kind: lat[path.name]}
        rep.latency_input = _LATENCY_SHAPE
        rep.default_ok, rep.verdict = _verdict(kind, rep)
        log.info("%s variant: %s", kind, rep.verdict)
        reports.append(rep)
    return reports

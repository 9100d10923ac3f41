"""Checkpoint -> ONNX file that meets the runtime's contract, with proof that it computes
the same thing as the checkpoint (``../shared/DESIGN.md``, "The contract is the ONNX file").

Input ``lr``: float32 (N, 3, H, W) RGB in [0, 1], N, H and W dynamic. Output ``sr``:
float32 (N, 3, H*scale, W*scale), linear (the runtime clamps to [0, 1]).
"""
from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srgan.runtime.bench import measure_memory_per_pixel
from srgan.runtime.files import file_sha256
from srgan.runtime.paths import data_dir
from srgan.trainer.checkpoint import generator_from_checkpoint, generator_weights
from srgan.trainer.models import deploy_generator

from ._io import atomic_write_bytes, sidecar, write_json
from .errors import ExportError, VariantError
from .model_card import PHASE2_KEYS, quality_from_csv, write_model_card
from .onnx_meta import check_onnx, read_metadata, set_metadata
from .parity import FP32_MAX_ABS, ParityReport, measure_parity, parity_inputs
from .receptive import verify_receptive_radius
from .variants import VARIANTS, VariantReport, build_and_evaluate

__all__ = ["DEFAULT_OPSET", "ExportReport", "export_generator", "export_onnx", "ort_optimize", "check_onnx",
           "generator_metadata", "read_metadata", "set_metadata"]

log = logging.getLogger(__name__)

#: ONNX opset of exported models. 18 is the lowest the torch dynamo exporter implements
#: natively, and onnxruntime >= 1.14 and TensorRT >= 8.6 run it.
DEFAULT_OPSET = 18

INPUT_NAME, OUTPUT_NAME = "lr", "sr"


@dataclass
class ExportReport:
    """What :func:`export_generator` produced and proved.

    ``receptive_radius`` is the derived radius written to the metadata and
    ``measured_radius`` the perturbation measurement (never larger).
    """

    path: Path
    opset: int
    metadata: dict[str, str]
    receptive_radius: int
    measured_radius: int
    parity: ParityReport
    parity_json: Path
    card_json: Path
    card_md: Path
    variants: list[VariantReport] = field(default_factory=list)


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Hold the named loggers at WARNING (the exporter logs every rewrite at INFO)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(model: nn.Module, *, opset: int = DEFAULT_OPSET, input_names: Sequence[str] = (INPUT_NAME,),
                output_name: str = OUTPUT_NAME, example_hw: tuple[int, int] = (24, 32), min_side: int = 1):
    """Export an eval-mode image model to an ``onnx.ModelProto`` with dynamic batch, H and W.

    The model takes one float32 (N, 3, H, W) tensor per name in ``input_names``
    and returns one tensor; H and W may be anything >= ``min_side``. Uses torch's
    dynamo exporter (``torch.export`` + onnxscript).
    Raises ExportError with the exporter's message.
    """
    h, w = example_hw
    batch = torch.export.Dim("batch")
    dh, dw = torch.export.Dim("height", min=min_side), torch.export.Dim("width", min=min_side)
    shapes = tuple({0: batch, 2: dh, 3: dw} for _ in input_names)
    args = tuple(torch.rand(2, 3, h, w) for _ in input_names)
    try:
        with _quiet("onnxscript", "onnx_ir"), warnings.catch_warnings():
            # inputs that share Dims (LPIPS's two images) make the exporter say each name is reused
            warnings.filterwarnings("ignore", message=r".*The axis name: .* will not be used")
            program = torch.onnx.export(model.eval(), args, None, input_names=list(input_names),
                                        output_names=[output_name], dynamic_shapes=shapes, opset_version=opset,
                                        dynamo=True, external_data=False, verbose=False)
    except Exception as exc:  # the exporter raises many types
        raise ExportError(f"torch could not export {type(model).__name__} to ONNX opset {opset}: {exc}") from exc
    if program is None:
        raise ExportError(f"torch returned no ONNX program for {type(model).__name__} (opset {opset})")
    return program.model_proto


def ort_optimize(proto) -> Any:
    """onnxruntime's offline *basic* graph optimisation (constant folding, Conv+BN/Add/Mul fusion,
    redundant node removal), which only emits standard ONNX ops, so the result still runs on
    any execution provider. Extended/all levels would emit CPU-only fused contrib ops."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(out)
        opts.log_severity_level = 3
        ort.InferenceSession(proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(str(out))
    # onnxruntime declares all its domains; keep only those the graph uses.
    used = {n.domain for n in optimized.graph.node} | {""}
    keep = [o for o in optimized.opset_import if o.domain in used]
    del optimized.opset_import[:]
    optimized.opset_import.extend(keep)
    return optimized


def _run_data(checkpoint: Path) -> list[Path]:
    """Training folders recorded in the run's ``config.json`` beside the checkpoint (``_resolved.data``)."""
    cfg = Path(checkpoint).parent / "config.json"
    if not cfg.is_file():
        return []
    try:
        data = json.loads(cfg.read_text()).get("_resolved", {}).get("data") or []
    except (OSError, ValueError) as exc:
        log.warning("cannot read the training data from %s: %s", cfg, exc)
        return []
    return [Path(d) for d in data]


def _trained_on(checkpoint: Path, state: dict[str, Any]) -> str:
    n = state.get("train_images")
    count = f" ({n} images)" if n else ""
    data = _run_data(checkpoint)
    return (" + ".join(d.name for d in data) if data else "unknown") + count


def generator_metadata(state: dict[str, Any], checkpoint: Path, receptive_radius: int, *, use_ema: bool,
                       opset: int, trained_on: str | None = None,
                       quality: dict[str, Any] | None = None) -> dict[str, str]:
    """The ``metadata_props`` of an exported generator (all values are strings).

    Keys: scale, arch, receptive_radius (LR px), input_range ``0-1``, color_order
    ``RGB``, output (``linear; clamp to 0-1``), trained_on, train_steps,
    checkpoint_sha256, weights (``ema`` or ``g``), hparams (JSON), training (JSON
    summary of the config), opset, exporter, and, when known, quality (JSON),
    averaged_from (JSON: the checkpoints a weight average was made of) and initialised_from (JSON: the
    model a fine-tune started from, :func:`trainer.checkpoint.lineage`).
    """
    cfg = state.get("config") or {}
    kind = generator_weights(state, use_ema)[1]
    training = {
        "preset": cfg.get("preset"), "step": state.get("step"), "phase": state.get("phase"),
        "warmup_steps": state.get("warmup_steps"), "train_images": state.get("train_images"),
        "hr_patch": cfg.get("hr_patch"), "batch": cfg.get("batch"), "degradation": cfg.get("degradation"),
        "pixel_loss": cfg.get("pixel_loss"), "adv": cfg.get("adv"), "content_loss": state.get("content_loss"),
        "ema_decay": cfg.get("ema_decay"),
    }
    if state.get("phase") == 2:  # the phase-2 loss weights (absent from older checkpoints' configs: omitted)
        training.update({k: cfg[k] for k in PHASE2_KEYS if k in cfg})
    if state.get("degradation_params"):  # the on-the-fly degradation model (trainer.degradations), in full
        training["degradation_params"] = state["degradation_params"]
    meta = {
        "scale": str(state["hparams"].get("scale")),
        "arch": state["arch"],
        "receptive_radius": str(receptive_radius),
        "input_range": "0-1",
        "color_order": "RGB",
        "output": "linear; clamp to 0-1",
        "trained_on": trained_on or _trained_on(checkpoint, state),
        "train_steps": str(state.get("step")),
        "checkpoint_sha256": file_sha256(checkpoint),
        "weights": kind,
        "hparams": json.dumps(state["hparams"], sort_keys=True),
        "training": json.dumps(training, sort_keys=True, default=str),
        "opset": str(opset),
        "exporter": f"export/onnx_export.py, torch {torch.__version__} dynamo exporter",
    }
    if state.get("averaged_from"):  # a weight average of several runs (trainer.checkpoint.average_generators)
        meta["averaged_from"] = json.dumps([{k: src.get(k) for k in ("sha256", "step", "weights")} | {
            "file": Path(src["path"]).as_posix()} for src in state["averaged_from"]], sort_keys=True)
    for key in ("initialised_from", "distilled_from"):  # --init's parent (and its parent...); distill's teacher
        if state.get(key):
            meta[key] = json.dumps(state[key], sort_keys=True)
    if quality:
        meta["quality"] = json.dumps(quality, sort_keys=True)
    return meta


def _real_images(real_images: Sequence[Path] | None) -> tuple[list[Path], str]:
    if real_images is not None:
        paths = [Path(p) for p in real_images]
        return paths, ", ".join(p.name for p in paths) or "none"
    folder = data_dir() / "Set5" / "LR_bicubic_x4"
    if not folder.is_dir():
        log.warning("no real images for the parity check: %s is absent", folder)
        return [], f"none ({folder} absent)"
    paths = sorted(folder.glob("*.png"))
    return paths, f"Set5 LR_bicubic_x4 ({len(paths)} images)"


def export_generator(checkpoint: Path, out_path: Path, *, opset: int = DEFAULT_OPSET, use_ema: bool = True,
                     variants: Sequence[str] = (), trained_on: str | None = None,
                     quality: dict[str, Any] | None = None, eval_csv: Path | Sequence[Path] | None = None,
                     real_images: Sequence[Path] | None = None, calibration_dirs: Sequence[Path] | None = None,
                     eval_sets: Sequence[Path] | None = None, engine_facts: bool = False) -> ExportReport:
    """Export the generator in ``checkpoint`` to ``out_path`` and prove it.

    1. Rebuild the generator (EMA weights when present and ``use_ema``) and take its inference
       form (``trainer.models.deploy_generator``: e.g. re-parameterised convs collapsed).
    2. Derive its receptive radius and verify it by perturbing one LR pixel.
    3. Export (dynamic batch/H/W, opset ``opset``), apply onnxruntime's portable
       basic optimisation offline, attach metadata, ``onnx.checker`` full check.
    4. Parity vs torch on random inputs at two sizes and on ``real_images``
       (default: ``../shared/data/Set5/LR_bicubic_x4`` when present); fp32 must
       stay under max abs 1e-4. Host memory per LR pixel of a CPU inference call
       is measured into ``memory_bytes_per_pixel`` (Linux; the runtime's
       ``--max-memory`` uses it). Only then is ``out_path`` written (atomically).
    5. Build and measure ``variants`` (``fp16``, ``int8``; see export.variants).
    6. Write ``NAME.parity.json`` and the model card (``NAME.card.json``, ``NAME.md``).

    ``quality``: measured metrics ({set: {"model": {...}, "bicubic": {...}}}) or
    ``eval_csv`` (see export.model_card.quality_from_csv). ``calibration_dirs``:
    image folders for int8 calibration (default: the run's training data).
    ``engine_facts``: also measure bf16 vs fp32 on Set5/Set14 and each engine's memory per
    pixel into the metadata (:func:`runtime.precision.record_engine_facts`; the CLI does).
    ``eval_sets``: benchmark folders (HR/ + LR_bicubic_x4/) for variant PSNR
    (default: ../shared/data Set5 and Set14).

    Raises CheckpointError (bad checkpoint), ReceptiveFieldError, ExportError,
    ParityError (nothing written), VariantError.
    """
    checkpoint, out_path = Path(checkpoint), Path(out_path)
    if out_path.suffix != ".onnx":
        raise ExportError(f"output {out_path} must end in .onnx")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:  # before any work, so a typo costs nothing
        raise VariantError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    trained, state = generator_from_checkpoint(checkpoint, use_ema=use_ema)
    # The inference form the registry names (re-parameterised convs collapsed); parity below is
    # measured against the checkpoint's own (training) form, so the collapse is proved too.
    model = deploy_generator(state["arch"], trained)
    stated, measured = verify_receptive_radius(model)
    if quality is None and eval_csv:
        quality = quality_from_csv(eval_csv)
    meta = generator_metadata(state, checkpoint, stated, use_ema=use_ema, opset=opset, trained_on=trained_on,
                              quality=quality)
    log.info("exporting %s (%s, step %s) with opset %d", checkpoint, state["arch"], state.get("step"), opset)

    proto = ort_optimize(export_onnx(model, opset=opset))
    set_metadata(proto, meta)
    proto.doc_string = (f"{state['arch']} x{meta['scale']} super-resolution. Input 'lr': float32 NCHW RGB in "
                        f"[0,1], dynamic N/H/W. Output 'sr': float32 NCHW, H*{meta['scale']} x W*{meta['scale']}, "
                        "linear (clamp to [0,1]).")
    proto.producer_name = "srgan-toolkit export"
    check_onnx(proto)
    data = proto.SerializeToString()

    images, images_desc = _real_images(real_images)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / out_path.name
        staged.write_bytes(data)
        parity = measure_parity(trained, staged, parity_inputs(images), threshold=FP32_MAX_ABS,
                                real_images=images_desc)
        parity.model = str(out_path)
        parity.check()
        per_pixel = measure_memory_per_pixel(staged)
    if per_pixel is not None:  # what the runtime's --max-memory budget sizes tiles by
        meta["memory_bytes_per_pixel"] = str(per_pixel)
        set_metadata(proto, meta)
        data = proto.SerializeToString()
    parity.model = out_path.name  # the report travels with the file: no machine-specific paths
    atomic_write_bytes(out_path, data)
    log.info("wrote %s; parity max abs %.2e", out_path, parity.max_abs)
    if engine_facts:  # the bf16 quality gate (Set5/Set14) and memory per engine, into the metadata
        from srgan.runtime.precision import record_engine_facts

        facts = record_engine_facts(out_path)
        log.info("bf16 gate %s; bytes per LR pixel %s", facts["bf16"], facts["memory"])

    def write_reports(variant_reports: list[VariantReport]) -> tuple[Path, Path]:
        write_json(sidecar(out_path, ".parity.json"), {
            "model": out_path.name, "checkpoint": str(checkpoint), "opset": opset,
            "receptive_radius": {"derived": stated, "measured": measured},
            "fp32": parity.to_dict(), "variants": [v.to_dict() for v in variant_reports],
        })
        return write_model_card(out_path)

    # Reports for the fp32 file first, so a failing variant never leaves a stale report beside it.
    card_json, card_md = write_reports([])
    variant_reports: list[VariantReport] = []
    if variants:
        calib_default = [d for d in _run_data(checkpoint) if d.is_dir()]
        variant_reports = build_and_evaluate(model, out_path, list(variants), calibration_dirs=calibration_dirs,
                                             default_calibration=calib_default, eval_sets=eval_sets)
        card_json, card_md = write_reports(variant_reports)
    return ExportReport(path=out_path, opset=opset, metadata=meta, receptive_radius=stated,
                        measured_radius=measured, parity=parity, parity_json=sidecar(out_path, ".parity.json"),
                        card_json=card_json,
                        card_md=card_md, variants=variant_reports)


"""The quality gate for reduced precision: measure what bf16 costs a model, and record it.

:func:`measure_bf16_loss` runs the same SR model through OpenVINO in fp32 and in
bf16 on the LR images of benchmark sets (``HR/`` + ``LR_bicubic_x4/``, whole
images, as ``upscale --tile 0``), scores both against HR (PSNR on Y with a
``scale``-pixel border, LPIPS when a scorer is given) and returns the mean loss.
:func:`record_bf16_loss` writes it into the ONNX metadata under
:data:`runtime.engines.GATE_KEY`, which ``precision auto`` reads
(:func:`runtime.engines.bf16_gate`).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .datasets import iter_samples
from .engines import GATE_KEY, bf16_gate
from .errors import EngineError, UsageError

__all__ = ["gate_sets", "measure_bf16_loss", "measure_engine_memory", "record_bf16_loss", "record_engine_facts"]

log = logging.getLogger(__name__)


def gate_sets() -> list[Path]:
    """Set5 and Set14 under :func:`runtime.paths.data_dir` (those present)."""
    from .paths import data_dir

    return [data_dir() / n for n in ("Set5", "Set14") if (data_dir() / n).is_dir()]


def measure_bf16_loss(model_path: str | Path, sets: Sequence[str | Path], *, lpips: Any = None,
                      threads: int = 0) -> dict[str, Any]:
    """Mean quality loss of bf16 vs fp32 (OpenVINO CPU) over every image of ``sets``.

    Returns ``{"psnr_y_loss_db", "lpips_loss", "psnr_y_fp32", "psnr_y_bf16", "lpips_fp32",
    "lpips_bf16", "images", "sets", "engine", "allowed"}``: losses are fp32 minus bf16 PSNR-Y
    (dB) and bf16 minus fp32 LPIPS, positive = bf16 is worse; LPIPS values are None without a
    ``lpips`` scorer (and ``lpips_loss`` then NaN, which the gate refuses). ``allowed``: the
    gate's verdict on these numbers.

    Raises :class:`EngineError` where this CPU has no bf16, :class:`UsageError` if the sets
    hold no image pairs.
    """
    from .pipeline import upscale_image
    from .session import load_model

    fp32 = load_model(model_path, device="cpu", engine="openvino", precision="fp32", threads=threads)
    bf16 = load_model(model_path, device="cpu", engine="openvino", precision="bf16", threads=threads)
    s = fp32.scale
    psnr: dict[str, list[float]] = {"fp32": [], "bf16": []}
    lp: dict[str, list[float]] = {"fp32": [], "bf16": []}
    names = []
    for root in sets:
        names.append(Path(root).name)
        for sample in iter_samples(root, scale=s):
            for key, model in (("fp32", fp32), ("bf16", bf16)):
                sr = upscale_image(sample.lr, model, tile=0)
                psnr[key].append(metrics.psnr(sr, sample.hr, border=s))
                if lpips is not None:
                    lp[key].append(float(lpips(sr, sample.hr)))
    n = len(psnr["fp32"])
    if n == 0:
        raise UsageError(f"no HR/LR image pairs in {', '.join(map(str, sets))} to measure bf16 against fp32")
    mean = {k: float(np.mean(v)) for k, v in psnr.items()}
    lmean: dict[str, float | None] = {k: float(np.mean(v)) if v else None for k, v in lp.items()}
    lf, lb = lmean["fp32"], lmean["bf16"]
    out: dict[str, Any] = {
        "psnr_y_loss_db": round(mean["fp32"] - mean["bf16"], 5),
        "lpips_loss": round(lb - lf, 6) if lf is not None and lb is not None else float("nan"),
        "psnr_y_fp32": round(mean["fp32"], 4), "psnr_y_bf16": round(mean["bf16"], 4),
        "lpips_fp32": lmean["fp32"], "lpips_bf16": lmean["bf16"],
        "images": n, "sets": "+".join(names), "engine": "openvino CPU",
    }
    out["allowed"] = bf16_gate({GATE_KEY: json.dumps(out)})[0]
    log.info("%s: bf16 vs fp32 on %s: %s", Path(model_path).name, out["sets"], out)
    return out


def measure_engine_memory(model_path: str | Path) -> dict[str, int]:
    """Host bytes per LR pixel of one CPU inference call for each engine/precision usable here
    (``{"onnxruntime/fp32": n, "openvino/fp32": n, "openvino/bf16": n}``; Linux, else empty).

    A model with a recorded body/tail split runs split on openvino: its memory is a fixed tail
    sub-tile plus the body's per pixel, so it is measured on a 512 px input (a tile of the size
    the budget then allows; smaller inputs would charge them the whole fixed part)."""
    from .bench import measure_memory_per_pixel
    from .engines import ENGINES, cpu_supports
    from .split import read_split

    combos = [("onnxruntime", "fp32")]
    if ENGINES["openvino"].available():
        combos += [("openvino", "fp32")] + ([("openvino", "bf16")] if cpu_supports("bf16") else [])
    out = {}
    split = read_split(_metadata(model_path)) is not None
    for engine, precision in combos:
        sizes = (512,) if split and engine == "openvino" else (128, 192)
        value = measure_memory_per_pixel(model_path, sizes, engine=engine, precision=precision)
        if value is not None:
            out[f"{engine}/{precision}"] = value
    return out


def record_engine_facts(model_path: str | Path, sets: Sequence[str | Path] | None = None, *, lpips: Any = None,
                        threads: int = 0) -> dict[str, Any]:
    """Measure and record what the engines need to know of a model: the bf16 quality loss on ``sets``
    (default :func:`gate_sets`; skipped where the CPU has no bf16) and the memory per LR pixel of each
    engine/precision, after finding the body/tail split (:func:`runtime.split.find_split`) the
    openvino engine then uses. ``lpips``: a scorer (default the shipped LPIPS ONNX model, border 4 px). Only
    metadata changes. Returns ``{"bf16": loss or None, "memory": {...}}``."""
    from .engines import cpu_supports
    from .session import MEMORY_BY_ENGINE_KEY
    from .split import SPLIT_KEY, find_split

    _onnx()
    import onnx

    cut = find_split(onnx.load(str(model_path)))
    _set_metadata(model_path, {SPLIT_KEY: json.dumps(asdict(cut), sort_keys=True)} if cut else {},
                  drop=() if cut else (SPLIT_KEY,))
    sets = gate_sets() if sets is None else list(sets)
    if lpips is None:  # the gate needs LPIPS: without a scorer the loss is NaN and bf16 is refused
        from .lpips import available_lpips

        found = available_lpips(border=4)
        lpips = found.distance if found is not None else None
    loss = measure_bf16_loss(model_path, sets, lpips=lpips, threads=threads) if cpu_supports("bf16") and sets \
        else None
    memory = measure_engine_memory(model_path)
    entries: dict[str, str] = {MEMORY_BY_ENGINE_KEY: json.dumps(memory, sort_keys=True)} if memory else {}
    if loss is not None:
        entries[GATE_KEY] = json.dumps(loss, sort_keys=True)
    _set_metadata(model_path, entries)
    return {"bf16": loss, "memory": memory}


def record_bf16_loss(model_path: str | Path, loss: dict[str, Any]) -> None:
    """Store ``loss`` (from :func:`measure_bf16_loss`) as JSON in the ONNX file's metadata (atomic;
    only ``metadata_props`` change). Needs the ``onnx`` package. Raises EngineError without it."""
    _set_metadata(model_path, {GATE_KEY: json.dumps(loss, sort_keys=True)})


def _onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise EngineError("recording engine facts needs the onnx package: pip install onnx") from None


def _metadata(model_path: str | Path) -> dict[str, str]:
    _onnx()
    import onnx

    return {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}


def _set_metadata(model_path: str | Path, entries: dict[str, str], drop: Sequence[str] = ()) -> None:
    """Set ``entries`` in (and remove ``drop`` keys from) the ONNX file's ``metadata_props`` (atomic).
    Raises EngineError without the onnx package."""
    _onnx()
    import onnx

    from .imageio import atomic_write

    path = Path(model_path)
    proto = onnx.load(str(path))
    keep = [p for p in proto.metadata_props if p.key not in drop]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in entries.items():
        found = [p for p in proto.metadata_props if p.key == key]
        entry = found[0] if found else proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_write(path) as fh:
        fh.write(proto.SerializeToString())
        os.fchmod(fh.fileno(), 0o644)  # shipped files stay world-readable

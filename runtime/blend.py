"""Network interpolation: one model whose weights are ``t`` x one export plus ``(1 - t)`` x another.

Two fine-tunes of one ancestor can be blended weight by weight and the result behaves in between
(Wang et al., ESRGAN, ECCV 2018 workshops, "network interpolation"; Real-ESRGAN's ``-dn`` denoise
strength does the same between two general models). This is what ``--denoise`` uses: the
``real`` model (trained on JPEG, noise, blur, resize; removes them) at ``t = 1`` and its registered
partner (trained on clean bicubic LR; keeps what it sees) at ``t = 0`` (:data:`runtime.registry.MODELS`).

The blended file is written once per (both files' sha256, ``t``) under ``cache_dir()/blends``
(atomically) and then loaded like any model, so tiling, engines and the precision gate apply
unchanged. Only ``onnx`` is needed (no torch).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError
from .files import file_sha256
from .imageio import atomic_write
from .paths import cache_dir

__all__ = ["BLEND_KEY", "blend_models"]

#: Metadata of a blended model: JSON ``{"t": t, "a": {"file", "sha256"}, "b": {...}}``.
BLEND_KEY = "blend"
#: Metadata that describes one structure (kept from ``a``); the rest describes one training and is dropped.
_STRUCTURAL = ("scale", "arch", "receptive_radius", "input_range", "color_order", "output", "hparams", "opset",
               "exporter", "memory_bytes_per_pixel", "memory_bytes_per_pixel_by_engine", "split_body_tail")
_GATE = "precision_loss_bf16"


def _signature(model: Any) -> list[tuple[str, tuple[str, ...], tuple[str, ...], bytes]]:
    return [(n.op_type, tuple(n.input), tuple(n.output), b"".join(a.SerializeToString() for a in n.attribute))
            for n in model.graph.node]


def _worse_gate(a: dict[str, str], b: dict[str, str]) -> str | None:
    """The bf16 record of the two that loses more (the blend is never given a better record than its parts)."""
    records = []
    for meta in (a, b):
        if _GATE not in meta:
            return None  # one part was never measured: the blend is not either
        try:
            rec = json.loads(meta[_GATE])
            records.append((float(rec["psnr_y_loss_db"]), float(rec["lpips_loss"]), meta[_GATE]))
        except (ValueError, KeyError, TypeError):
            return None
    return max(records, key=lambda r: (r[0], r[1]))[2]


def blend_models(a: str | Path, b: str | Path, t: float) -> Path:
    """The ONNX file whose float weights are ``t * a + (1 - t) * b``; ``a`` itself at ``t == 1`` and ``b`` at
    ``t == 0``. Raises ValueError if ``t`` is outside [0, 1] and :class:`ModelLoadError` (naming both files)
    if the two graphs are not the same network (operators, wiring, attributes, weight names and shapes)."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"the blend weight must be in [0, 1], got {t}")
    a, b = Path(a), Path(b)
    if t == 1.0:
        return a
    if t == 0.0:
        return b
    sha_a, sha_b = file_sha256(a), file_sha256(b)
    key = hashlib.sha256(f"{sha_a}:{sha_b}:{t!r}".encode()).hexdigest()[:16]
    out = cache_dir() / "blends" / f"{a.stem}-{b.stem}-{t:g}-{key}.onnx"
    if out.is_file():
        return out

    import onnx
    from onnx import numpy_helper

    ma, mb = onnx.load(a), onnx.load(b)
    if _signature(ma) != _signature(mb):
        raise ModelLoadError(a, f"cannot blend with {b}: the graphs differ (operators, wiring or attributes); "
                                "blending needs two exports of one architecture")
    wb = {w.name: w for w in mb.graph.initializer}
    for w in ma.graph.initializer:
        other = wb.pop(w.name, None)
        x = numpy_helper.to_array(w)
        y = None if other is None else numpy_helper.to_array(other)
        if y is None or y.shape != x.shape or y.dtype != x.dtype:
            raise ModelLoadError(a, f"cannot blend with {b}: weight {w.name!r} is missing or has another shape "
                                    "or type there")
        if np.issubdtype(x.dtype, np.floating):
            mixed = (t * x.astype(np.float64) + (1.0 - t) * y.astype(np.float64)).astype(x.dtype)
            w.CopyFrom(numpy_helper.from_array(mixed, w.name))
        elif not np.array_equal(x, y):
            raise ModelLoadError(a, f"cannot blend with {b}: non-float weight {w.name!r} differs")
    if wb:
        raise ModelLoadError(a, f"cannot blend with {b}: weights only there: {', '.join(sorted(wb)[:5])}")

    meta_a = {p.key: p.value for p in ma.metadata_props}
    meta_b = {p.key: p.value for p in mb.metadata_props}
    kept = {k: v for k, v in meta_a.items() if k in _STRUCTURAL}
    gate = _worse_gate(meta_a, meta_b)
    if gate is not None:
        kept[_GATE] = gate
    kept[BLEND_KEY] = json.dumps({"t": t, "a": {"file": a.name, "sha256": sha_a},
                                  "b": {"file": b.name, "sha256": sha_b}}, sort_keys=True)
    del ma.metadata_props[:]
    for k, v in kept.items():
        ma.metadata_props.add(key=k, value=v)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as fh:
        fh.write(ma.SerializeToString())
    return out

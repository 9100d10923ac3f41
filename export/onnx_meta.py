"""ONNX file helpers shared by the exporter, the variants and the model card: metadata and the checker.

The lowest layer of ``export``: it imports no other export module, so ``onnx_export`` ->
``variants`` / ``model_card`` -> ``onnx_meta`` has no cycle. ``onnx`` is imported lazily.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ExportError

__all__ = ["check_onnx", "set_metadata", "read_metadata"]


def check_onnx(proto: Any) -> None:
    """``onnx.checker.check_model(full_check=True)`` (includes shape inference); raises ExportError."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the ONNX graph fails onnx.checker: {exc}") from exc


def set_metadata(proto: Any, metadata: dict[str, str]) -> None:
    """Replace ``proto.metadata_props`` (an ``onnx.ModelProto``'s) with ``metadata`` (values stringified)."""
    del proto.metadata_props[:]
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, str(v)


def read_metadata(path: Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict (weights are not loaded)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}

"""Checkpoint -> ONNX with proven parity, metadata, model card, fast variants; LPIPS as ONNX.

Needs the ``export`` extra (torch, onnx, onnxscript, lpips). Names are
re-exported lazily so ``import export`` does not load torch until one is used.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "export_generator": "onnx_export", "ExportReport": "onnx_export", "DEFAULT_OPSET": "onnx_export",
    "read_metadata": "onnx_meta",
    "measure_parity": "parity", "ParityReport": "parity", "FP32_MAX_ABS": "parity",
    "receptive_radius": "receptive", "measure_receptive_radius": "receptive",
    "VARIANTS": "variants", "VariantReport": "variants", "MAX_PSNR_LOSS_DB": "variants",
    "write_model_card": "model_card", "record_quality": "model_card", "quality_from_csv": "model_card",
    "export_lpips": "lpips_onnx", "LpipsExportReport": "lpips_onnx",
    "ExportError": "errors", "ParityError": "errors", "ReceptiveFieldError": "errors", "VariantError": "errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Torch-free SR runtime: image files -> tiles -> onnxruntime -> files, grids, metrics.

Dependencies: onnxruntime, numpy, pillow, tifffile (never torch). Names are
re-exported lazily, so ``import runtime`` is cheap and loads onnxruntime only
when a model is loaded.

The Python API (:mod:`runtime.api`): ``load`` a model once, ``upscale`` a PIL image or
numpy array, ``upscale_files`` into a folder, ``evaluate`` on benchmark folders.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "api", "upscale": "api", "upscale_files": "api", "evaluate": "api",
    "load_model": "session", "SRModel": "session",
    "plan_tiles": "tiler", "upscale_rows": "tiler", "upscale_tiled": "tiler", "fit_tile": "tiler", "Tile": "tiler",
    "read_image": "imageio", "write_image": "imageio", "write_image_bands": "imageio", "Decoded": "imageio",
    "psnr": "metrics", "ssim": "metrics",
    "MODELS": "registry", "resolve_model": "registry",
    "UpscaleOptions": "pipeline", "FileResult": "pipeline", "BatchReport": "pipeline",
    "process_one": "pipeline", "upscale_batch": "pipeline", "upscale_image": "pipeline", "upscale_bands": "pipeline",
    "imresize": "resize",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

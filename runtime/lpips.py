"""LPIPS (AlexNet, v0.1) without torch, from the ONNX file ``cli.py export-lpips`` writes.

The file (``models/lpips_alex.onnx``, see :data:`runtime.registry.LPIPS_MODEL_FILE`)
takes two float32 NCHW RGB images in [0, 1] and returns one distance per pair.
When it is missing, callers write :data:`runtime.grids.LPIPS_UNAVAILABLE` in
their LPIPS columns (use :func:`available_lpips`), never a blank.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError, ModelNotFoundError
from .metrics import to_units
from .registry import LPIPS_MODEL_FILE, models_dir

__all__ = ["MIN_SIDE", "LpipsOnnx", "available_lpips", "default_lpips_path", "load_lpips"]

log = logging.getLogger(__name__)

#: Smallest image side (after the border crop) AlexNet LPIPS accepts.
MIN_SIDE = 31
_HOW = "run `python cli.py export-lpips -o models/lpips_alex.onnx` (needs the export extra: torch, lpips)"


def default_lpips_path() -> Path:
    """``<models dir>/lpips_alex.onnx`` (``$SRGAN_MODELS_DIR`` or ``<project>/models``)."""
    return models_dir() / LPIPS_MODEL_FILE


def _nchw01(img: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8/uint16/float image, C = 1 or 3, as float32 (1, 3, H, W) in [0, 1] (gray repeated)."""
    x = img[:, :, None] if img.ndim == 2 else img
    if x.ndim != 3 or x.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got {img.shape}")
    x = to_units(x) / 255.0
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


class LpipsOnnx:
    """AlexNet LPIPS v0.1 (fp32, onnxruntime unless ``engine`` says otherwise); ``lpips(a, b)`` is a
    :data:`runtime.grids.LpipsFn`.

    ``border``: pixels cropped from every side of both images first (the SR
    literature crops ``scale``). Raises ModelNotFoundError if ``path`` is
    missing, ModelLoadError if it is not an LPIPS file of this project.
    """

    def __init__(self, path: str | Path, *, border: int = 0, device: str = "cpu", threads: int = 0,
                 engine: str = "onnxruntime"):
        from .engines import open_session

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelNotFoundError(self.path, f"LPIPS model not found; {_HOW}")
        if border < 0:
            raise ValueError(f"border must be >= 0, got {border}")
        self.border = border
        # A metric: fp32 always (gated=False: the bf16 gate is for SR models), onnxruntime by default.
        self._session = open_session(self.path, engine=engine, precision="fp32", device=device, threads=threads,
                                     gated=False)
        names = [i.name for i in self._session.inputs]
        if names != ["img0", "img1"]:
            raise ModelLoadError(self.path, f"inputs are {names}; an LPIPS model from cli.py export-lpips "
                                            "has img0 and img1")

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS distance between two images of the same shape (lower = more alike).

        ``a``, ``b``: (H, W) or (H, W, C), C = 1 or 3 (drop alpha first), uint8,
        uint16 or float in [0, 1] (scaled by dtype). Raises ValueError if the
        shapes differ or a side is under MIN_SIDE after the border crop.
        """
        if a.shape != b.shape:
            raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
        k = self.border
        if k:
            a, b = a[k:-k, k:-k], b[k:-k, k:-k]
        if min(a.shape[:2]) < MIN_SIDE:
            raise ValueError(f"LPIPS needs at least {MIN_SIDE}x{MIN_SIDE} pixels after a border of {k}, "
                             f"got {a.shape[1]}x{a.shape[0]}")
        d = self._session.run({"img0": _nchw01(a), "img1": _nchw01(b)})[0]
        return float(d[0])

    __call__ = distance


def load_lpips(path: str | Path | None = None, **kwargs: Any) -> LpipsOnnx:
    """:class:`LpipsOnnx` for ``path`` (default :func:`default_lpips_path`); kwargs as LpipsOnnx.

    Raises ModelNotFoundError, whose message says how to make the file.
    """
    return LpipsOnnx(path or default_lpips_path(), **kwargs)


def available_lpips(path: str | Path | None = None, **kwargs: Any) -> LpipsOnnx | None:
    """Like :func:`load_lpips`, but None (with a log line) when the file is missing.

    Callers then report :data:`runtime.grids.LPIPS_UNAVAILABLE` in LPIPS columns.
    """
    try:
        return load_lpips(path, **kwargs)
    except ModelNotFoundError as e:
        log.warning("LPIPS unavailable: %s", e)
        return None

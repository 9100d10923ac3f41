"""MATLAB-compatible bicubic ``imresize`` in numpy (no torch).

This is the degradation every published SR table used: a cubic kernel with
a = -0.5, antialiased when shrinking (the kernel is stretched by 1/scale),
symmetric edge handling, and the smaller-scale dimension resized first.
uint8 input gives uint8 output rounded like MATLAB; float input stays float.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

__all__ = ["imresize", "resize_weights"]


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    out: np.ndarray = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    ) * ((ax > 1) & (ax <= 2))
    return out


@lru_cache(maxsize=64)
def resize_weights(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Dense (out_len, in_len) float64 matrix W with ``out = W @ in`` along one axis.

    Mirrors MATLAB's ``contributions()``: 1-based sample positions, kernel
    width 4 (4/scale when shrinking with antialias), symmetric padding folded
    back into the matrix.
    """
    width = 4.0
    kernel: Callable[[np.ndarray], np.ndarray] = _cubic
    if scale < 1 and antialias:
        kernel = lambda t: scale * _cubic(scale * t)  # noqa: E731
        width = width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based
    w = kernel(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx0 = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(mat, (rows, idx0.ravel()), w.ravel())
    mat.setflags(write=False)
    return mat


def imresize(img: np.ndarray, scale: float | None = None, *, size: tuple[int, int] | None = None,
             antialias: bool = True) -> np.ndarray:
    """Resize an HxW or HxWxC image like MATLAB ``imresize(img, scale, 'bicubic')``.

    Give either ``scale`` (output size = ceil(scale * input)) or ``size`` =
    (out_h, out_w) (scale taken per axis from it, as MATLAB does). uint8 and
    uint16 inputs are returned in the same dtype, rounded and clipped; float
    inputs are returned as float64 without clipping.

    Raises ValueError if neither or both of scale and size are given.
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    h, w = img.shape[:2]
    if size is None:
        assert scale is not None  # exactly one of them is given
        out_h, out_w = int(np.ceil(h * scale)), int(np.ceil(w * scale))
        sh = sw = float(scale)
    else:
        out_h, out_w = size
        sh, sw = out_h / h, out_w / w
    x = img.astype(np.float64)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[:, :, None]
    # MATLAB resizes the dimension with the smaller scale first (height on ties).
    order = ("h", "w") if sh <= sw else ("w", "h")
    for axis in order:
        if axis == "h":
            x = np.tensordot(resize_weights(h, out_h, sh, antialias), x, axes=(1, 0))
        else:
            x = np.tensordot(resize_weights(w, out_w, sw, antialias), x, axes=(1, 1)).transpose(1, 0, 2)
    if squeeze:
        x = x[:, :, 0]
    if img.dtype in (np.uint8, np.uint16):
        info = np.iinfo(img.dtype)
        return np.clip(np.round(x), info.min, info.max).astype(img.dtype)
    return x

"""Colour fix: keep the input's broad colour and brightness in the output (``--color-fix``).

A model's output, shrunk back to the input's size, should look like the input. Models trained on
real-world degradations do not quite do that: they shift the colour of whole regions, because noise
clipped at black and white and JPEG's chroma loss bias the training LR, and the model learns to undo a
bias the input in front of it may not have. Measured on Set5 (benchmarks/RESULTS.md): ``real_x4`` moves a
channel mean by -2.4 levels on clean input and -1.7 on the degraded benchmark, Real-ESRGAN x4plus by -4.0
and -5.0; models trained on clean LR by a few tenths.

The fix adds to the output the smoothed difference between the input and the output's ``s x s`` block
means::

    out = sr + up_s(G_sigma * (lr - box_s(sr)))

Only what the Gaussian (``sigma`` LR pixels) lets through is changed (broad colour and brightness), so the
model's detail, denoising and texture stay; noise and JPEG blocks in the input are averaged away before
anything is taken from it. chaiNNer's "Average Color Fix" and StableSR's wavelet colour fix do the same on
whole images; here the Gaussian is cut at ``3 sigma`` so the fix has a finite radius (:func:`fix_radius`),
the wrapper adds it to the model's receptive radius, and tiled results stay equal to whole-image ones.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["SIGMA", "ColorFix", "color_fix", "fix_image", "fix_radius"]

#: Width of the Gaussian in LR pixels: chosen on Set5 (clean and degraded, benchmarks/RESULTS.md).
SIGMA = 4.0


def fix_radius(sigma: float = SIGMA) -> int:
    """LR pixels of context the fix reads around each output pixel: the Gaussian's ``ceil(3 sigma)`` plus
    the bilinear upsampling's one."""
    return math.ceil(3.0 * sigma) + 1


def _gaussian_1d(x: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Separable Gaussian along ``axis`` (cut at 3 sigma, normalised), edges replicated."""
    r = math.ceil(3.0 * sigma)
    taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    widths = [(0, 0)] * x.ndim
    widths[axis] = (r, r)
    padded = np.pad(x, widths, mode="edge")
    n = x.shape[axis]
    out = np.zeros_like(x)
    for k, weight in enumerate(taps):
        out += weight * np.take(padded, np.arange(k, k + n), axis=axis)
    return out


def _upsample_1d(x: np.ndarray, s: int, axis: int) -> np.ndarray:
    """Bilinear x``s`` along ``axis``, pixel centres aligned (``align_corners=False``), edges replicated."""
    n = x.shape[axis]
    u = (np.arange(n * s, dtype=np.float64) + 0.5) / s - 0.5
    i0 = np.floor(u).astype(np.int64)
    frac = (u - i0).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = n * s
    frac = frac.reshape(shape)
    lo = np.take(x, np.clip(i0, 0, n - 1), axis=axis)
    hi = np.take(x, np.clip(i0 + 1, 0, n - 1), axis=axis)
    out: np.ndarray = lo + frac * (hi - lo)
    return out


def color_fix(lr: np.ndarray, sr: np.ndarray, scale: int, sigma: float = SIGMA) -> np.ndarray:
    """``sr`` (N, C, h*scale, w*scale) with the low frequencies of its ``scale x scale`` block means moved to
    those of ``lr`` (N, C, h, w); float32, same units as the inputs, not clamped. Raises ValueError if the
    sizes do not match."""
    n, c, h, w = lr.shape
    if sr.shape != (n, c, h * scale, w * scale):
        raise ValueError(f"colour fix: output {sr.shape} is not the input {lr.shape} x {scale}")
    means = sr.reshape(n, c, h, scale, w, scale).mean(axis=(3, 5), dtype=np.float32)
    diff = _gaussian_1d(_gaussian_1d(lr.astype(np.float32) - means, sigma, 2), sigma, 3)
    out: np.ndarray = (sr + _upsample_1d(_upsample_1d(diff, scale, 2), scale, 3)).astype(np.float32, copy=False)
    return out


def fix_image(lr: np.ndarray, sr: np.ndarray, scale: int, sigma: float = SIGMA) -> np.ndarray:
    """:func:`color_fix` of whole (H, W, C) uint8 images (any upscaler's output, e.g. a peer's); uint8, rounded.
    Raises ValueError if the sizes or dtypes do not match."""
    if lr.dtype != np.uint8 or sr.dtype != np.uint8 or lr.ndim != 3 or sr.ndim != 3:
        raise ValueError(f"fix_image takes (H, W, C) uint8 images, got {lr.shape} {lr.dtype} and {sr.shape} {sr.dtype}")
    nchw = [np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32) for a in (lr, sr)]
    out = color_fix(nchw[0], nchw[1], scale, sigma)[0].transpose(1, 2, 0)
    fixed: np.ndarray = np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return fixed


class ColorFix:
    """``model`` (an :class:`~runtime.session.SRModel` or anything with its interface) followed by
    :func:`color_fix`. ``receptive_radius`` is the model's plus :func:`fix_radius`, so the tiler gives each
    tile the context both need; the other attributes are the model's."""

    def __init__(self, model: Callable[[np.ndarray], np.ndarray], sigma: float = SIGMA):
        self.model = model
        self.sigma = sigma

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    @property
    def receptive_radius(self) -> int:
        return int(self.model.receptive_radius) + fix_radius(self.sigma)  # type: ignore[attr-defined]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Float32 NCHW in [0, 1] -> the model's output with the colour fix (float32, not clamped)."""
        return color_fix(x, self.model(x), self.model.scale, self.sigma)  # type: ignore[attr-defined]

    def upscale_region(self, x: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """As :meth:`runtime.session.SRModel.upscale_region`: the model is asked for ``box`` grown by the fix's
        radius (within ``x``), the fix runs there, and ``box`` is cut out."""
        y0, y1, x0, x1 = box
        r, s = fix_radius(self.sigma), self.model.scale  # type: ignore[attr-defined]
        ey0, ey1, ex0, ex1 = max(y0 - r, 0), min(y1 + r, x.shape[2]), max(x0 - r, 0), min(x1 + r, x.shape[3])
        region = getattr(self.model, "upscale_region", None)
        if region is not None:
            sr = region(x, (ey0, ey1, ex0, ex1))
        else:
            sr = self.model(x)[:, :, ey0 * s:ey1 * s, ex0 * s:ex1 * s]
        out = color_fix(x[:, :, ey0:ey1, ex0:ex1], sr, s, self.sigma)
        return out[:, :, (y0 - ey0) * s:(y1 - ey0) * s, (x0 - ex0) * s:(x1 - ex0) * s]

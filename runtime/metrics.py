"""The one metrics module: PSNR and SSIM as the SR literature computes them, numpy float64.

Conventions (DESIGN.md): values are taken to 0-255 units by dtype (uint8 as is,
uint16 / 65535 * 255, float assumed [0, 1] * 255), never by pixel values.
``channel="y"`` compares the Y channel of ITU-R BT.601 YCbCr (Y in [16, 235],
MATLAB ``rgb2ycbcr``); a single-channel (grayscale) image is compared on its
gray values, as the MATLAB scripts do. ``channel="rgb"`` compares all colour
channels. ``border`` pixels are cropped from every side first (use the SR
scale). SSIM uses an 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03,
over the 'valid' region, like Wang et al.'s ``ssim_index.m``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np

__all__ = ["psnr", "ssim", "lattice_ratio", "color_shift", "to_y", "to_units"]

Channel = Literal["y", "rgb"]

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def to_units(img: np.ndarray) -> np.ndarray:
    """``img`` (H, W) or (H, W, C) as float64 in 0-255 units, scaled by dtype."""
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if img.dtype == np.uint16:
        return img.astype(np.float64) * (255.0 / 65535.0)
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float64) * 255.0
    raise TypeError(f"unsupported dtype {img.dtype}; use uint8, uint16 or float in [0, 1]")


def _channels(img: np.ndarray) -> np.ndarray:
    """(H, W, C) view with C in (1, 3); raises ValueError otherwise (drop alpha first)."""
    x = img[:, :, None] if img.ndim == 2 else img
    if x.ndim != 3 or x.shape[2] not in (1, 3):
        raise ValueError(f"expected (H, W), (H, W, 1) or (H, W, 3), got {img.shape}")
    return x


def to_y(img: np.ndarray) -> np.ndarray:
    """(H, W) float64 in 0-255 units: BT.601 Y (16-235) of RGB, or the gray values of a gray image."""
    x = to_units(_channels(img))
    if x.shape[2] == 1:
        return x[:, :, 0]
    return 16.0 + x @ _Y_WEIGHTS


def _prepare(a: np.ndarray, b: np.ndarray, border: int, channel: Channel) -> tuple[np.ndarray, np.ndarray]:
    """Both images as (H, W, C) float64 0-255, converted per ``channel`` and border-cropped."""
    if channel == "y":
        xa, xb = to_y(a)[:, :, None], to_y(b)[:, :, None]
    elif channel == "rgb":
        xa, xb = to_units(_channels(a)), to_units(_channels(b))
    else:
        raise ValueError(f"channel must be 'y' or 'rgb', got {channel!r}")
    if xa.shape != xb.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if border < 0 or 2 * border >= min(xa.shape[:2]):
        raise ValueError(f"border {border} leaves nothing of a {xa.shape[0]}x{xa.shape[1]} image")
    if border:
        xa, xb = xa[border:-border, border:-border], xb[border:-border, border:-border]
    return xa, xb


def psnr(a: np.ndarray, b: np.ndarray, *, border: int = 0, channel: Channel = "y") -> float:
    """PSNR in dB (peak 255 in 0-255 units) between same-size images; ``inf`` if identical.

    Raises ValueError if shapes differ or the border crops everything.
    """
    xa, xb = _prepare(a, b, border, channel)
    mse = float(np.mean((xa - xb) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * np.log10(255.0 ** 2 / mse)


@lru_cache(maxsize=4)
def _gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(r ** 2) / (2.0 * sigma ** 2))
    g = g / g.sum()
    g.setflags(write=False)
    return g


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (H, W) ``x`` with the 1-D kernel ``g`` on both axes."""
    k = g.size
    h, w = x.shape[0] - k + 1, x.shape[1] - k + 1
    rows = sum(g[i] * x[i:i + h] for i in range(k))  # tap by tap: no k-fold temporaries
    return sum(g[i] * rows[:, i:i + w] for i in range(k))


def _ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    g = _gaussian()
    if min(x.shape) < g.size:
        raise ValueError(f"SSIM needs at least {g.size}x{g.size} pixels after the border crop, got {x.shape}")
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(smap.mean())


def ssim(a: np.ndarray, b: np.ndarray, *, border: int = 0, channel: Channel = "y") -> float:
    """Mean SSIM (11x11 Gaussian, sigma 1.5, 'valid' region); mean over channels for ``rgb``.

    Raises ValueError if shapes differ or fewer than 11x11 pixels remain.
    """
    xa, xb = _prepare(a, b, border, channel)
    return float(np.mean([_ssim_plane(xa[:, :, i], xb[:, :, i]) for i in range(xa.shape[2])]))


def lattice_ratio(a: np.ndarray, b: np.ndarray, scale: int) -> float:
    """Checkerboard detector: spectral power of ``a`` at the x``scale`` upsampling lattice over ``b``'s.

    The lattice frequencies are k / ``scale`` cycles per pixel on either axis
    (k = 0 .. scale-1, DC excluded): a pattern repeating every ``scale`` pixels,
    or every divisor of it (the pixel-shuffle and transposed-convolution
    artifact), has all its power there. Both Y planes are border-cropped by
    ``scale``, cut to a multiple of ``scale`` and Hann-windowed. Near or below 1
    for a result without such a pattern (bicubic: well below 1); well above 1
    when the result adds one. Raises ValueError if the shapes differ.
    """
    ya, yb = to_y(a), to_y(b)
    if ya.shape != yb.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    ya, yb = (y[scale:-scale, scale:-scale] if scale else y for y in (ya, yb))
    h, w = (n - n % scale for n in ya.shape)
    window = np.outer(np.hanning(h), np.hanning(w))
    ky, kx = np.arange(scale) * (h // scale), np.arange(scale) * (w // scale)

    def power(y: np.ndarray) -> float:
        y = y[:h, :w]
        spectrum = np.abs(np.fft.fft2((y - y.mean()) * window)) ** 2
        lattice = spectrum[np.ix_(ky, kx)]
        return float(lattice.sum() - lattice[0, 0])

    pa, pb = power(ya), power(yb)
    if pb == 0:
        return 1.0 if pa == 0 else float("inf")
    return pa / pb


def color_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference of a colour channel's mean, ``a`` minus ``b``, in 0-255 units (signed).

    A colour cast of the whole result shows here even when PSNR-Y cannot see it.
    Gray against colour compares Y. Raises ValueError if the sizes differ.
    """
    xa, xb = _channels(a), _channels(b)
    if xa.shape[:2] != xb.shape[:2]:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if xa.shape[2] != xb.shape[2]:
        return float(to_y(xa).mean() - to_y(xb).mean())
    diff = to_units(xa).mean(axis=(0, 1)) - to_units(xb).mean(axis=(0, 1))
    return float(diff[int(np.argmax(np.abs(diff)))])

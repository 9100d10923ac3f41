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

import math
from functools import lru_cache
from typing import Literal

import numpy as np

__all__ = ["psnr", "ssim", "lattice_ratio", "color_shift", "chroma_noise_ratio", "edge_wobble", "nan_mean", "to_y",
           "to_units", "Y_WEIGHTS", "gaussian_taps"]

Channel = Literal["y", "rgb"]

Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


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
    return 16.0 + x @ Y_WEIGHTS


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
def gaussian_taps(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """``size`` taps of a normalised 1-D Gaussian of ``sigma``, centred (read-only; cached)."""
    r = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(r ** 2) / (2.0 * sigma ** 2))
    g = g / g.sum()
    g.setflags(write=False)
    return np.asarray(g, dtype=np.float64)


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (H, W) ``x`` with the 1-D kernel ``g`` on both axes."""
    k = g.size
    h, w = x.shape[0] - k + 1, x.shape[1] - k + 1
    rows = sum(g[i] * x[i:i + h] for i in range(k))  # tap by tap: no k-fold temporaries
    return np.asarray(sum(g[i] * rows[:, i:i + w] for i in range(k)))


def _ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    g = gaussian_taps()
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


def _chroma(img: np.ndarray) -> np.ndarray:
    """(H, W, 2) float64 BT.601 Cb, Cr (0-255 units, offset 128 dropped); zeros for a gray image."""
    x = to_units(_channels(img))
    if x.shape[2] == 1:
        return np.zeros(x.shape[:2] + (2,))
    return x @ (np.array([[-37.797, 112.0], [-74.203, -93.786], [112.0, -18.214]]) / 255.0)


def _box(x: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Mean over a centred window of odd width ``k`` along ``axis`` (edge-replicated), same shape."""
    r = k // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(x, pad, mode="edge"), axis=axis)
    n = x.shape[axis]
    out: np.ndarray = (np.take(c, np.arange(k, k + n), axis=axis) - np.take(c, np.arange(n), axis=axis)) / k
    return out


def chroma_noise_ratio(a: np.ndarray, b: np.ndarray, scale: int) -> float:
    """Colour-noise detector: high-frequency chroma energy of ``a`` (SR) over ``b``'s (HR).

    Both images go to BT.601 Cb and Cr; each plane loses its local mean (two passes of a
    ``scale + 1`` box filter: what is left is detail finer than about one LR pixel, the band
    an x``scale`` network invents), and the squared residual is summed over the image cropped
    by ``scale``. Green/magenta speckle, which PSNR-Y, the lattice ratio and the colour shift
    do not see, raises it well above 1; luminance detail (equal in R, G, B) does not change
    it; a soft result is below 1 (bicubic ~0.3-0.5). Gray vs gray is 1.0; a coloured result of
    a gray HR is NaN (no ratio; means skip it). Raises ValueError if the sizes differ.
    """
    ca, cb = _chroma(a), _chroma(b)
    if ca.shape != cb.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    k = scale + 1 if scale % 2 == 0 else scale

    def energy(c: np.ndarray) -> float:
        low = _box(_box(c, k, 0), k, 1)
        low = _box(_box(low, k, 0), k, 1)
        hp = (c - low)[scale:-scale, scale:-scale] if scale else c - low
        return float((hp ** 2).sum())

    ea, eb = energy(ca), energy(cb)
    floor = 1e-6 * ca.shape[0] * ca.shape[1]  # 1e-6 level^2 per pixel: no colour detail (a gray HR, in RGB too)
    if eb <= floor:
        return 1.0 if ea <= floor else float("nan")  # a ratio to no colour means nothing: left out of means
    return ea / eb


def _runs(key: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """[start, end) of the maximal runs of one non-zero value in 1-D ``key`` at least ``min_len`` long."""
    cuts = np.flatnonzero(np.diff(key) != 0) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, key.size]
    return [(int(s), int(e)) for s, e in zip(starts, ends) if key[s] != 0 and e - s >= min_len]


def _edge_deviations(ya: np.ndarray, yb: np.ndarray, scale: int, min_step: float, min_len: int) -> list[np.ndarray]:
    """Per horizontal edge segment of ``yb``: ``a``'s edge position minus ``b``'s, column by column,
    less the segment's mean (a constant shift is not a wobble). See :func:`edge_wobble`."""
    gb, ga = np.diff(yb, axis=0), np.diff(ya, axis=0)  # row i: the step between rows i and i + 1
    mag = np.abs(gb)
    r = scale
    padded = np.pad(mag, ((1, 1), (0, 0)))
    peak = (mag >= min_step) & (mag >= padded[:-2]) & (mag >= padded[2:])
    # isolated: no same-polarity step of half this size 2 .. 2 * scale rows away (a grid finer than
    # that is at or past the LR Nyquist limit: no x``scale`` result can place its lines)
    signed = np.pad(gb, ((2 * r, 2 * r), (0, 0)))
    for k in range(2, 2 * r + 1):
        for shift in (k, -k):
            other = signed[2 * r + shift: 2 * r + shift + gb.shape[0]]
            peak &= ~((np.sign(other) == np.sign(gb)) & (2 * np.abs(other) >= mag))
    key = np.where(peak, np.sign(gb), 0).astype(np.int8)
    offsets = np.arange(-r, r + 1, dtype=np.float64)[:, None]
    out = []
    for i in range(r, gb.shape[0] - r):
        for s, e in _runs(key[i], min_len):
            sign = float(key[i, s])
            s, e = s + r, e - r  # the segment's ends (frame corners) are not part of a straight edge
            pos = []
            for g in (ga, gb):
                w = np.maximum(sign * g[i - r:i + r + 1, s:e], 0.0)  # same-polarity steps only
                total = w.sum(axis=0)
                centroid = (offsets * w).sum(axis=0) / np.where(total > 0, total, 1.0)
                pos.append(np.where(total > 0, centroid, float(r)))  # a lost edge counts as the window's end
            d = pos[0] - pos[1]
            out.append(d - d.mean())
    return out


def edge_wobble(a: np.ndarray, b: np.ndarray, scale: int, *, min_step: float = 20.0,
                min_len: int | None = None) -> float:
    """Straight-edge fidelity: RMS wobble, in pixels, of ``a``'s (SR) edges along ``b``'s (HR)
    straight horizontal and vertical edges.

    An edge segment is a run of at least ``min_len`` (default 4 x ``scale``, 4 LR pixels)
    neighbouring pixels where ``b``'s Y steps by at least ``min_step`` levels (0-255), with one
    sign, between the same two rows (or columns), the step is a local maximum across them, and no
    step of the same sign and half its size lies 2 to 2 x ``scale`` pixels across (a line grid that
    fine is beyond what the LR image resolves, so no model can be asked to place it):
    the mullions, window frames and roof lines of a facade; ``scale`` pixels at each end of a
    segment (where frames meet) are left out. Along each segment, column by
    column, the edge position in each image is the centroid of its same-polarity Y steps within
    ``scale`` pixels across the edge; the wobble is the RMS over all segment points of ``a``'s
    position minus ``b``'s, each segment's mean offset removed (a shifted but straight edge
    scores 0; a blurred one close to 0; an edge ``a`` lost scores ``scale``). 0 for ``b``
    itself; NaN when ``b`` has no such edge. Only axis-aligned edges are measured. Raises
    ValueError if the sizes differ.
    """
    ya, yb = to_y(a), to_y(b)
    if ya.shape != yb.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    n = 4 * scale if min_len is None else max(min_len, 2 * scale + 1)
    devs = _edge_deviations(ya, yb, scale, min_step, n) + _edge_deviations(ya.T, yb.T, scale, min_step, n)
    if not devs:
        return float("nan")
    d = np.concatenate(devs)
    return float(np.sqrt(np.mean(d ** 2)))


def nan_mean(values: list[float]) -> float:
    """Mean of the non-NaN values (a per-image measure that does not apply to some images, such as
    :func:`edge_wobble`, is NaN there); NaN when none is a number."""
    nums = [v for v in values if not math.isnan(v)]
    return float(np.mean(nums)) if nums else float("nan")

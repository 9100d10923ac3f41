"""Randomised real-world degradations (second order): HR uint8 image -> degraded LR uint8 image.

The model follows the published description of Real-ESRGAN (Wang et al., ICCVW 2021,
"high-order degradation"), with BSRGAN's (Zhang et al., ICCV 2021) view that blur,
resize, noise and JPEG each have many kinds. One *stage* is

    blur (isotropic / anisotropic Gaussian, generalised Gaussian, plateau, or a sinc
    ringing filter) -> resize (up / down / keep, random interpolation) ->
    noise (Gaussian or Poisson, colour or gray) -> JPEG (real Pillow encode + decode)

and :data:`REAL` applies two stages (the second with its own ranges), then the final
step: resize to exactly (H / scale, W / scale) with a random interpolation plus an
optional sinc filter, and a last JPEG, in random order. Everything is numpy, scipy
and Pillow (no torch), float32 in [0, 1] between operations.

Reproducible: :func:`degrade` draws every parameter from the ``numpy.random.Generator``
it is given, so the same seed gives byte-identical LR; the trainer seeds one generator
per sample from (run seed, step, rank, sample index). Each call returns a *trace*: one
dict per operation applied, with its parameters (the benchmark's manifest is made of them).

Where this differs from the papers (on purpose, or because of the tools):

- Resizing is Pillow's (``BOX`` for "area", ``BILINEAR``, ``BICUBIC``) on float planes;
  Pillow widens its filter when shrinking (antialiasing, as most photo software does),
  while Real-ESRGAN's ``torch.nn.functional.interpolate`` does not.
- JPEG is libjpeg through Pillow (4:2:0 chroma, standard tables), not a differentiable
  re-implementation; the quality is an integer.
- The GT is not sharpened (Real-ESRGAN trains on an unsharp-masked HR); BSRGAN's
  random shuffle of the operations and its camera-ISP noise are not modelled.
- A size never drops below :data:`MIN_SIDE` pixels in the intermediate resizes.
- :data:`REAL_MEAN` (``keep_means``) is ours: the same draws, then each LR channel shifted so that its mean is the
  HR's. The JPEG steps (4:2:0 chroma) and the clipped noise brighten REAL's blue by +0.54 levels on average (sd ~2
  per image; ``benchmarks/degradation_colour_bias.py``), and a model trained on it learns to darken blue by a
  guess from the content, a cast on every input (benchmarks/TRAINING.md). On REAL_MEAN's LR there is no colour
  correction to learn; trained on it, the real recipe's blue cast on clean input shrank by a third to a half, not
  to zero (TRAINING.md, fifteenth session).
- :data:`REAL_MIX` (``clean_prob``) is ours too: REAL_MEAN, but a share of the samples get the clean academic LR
  instead (the HR's MATLAB-bicubic shrink, :func:`srgan.runtime.resize.imresize`, nothing else). A model that
  only ever sees degraded LR restores blur, noise and colour that clean LR does not have (the real models' blue
  cast on clean input, TRAINING.md); the clean share shows it input that needs only upscaling. The shipped
  ``real_x4`` is the first real model continued on it (TRAINING.md, sixteenth and seventeenth sessions), then on
  REAL_ORDERS (eighteenth) and REAL_FIRST (nineteenth to twenty-first; the last 1,300 steps with the LPIPS-VGG term).
- :data:`REAL_ORDERS` (``mix_with``) is ours: REAL_MIX, but half of the degraded samples come from
  :data:`FIRST_ORDER` instead, the classical model (blur -> shrink straight to the LR size -> noise -> JPEG, with
  REAL's first-stage ranges; Real-ESRGAN's own first-order baseline). Real-ESRGAN argues for the second order with a
  16.7 M-parameter network; the reasoning here is that a 1.5 M one trained only on it learns to remove more than
  most photographs carry (one camera blur, one shrink, one JPEG at the LR size) and flattens their texture. 1,200
  steps on it moved degraded LPIPS where as many on REAL_MIX had not (TRAINING.md, eighteenth session; no control
  at the same learning rate). The degraded benchmark (:data:`BENCH`) is first-order too, with narrower ranges and
  its own draws.
- :data:`REAL_FIRST` is REAL_ORDERS with four fifths of the degraded samples first-order instead of half. Two
  1,500-step runs from the same model at the same rate, differing only in the share (TRAINING.md, nineteenth
  session): four fifths beat half by 0.006 LPIPS on degraded Set5 and by as much on a second-order check set
  (``benchmarks/make_degraded_bench.py --model real-mean``), so the gain is not only a closer match to the
  benchmark's first-order model. Both runs fell ~0.014 again after the rate was re-raised, so much of REAL_ORDERS'
  first gain may have been the rate (still no REAL_MIX run at that rate).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image
from scipy import special
from scipy.signal import fftconvolve

from srgan.runtime.resize import imresize

__all__ = ["BENCH", "DEGRADATIONS", "FIRST_ORDER", "KERNELS", "MIN_SIDE", "REAL", "REAL_FIRST", "REAL_MEAN",
           "REAL_MIX", "REAL_ORDERS", "RESIZE_MODES",
           "BlurConfig", "DegradationConfig", "DegradationError", "JpegConfig", "NoiseConfig", "ResizeConfig",
           "StageConfig", "blur_kernel", "degrade", "jpeg_roundtrip", "sinc_kernel"]

KERNELS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES: dict[str, Image.Resampling] = {
    "area": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
}
MIN_SIDE = 4  # smallest side an intermediate resize may produce


class DegradationError(ValueError):
    """Raised if a degradation config is inconsistent or an input image cannot be degraded (the message says which)."""


Range = tuple[float, float]


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise DegradationError(msg)


def _range_ok(r: Range, lo: float, hi: float) -> bool:
    return len(r) == 2 and lo <= r[0] <= r[1] <= hi


@dataclass(frozen=True)
class BlurConfig:
    """A blur operation: with ``prob``, one kernel of an odd size in ``sizes`` (inclusive).

    With ``sinc_prob`` the kernel is a sinc low-pass (cut-off in ``omega``, or ``omega_large``
    for sizes >= 13, radians per pixel); else a kernel of ``KERNELS`` drawn with ``weights``:
    sigma per axis in ``sigma`` (pixels), rotation uniform in [-pi, pi], shape beta in
    ``beta_generalized`` / ``beta_plateau``.
    """

    prob: float = 1.0
    sizes: tuple[int, int] = (7, 21)
    weights: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sigma: Range = (0.2, 3.0)
    beta_generalized: Range = (0.5, 4.0)
    beta_plateau: Range = (1.0, 2.0)
    sinc_prob: float = 0.1
    omega: Range = (math.pi / 3, math.pi)
    omega_large: Range = (math.pi / 5, math.pi)

    def __post_init__(self) -> None:
        _check(0 <= self.prob <= 1 and 0 <= self.sinc_prob <= 1, "blur probabilities must be in [0, 1]")
        _check(self.sizes[0] % 2 == 1 and self.sizes[1] % 2 == 1 and 3 <= self.sizes[0] <= self.sizes[1],
               "blur sizes must be odd, >= 3, (min, max)")
        _check(len(self.weights) == len(KERNELS) and min(self.weights) >= 0 and sum(self.weights) > 0,
               f"blur weights: one non-negative weight per kernel {KERNELS}")
        for r in (self.sigma, self.beta_generalized, self.beta_plateau):
            _check(_range_ok(r, 1e-3, 100.0), f"blur range {r} must be (lo, hi) with 0 < lo <= hi")
        for r in (self.omega, self.omega_large):
            _check(_range_ok(r, 1e-3, math.pi), f"sinc cut-off range {r} must lie in (0, pi]")


@dataclass(frozen=True)
class ResizeConfig:
    """A resize: up / down / keep with ``probs``; factor uniform in ``up`` or ``down``; mode from ``modes``.

    ``relative_to``: ``input`` (the HR size) or ``target`` (the final LR size, as Real-ESRGAN's
    second stage does).
    """

    probs: tuple[float, float, float] = (0.2, 0.7, 0.1)
    up: Range = (1.0, 1.5)
    down: Range = (0.15, 1.0)
    modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    relative_to: str = "input"

    def __post_init__(self) -> None:
        _check(len(self.probs) == 3 and min(self.probs) >= 0 and abs(sum(self.probs) - 1) < 1e-6,
               "resize probs (up, down, keep) must be >= 0 and sum to 1")
        _check(_range_ok(self.up, 1.0, 16.0) and _range_ok(self.down, 1e-3, 1.0),
               "resize ranges: up within [1, 16], down within (0, 1]")
        _check(bool(self.modes) and all(m in RESIZE_MODES for m in self.modes),
               f"resize modes must be among {sorted(RESIZE_MODES)}")
        _check(self.relative_to in ("input", "target"), "resize relative_to must be input or target")


@dataclass(frozen=True)
class NoiseConfig:
    """Additive noise with ``prob``: Gaussian (``gaussian_prob``; sigma in 0-255 levels) else Poisson
    (shot noise at the image's level count, times ``poisson_scale``); gray (one plane for all
    channels) with ``gray_prob``."""

    prob: float = 1.0
    gaussian_prob: float = 0.5
    sigma: Range = (1.0, 30.0)
    poisson_scale: Range = (0.05, 3.0)
    gray_prob: float = 0.4

    def __post_init__(self) -> None:
        _check(all(0 <= p <= 1 for p in (self.prob, self.gaussian_prob, self.gray_prob)),
               "noise probabilities must be in [0, 1]")
        _check(_range_ok(self.sigma, 0.0, 255.0) and _range_ok(self.poisson_scale, 0.0, 100.0),
               "noise ranges must be (lo, hi) with 0 <= lo <= hi")


@dataclass(frozen=True)
class JpegConfig:
    """A JPEG encode + decode with ``prob``, integer quality uniform in ``quality`` (inclusive)."""

    prob: float = 1.0
    quality: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        _check(0 <= self.prob <= 1, "jpeg prob must be in [0, 1]")
        _check(_range_ok(self.quality, 1, 100), "jpeg quality must be (lo, hi) within 1..100")


@dataclass(frozen=True)
class StageConfig:
    """One degradation stage: blur -> resize -> noise -> JPEG."""

    blur: BlurConfig = field(default_factory=BlurConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    jpeg: JpegConfig = field(default_factory=JpegConfig)


@dataclass(frozen=True)
class DegradationConfig:
    """The whole model: ``stages`` in order, then the final step (see the module docstring).

    Final step: resize to exactly (H // scale, W // scale) with a mode from ``final_modes``
    (skipped when the size is already right), a sinc filter with ``final_sinc_prob``
    (size in ``final_sinc_sizes``, cut-off in ``final_sinc_omega``), and ``final_jpeg``;
    JPEG first with ``final_jpeg_first_prob``. With ``keep_means`` each LR channel is then
    shifted by its mean's difference from the HR's (its random numbers, for rounding, are drawn
    after all the others: same seed, same blur / noise / JPEG as without it). With ``clean_prob``
    a sample is, instead, the HR's MATLAB-bicubic shrink and nothing else (its draw comes first, and
    only when ``clean_prob`` > 0: models without a clean share draw as before). With ``mix_prob`` a sample
    that is not clean is drawn from the model ``mix_with`` instead, by that model's own settings (its
    ``keep_means``, its stages); its draw comes next, only when ``mix_prob`` > 0.
    """

    name: str
    scale: int = 4
    stages: tuple[StageConfig, ...] = (StageConfig(),)
    final_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    final_sinc_prob: float = 0.8
    final_sinc_sizes: tuple[int, int] = (7, 21)
    final_sinc_omega: Range = (math.pi / 3, math.pi)
    final_jpeg: JpegConfig = field(default_factory=JpegConfig)
    final_jpeg_first_prob: float = 0.5
    keep_means: bool = False
    clean_prob: float = 0.0
    mix_with: DegradationConfig | None = None
    mix_prob: float = 0.0

    def __post_init__(self) -> None:
        _check(self.scale in (2, 4, 8), "scale must be 2, 4 or 8")
        _check(0 <= self.clean_prob <= 1, "clean_prob must be in [0, 1]")
        _check(0 <= self.mix_prob <= 1 and (self.mix_prob == 0 or self.mix_with is not None),
               "mix_prob must be in [0, 1], and > 0 only with a mix_with model")
        _check(self.mix_with is None or self.mix_with.scale == self.scale, "mix_with must have the same scale")
        _check(bool(self.final_modes) and all(m in RESIZE_MODES for m in self.final_modes),
               f"final modes must be among {sorted(RESIZE_MODES)}")
        _check(0 <= self.final_sinc_prob <= 1 and 0 <= self.final_jpeg_first_prob <= 1,
               "final probabilities must be in [0, 1]")
        _check(self.final_sinc_sizes[0] % 2 == 1 and self.final_sinc_sizes[1] % 2 == 1
               and 3 <= self.final_sinc_sizes[0] <= self.final_sinc_sizes[1], "final sinc sizes must be odd, >= 3")
        _check(_range_ok(self.final_sinc_omega, 1e-3, math.pi), "final sinc cut-off must lie in (0, pi]")


#: Real-ESRGAN's second-order settings (Sec. 4.1 of the paper): stage 1 on the HR image,
#: stage 2 with milder blur, resize relative to the LR size, final sinc + resize and JPEG.
REAL = DegradationConfig(
    name="real",
    stages=(
        StageConfig(),
        StageConfig(
            blur=BlurConfig(prob=0.8, sigma=(0.2, 1.5)),
            resize=ResizeConfig(probs=(0.3, 0.4, 0.3), up=(1.0, 1.2), down=(0.3, 1.0), relative_to="target"),
            noise=NoiseConfig(sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5)),
        ),
    ),
)

#: The fixed benchmark's model (benchmarks/make_degraded_bench.py): the *classical* first-order
#: degradation, drawn differently from training: Gaussian blur on HR (iso or aniso, sigma 0.4-2.0),
#: an exact x4 shrink with a random interpolation, noise (Gaussian 1-15 levels or Poisson 0.05-1.5,
#: colour or gray), then one JPEG at quality 30-90. No sinc, no second stage.
BENCH = DegradationConfig(
    name="bench",
    stages=(StageConfig(
        blur=BlurConfig(prob=1.0, sizes=(13, 21), weights=(0.5, 0.5, 0, 0, 0, 0), sigma=(0.4, 2.0), sinc_prob=0.0),
        resize=ResizeConfig(probs=(0.0, 1.0, 0.0), down=(0.25, 0.25)),
        noise=NoiseConfig(prob=1.0, gaussian_prob=0.5, sigma=(1.0, 15.0), poisson_scale=(0.05, 1.5), gray_prob=0.4),
        jpeg=JpegConfig(prob=1.0, quality=(30, 90)),
    ),),
    final_sinc_prob=0.0,
    final_jpeg=JpegConfig(prob=0.0),
)

#: REAL with each LR channel's mean set to the HR's (see the module docstring).
REAL_MEAN = replace(REAL, name="real-mean", keep_means=True)

#: REAL_MEAN with a fifth of the samples clean (the HR's MATLAB-bicubic shrink; see the module docstring).
REAL_MIX = replace(REAL_MEAN, name="real-mix", clean_prob=0.2)

#: The classical first-order model with REAL's first-stage ranges: blur, a shrink straight to the LR size (random
#: interpolation), noise, one JPEG; no sinc, no second stage; channel means kept as in REAL_MEAN.
FIRST_ORDER = DegradationConfig(
    name="first-order",
    stages=(StageConfig(resize=ResizeConfig(probs=(0.0, 0.0, 1.0), relative_to="target")),),
    final_sinc_prob=0.0,
    final_jpeg=JpegConfig(prob=0.0),
    keep_means=True,
)

#: REAL_MIX with half of the degraded samples first-order: 20 % clean, 40 % FIRST_ORDER, 40 % REAL_MEAN.
REAL_ORDERS = replace(REAL_MIX, name="real-orders", mix_with=FIRST_ORDER, mix_prob=0.5)

#: REAL_ORDERS with four fifths of the degraded samples first-order: 20 % clean, 64 % FIRST_ORDER, 16 % REAL_MEAN.
REAL_FIRST = replace(REAL_ORDERS, name="real-first", mix_prob=0.8)

#: Named models: ``--degradation real``, ``real-mean``, ``real-mix``, ``real-orders`` or ``real-first`` in the
#: trainer (FIRST_ORDER is a part of the last two); ``bench`` for the benchmark maker.
DEGRADATIONS: dict[str, DegradationConfig] = {c.name: c for c in (REAL, REAL_MEAN, REAL_MIX, REAL_ORDERS, REAL_FIRST,
                                                                  BENCH)}


# ---- kernels -----------------------------------------------------------------------------------

def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(size, dtype=np.float64) - size // 2
    return np.meshgrid(t, t, indexing="xy")


def _quadratic_form(size: int, sx: float, sy: float, theta: float) -> np.ndarray:
    """C^T Sigma^-1 C on a size x size grid, Sigma = R diag(sx^2, sy^2) R^T."""
    x, y = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y  # coordinates along the kernel's own axes
    return (u / sx) ** 2 + (v / sy) ** 2


def blur_kernel(kind: str, size: int, sx: float, sy: float, theta: float, beta: float = 1.0) -> np.ndarray:
    """A normalised (sum 1) size x size float64 kernel of a family in :data:`KERNELS`.

    ``iso``/``aniso``: exp(-q/2); ``generalized_*``: exp(-q^beta / 2); ``plateau_*``: 1 / (1 + q^beta),
    with q = C^T Sigma^-1 C. Raises DegradationError for an unknown kind.
    """
    _check(kind in KERNELS, f"unknown blur kernel {kind!r}; choose one of {KERNELS}")
    q = _quadratic_form(size, sx, sy, theta)
    family = kind.split("_")[0]
    if family in ("iso", "aniso"):
        k = np.exp(-0.5 * q)
    elif family == "generalized":
        k = np.exp(-0.5 * q**beta)
    else:
        k = 1.0 / (1.0 + q**beta)
    return k / k.sum()


def sinc_kernel(size: int, omega: float) -> np.ndarray:
    """A circular ideal low-pass of cut-off ``omega`` (radians per pixel), size x size, sum 1.

    k(r) = omega / (2 pi r) J1(omega r), with its limit omega^2 / (4 pi) at r = 0; it rings
    (negative side lobes), which is the point: it models overshoot and ringing artifacts.
    """
    x, y = _grid(size)
    r = np.hypot(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = omega * special.j1(omega * r) / (2 * math.pi * r)
    k[r == 0] = omega**2 / (4 * math.pi)
    return k / k.sum()


def _odd(rng: np.random.Generator, sizes: tuple[int, int]) -> int:
    return int(rng.choice(np.arange(sizes[0], sizes[1] + 1, 2)))


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def _draw_kernel(rng: np.random.Generator, cfg: BlurConfig) -> tuple[np.ndarray, dict[str, Any]]:
    size = _odd(rng, cfg.sizes)
    if rng.random() < cfg.sinc_prob:
        omega = _uniform(rng, cfg.omega if size < 13 else cfg.omega_large)
        return sinc_kernel(size, omega), {"kernel": "sinc", "size": size, "omega": omega}
    w = np.asarray(cfg.weights, np.float64)
    kind = KERNELS[int(rng.choice(len(KERNELS), p=w / w.sum()))]
    sx = _uniform(rng, cfg.sigma)
    isotropic = not kind.endswith("aniso")
    sy, theta = (sx, 0.0) if isotropic else (_uniform(rng, cfg.sigma), float(rng.uniform(-math.pi, math.pi)))
    beta = 1.0
    if kind.startswith("generalized"):
        beta = _uniform(rng, cfg.beta_generalized)
    elif kind.startswith("plateau"):
        beta = _uniform(rng, cfg.beta_plateau)
    params = {"kernel": kind, "size": size, "sigma_x": sx, "sigma_y": sy, "theta": theta, "beta": beta}
    return blur_kernel(kind, size, sx, sy, theta, beta), params


# ---- operations (float32 HxWxC in [0, 1] or slightly outside before a clamp) ---------------------

def convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``img`` (H, W, C) convolved per channel with ``kernel`` (odd k x k), reflect-padded: same size.

    FFT-based: about the same cost for a 7x7 and a 21x21 kernel.
    """
    pad = kernel.shape[0] // 2
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = fftconvolve(padded, kernel[:, :, None].astype(np.float32), mode="valid", axes=(0, 1))
    return out.astype(np.float32, copy=False)


def resize(img: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """Resize a float32 (H, W, C) image to (height, width, C) with Pillow, one float plane per channel."""
    if img.shape[:2] == (height, width):
        return img
    method = RESIZE_MODES[mode]
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(img[:, :, c])).resize((width, height), method))
              for c in range(img.shape[2])]
    return np.stack(planes, axis=2)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode a float32 (H, W, C) image, C = 1 or 3, as a real JPEG (Pillow, ``quality``) and decode it."""
    u8 = _to_uint8(img)
    buf = io.BytesIO()
    Image.fromarray(u8[:, :, 0] if u8.shape[2] == 1 else u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        out = np.asarray(im, dtype=np.float32) / 255.0
    return out[:, :, None] if out.ndim == 2 else out


def _luma(img: np.ndarray) -> np.ndarray:
    if img.shape[2] == 1:
        return img[:, :, 0]
    return img @ np.asarray([0.299, 0.587, 0.114], np.float32)


def _poisson(rng: np.random.Generator, plane: np.ndarray) -> np.ndarray:
    """Shot noise of ``plane`` ([0, 1]) at a photon count per unit of 2^ceil(log2(levels in use))."""
    plane = np.clip(plane, 0.0, 1.0)
    levels = int(np.count_nonzero(np.bincount(_to_uint8(plane).ravel(), minlength=256)))
    vals = 2.0 ** math.ceil(math.log2(max(levels, 2)))
    return (rng.poisson(plane * vals) / vals - plane).astype(np.float32)


def add_noise(img: np.ndarray, cfg: NoiseConfig, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Gaussian or Poisson noise, colour or gray (see :class:`NoiseConfig`); the result is clamped to [0, 1]."""
    gray = bool(rng.random() < cfg.gray_prob)
    h, w, c = img.shape
    if rng.random() < cfg.gaussian_prob:
        sigma = _uniform(rng, cfg.sigma)
        shape = (h, w, 1) if gray else (h, w, c)
        noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma / 255.0)
        params: dict[str, Any] = {"noise": "gaussian", "sigma": sigma, "gray": gray}
    else:
        scale = _uniform(rng, cfg.poisson_scale)
        noise = (_poisson(rng, _luma(img))[:, :, None] if gray else _poisson(rng, img)) * np.float32(scale)
        params = {"noise": "poisson", "scale": scale, "gray": gray}
    return np.clip(img + noise, 0.0, 1.0), params


def _resize_stage(img: np.ndarray, cfg: ResizeConfig, rng: np.random.Generator, hr_hw: tuple[int, int],
                  target_hw: tuple[int, int]) -> tuple[np.ndarray, dict[str, Any]]:
    kind = ("up", "down", "keep")[int(rng.choice(3, p=np.asarray(cfg.probs, np.float64)))]
    factor = {"up": lambda: _uniform(rng, cfg.up), "down": lambda: _uniform(rng, cfg.down), "keep": lambda: 1.0}[kind]()
    mode = str(rng.choice(cfg.modes))
    base = hr_hw if cfg.relative_to == "input" else target_hw
    h, w = (max(MIN_SIDE, round(s * factor)) for s in base)
    return resize(img, h, w, mode), {"resize": kind, "factor": factor, "mode": mode, "size": [h, w]}


# ---- the pipeline ------------------------------------------------------------------------------

def degrade(hr: np.ndarray, cfg: DegradationConfig, rng: np.random.Generator
            ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Degrade ``hr`` (H, W, C) uint8, C = 1 or 3, H and W >= scale, into LR (H // scale, W // scale, C) uint8.

    The LR covers the HR's top-left (H // scale * scale) x (W // scale * scale) area: the HR is
    cropped to multiples of ``scale`` first, so LR pixel (i, j) is centred on HR block
    [s*i, s*i + s) x [s*j, s*j + s), as for bicubic LR. Returns (lr, trace); the trace lists
    each applied operation as ``{"stage": "1" | "2" | ... | "final", "op": ..., **params}``.
    Raises DegradationError for a bad image.
    """
    if hr.dtype != np.uint8 or hr.ndim != 3 or hr.shape[2] not in (1, 3):
        raise DegradationError(f"degrade wants an (H, W, 1 or 3) uint8 image, got {hr.dtype} {hr.shape}")
    s = cfg.scale
    h, w = hr.shape[0] // s * s, hr.shape[1] // s * s
    if h == 0 or w == 0:
        raise DegradationError(f"image {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {s}")
    target = (h // s, w // s)
    if cfg.clean_prob > 0 and rng.random() < cfg.clean_prob:
        return imresize(hr[:h, :w], size=target), [{"stage": "final", "op": "clean", "mode": "matlab-bicubic"}]
    if cfg.mix_with is not None and cfg.mix_prob > 0 and rng.random() < cfg.mix_prob:
        lr, mixed = degrade(hr[:h, :w], cfg.mix_with, rng)
        return lr, [{"stage": "mix", "op": "model", "name": cfg.mix_with.name}, *mixed]
    img = hr[:h, :w].astype(np.float32) / 255.0
    trace: list[dict[str, Any]] = []
    for n, stage in enumerate(cfg.stages, start=1):
        tag = str(n)
        if rng.random() < stage.blur.prob:
            kernel, params = _draw_kernel(rng, stage.blur)
            img = convolve(img, kernel)
            trace.append({"stage": tag, "op": "blur", **params})
        img, params = _resize_stage(img, stage.resize, rng, (h, w), target)
        trace.append({"stage": tag, "op": "resize", **params})
        if rng.random() < stage.noise.prob:
            img, params = add_noise(img, stage.noise, rng)
            trace.append({"stage": tag, "op": "noise", **params})
        if rng.random() < stage.jpeg.prob:
            q = int(rng.integers(stage.jpeg.quality[0], stage.jpeg.quality[1] + 1))
            img = jpeg_roundtrip(img, q)
            trace.append({"stage": tag, "op": "jpeg", "quality": q})
    jpeg_first = bool(rng.random() < cfg.final_jpeg_first_prob)
    do_jpeg = bool(rng.random() < cfg.final_jpeg.prob)
    quality = int(rng.integers(cfg.final_jpeg.quality[0], cfg.final_jpeg.quality[1] + 1))
    do_sinc = bool(rng.random() < cfg.final_sinc_prob)
    mode = str(rng.choice(cfg.final_modes))
    sinc_size, omega = _odd(rng, cfg.final_sinc_sizes), _uniform(rng, cfg.final_sinc_omega)

    def final_jpeg(x: np.ndarray) -> np.ndarray:
        if do_jpeg:
            trace.append({"stage": "final", "op": "jpeg", "quality": quality})
            return jpeg_roundtrip(x, quality)
        return x

    def final_resize(x: np.ndarray) -> np.ndarray:
        if x.shape[:2] != target:
            trace.append({"stage": "final", "op": "resize", "mode": mode, "size": list(target)})
            x = resize(x, target[0], target[1], mode)
        if do_sinc:
            trace.append({"stage": "final", "op": "sinc", "size": sinc_size, "omega": omega})
            x = convolve(x, sinc_kernel(sinc_size, omega))
        return x

    img = final_resize(final_jpeg(img)) if jpeg_first else final_jpeg(final_resize(img))
    if cfg.keep_means:
        lr, params = _keep_means(img, hr[:h, :w], rng)
        trace.append({"stage": "final", "op": "keep_means", **params})
        return lr, trace
    return _to_uint8(img), trace


def _keep_means(img: np.ndarray, hr: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """``img`` (float, [0, 1]) shifted per channel to ``hr``'s channel means, as uint8, and the shift (levels).

    Shift and clip three times (what clipping took back is shifted again), then round stochastically
    (floor(x + u), u uniform in [0, 1)): the LR is often already on the 8-bit grid (a last JPEG), where
    rounding to nearest would undo any shift under half a level; stochastic rounding keeps the mean.
    """
    x = img.astype(np.float64) * 255.0
    ref = hr.astype(np.float64).mean(axis=(0, 1))
    total = np.zeros_like(ref)
    for _ in range(3):
        shift = np.clip(x, 0.0, 255.0).mean(axis=(0, 1)) - ref
        x, total = np.clip(x - shift, 0.0, 255.0), total + shift
    lr = np.minimum(np.floor(x + rng.random(x.shape)), 255.0).astype(np.uint8)
    return lr, {"shift": [round(float(v), 3) for v in total]}

"""Receptive radius of a generator, in LR pixels: derived from its layers and measured.

The radius ``r`` is the tiler's minimum pad: every output pixel in LR cell ``c``
(the ``scale`` x ``scale`` output block above LR pixel ``c``) depends only on LR
pixels within ``c - r .. c + r`` along each axis. :func:`receptive_radius`
derives it from the layer list; :func:`measure_receptive_radius` checks it by
perturbing one LR pixel and seeing which output cells change.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, cast

import torch
from torch import nn

from srgan.trainer.models import MatlabBicubicUp

from .errors import ReceptiveFieldError

__all__ = ["receptive_radius", "measure_receptive_radius", "verify_receptive_radius"]

log = logging.getLogger(__name__)

# Layers that act on each pixel alone (no spatial extent).
_POINTWISE = (nn.PReLU, nn.ReLU, nn.LeakyReLU, nn.BatchNorm2d, nn.Identity, nn.Sigmoid, nn.Tanh)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _spatial_ops(model: nn.Module) -> list[tuple[str, Any]]:
    """The spatial layers in registration order: ("conv", (rh, rw)), ("shuffle", f), ("bicubic", module)."""
    ops: list[tuple[str, Any]] = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            dh, dw = m.dilation
            if m.stride != (1, 1) or kh % 2 == 0 or kw % 2 == 0 or m.padding != (dh * (kh // 2), dw * (kw // 2)):
                raise ReceptiveFieldError(
                    f"layer {name}: only stride-1 'same' convolutions with odd kernels can be analysed, got "
                    f"kernel {m.kernel_size}, stride {m.stride}, padding {m.padding}")
            ops.append(("conv", (dh * (kh // 2), dw * (kw // 2))))
        elif isinstance(m, nn.PixelShuffle):
            ops.append(("shuffle", m.upscale_factor))
        elif isinstance(m, nn.Upsample) and m.mode == "nearest" and isinstance(m.scale_factor, (int, float)) \
                and float(m.scale_factor).is_integer() and m.scale_factor >= 1:
            ops.append(("shuffle", int(m.scale_factor)))  # output pixel c reads input pixel c // f, as a shuffle
        elif isinstance(m, MatlabBicubicUp):
            ops.append(("bicubic", m))
        elif isinstance(m, _POINTWISE + _CONTAINERS) or any(True for _ in m.children()):
            continue  # pointwise, or a container whose children are visited next
        else:
            raise ReceptiveFieldError(f"layer {name} ({type(m).__name__}) has an unknown spatial extent; "
                                      "teach export/receptive.py about it")
    return ops


def _bicubic_offsets(m: MatlabBicubicUp) -> list[tuple[int, int]]:
    """Per output phase p: (first, last) LR offset with a non-zero tap, relative to LR pixel i."""
    out = []
    kernel = m.kernel
    for p in range(m.scale):
        nz = torch.nonzero(kernel[p]).flatten()
        out.append((int(nz.min()) - m.pad_lo, int(nz.max()) - m.pad_lo))
    return out


def receptive_radius(model: nn.Module) -> int:
    """Receptive radius (LR pixels) derived from the architecture.

    Walks the model's spatial layers in registration order (which is forward
    order for every generator in ``trainer.models``) and propagates the interval
    of positions that one output cell depends on back to the LR input, through
    convolutions (radius k//2 * dilation), pixel shuffles (integer division) and
    MATLAB bicubic upsampling (its non-zero taps per phase). Skip connections are
    shorter paths and do not widen the interval.

    Returns the larger of the two axes' radii. Raises ReceptiveFieldError for a
    layer it cannot analyse (strided or even-kernel conv, unknown module).
    """
    ops = _spatial_ops(model)
    total = 1
    for kind, arg in ops:
        total *= arg if kind == "shuffle" else (arg.scale if kind == "bicubic" else 1)
    radius = 0
    for axis in (0, 1):
        lo, hi = 0, total - 1  # output cell 0: output pixels 0 .. scale-1
        for kind, arg in reversed(ops):
            if kind == "conv":
                lo, hi = lo - arg[axis], hi + arg[axis]
            elif kind == "shuffle":
                lo, hi = lo // arg, hi // arg
            else:
                offs = _bicubic_offsets(arg)
                s = arg.scale
                span = range(lo, hi + 1)
                lo = min(z // s + offs[z % s][0] for z in span)
                hi = max(z // s + offs[z % s][1] for z in span)
        radius = max(radius, -lo, hi)
    return radius


def measure_receptive_radius(model: nn.Module, max_radius: int, *, seed: int = 0) -> int:
    """Measure the receptive radius by perturbing the centre pixel of a random LR input.

    The perturbation is infinitesimal: the forward-mode derivative (``torch.func.jvp``)
    of a float64 copy of ``model`` at a random (1, C, n, n) input, n = 2 * (max_radius
    + 4) + 1, along a one-hot tangent at the centre pixel (all channels). Unlike a
    finite bump, a tiny influence (a product of many small edge taps) is not lost
    in rounding, and pixels outside the receptive field get an exact 0. Returns
    the largest LR-cell distance from the centre of an output pixel with a non-zero
    derivative; ``max_radius + 4`` means "at least that much" (it reached the border).

    Raises ReceptiveFieldError if no output pixel depends on the perturbed pixel.
    """
    m = copy.deepcopy(model).double().eval()
    for p in m.parameters():
        p.requires_grad_(False)
    scale = int(cast(int, model.scale))  # every generator in trainer.models has .scale and .hparams
    channels = int(cast(dict[str, Any], model.hparams).get("in_channels", 3))
    n = 2 * (max_radius + 4) + 1
    c = n // 2
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, channels, n, n, generator=g, dtype=torch.float64)
    tangent = torch.zeros_like(x)
    tangent[:, :, c, c] = 1.0
    dy = torch.func.jvp(m, (x,), (tangent,))[1]  # (output, its derivative along the tangent)
    hits = torch.nonzero(dy.abs().amax(dim=(0, 1)) > 0)  # (k, 2): output rows and columns
    rows, cols = hits[:, 0], hits[:, 1]
    if rows.numel() == 0:
        raise ReceptiveFieldError("perturbing an input pixel changed no output pixel; the model ignores its input")
    return int(max((rows // scale - c).abs().max(), (cols // scale - c).abs().max()))


def verify_receptive_radius(model: nn.Module) -> tuple[int, int]:
    """(stated, measured) radius; raises ReceptiveFieldError if measured > stated."""
    stated = receptive_radius(model)
    measured = measure_receptive_radius(model, stated)
    if measured > stated:
        raise ReceptiveFieldError(
            f"measured receptive radius {measured} LR px exceeds the derived {stated}: tiles padded by "
            f"{stated} would show seams. The layer walk in export/receptive.py misses a layer of this model.")
    if measured < stated:
        log.info("receptive radius: derived %d, measured %d (some taps are zero)", stated, measured)
    return stated, measured

"""Generators, discriminators and SRCNN: the one definition of each network, and the registries of
generator architectures (:data:`GENERATORS`; SPAN lives in ``trainer/span.py``) and discriminators
(:data:`DISCRIMINATORS`).

Every generator takes the LR image (float32 NCHW RGB in [0, 1]) and returns the
x``scale`` image; upsampling happens inside the network (SRGAN paper), never by
bicubic pre-upscaling outside it.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .span import SPAN

__all__ = ["SRResNet", "Discriminator", "UNetDiscriminator", "SRCNN", "MatlabBicubicUp", "ArchSpec", "GENERATORS",
           "DISCRIMINATORS", "arch_spec", "build_generator", "build_discriminator", "deploy_generator"]


def _conv(cin: int, cout: int, k: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, bn: bool):
        super().__init__()
        layers: list[nn.Module] = [_conv(channels, channels, 3, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm2d(channels))
        layers.append(nn.PReLU(channels))
        layers.append(_conv(channels, channels, 3, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm2d(channels))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """SRResNet generator of Ledig et al. (SRGAN).

    9x9 head + PReLU, ``blocks`` residual blocks (conv-BN-PReLU-conv-BN), a
    3x3 conv (+BN) with a long skip, log2(scale) stages of conv ->
    PixelShuffle(2) -> PReLU, and a 9x9 tail to RGB. The output is linear (not
    clamped); consumers clamp to [0, 1].

    Raises ValueError if scale is not a power of two or a size is not positive.
    """

    def __init__(self, *, scale: int = 4, channels: int = 64, blocks: int = 16, bn: bool = True,
                 in_channels: int = 3):
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"SRResNet scale must be a power of two >= 2, got {scale}")
        if channels < 1 or blocks < 0 or in_channels < 1:
            raise ValueError("channels and in_channels must be >= 1, blocks >= 0")
        self.hparams = dict(scale=scale, channels=channels, blocks=blocks, bn=bn, in_channels=in_channels)
        self.scale = scale
        self.head = nn.Sequential(_conv(in_channels, channels, 9), nn.PReLU(channels))
        self.body = nn.Sequential(*[_ResidualBlock(channels, bn) for _ in range(blocks)])
        trunk: list[nn.Module] = [_conv(channels, channels, 3, bias=not bn)]
        if bn:
            trunk.append(nn.BatchNorm2d(channels))
        self.trunk = nn.Sequential(*trunk)
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            ups += [_conv(channels, channels * 4, 3), nn.PixelShuffle(2), nn.PReLU(channels)]
        self.upsample = nn.Sequential(*ups)
        self.tail = _conv(channels, in_channels, 9)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        feat = self.head(lr)
        feat = feat + self.trunk(self.body(feat))
        return self.tail(self.upsample(feat))


class MatlabBicubicUp(nn.Module):
    """Integer-factor upsampling identical to MATLAB ``imresize(x, s, 'bicubic')``.

    Polyphase form of the a=-0.5 cubic kernel with symmetric edge padding: each
    of the s output phases is a fixed 4-tap separable filter, followed by a
    pixel shuffle. Exports to plain ONNX ops (Pad-free: slicing and Concat).
    """

    kernel: torch.Tensor  # buffer, registered in __init__

    def __init__(self, scale: int = 4):
        super().__init__()
        if scale < 2:
            raise ValueError(f"scale must be >= 2, got {scale}")
        self.scale = scale
        taps = []
        for p in range(scale):
            frac = (p + 0.5) / scale - 0.5  # output phase p sits at input coordinate i + frac
            base = math.floor(frac) - 1
            t = torch.tensor([base + k for k in range(4)], dtype=torch.float64)
            d = (frac - t).abs()
            w = torch.where(d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1,
                            torch.where(d <= 2, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2, torch.zeros_like(d)))
            taps.append((int(base), (w / w.sum()).float()))
        # All phases share the window [min_base, min_base + 4 + spread).
        lo = min(b for b, _ in taps)
        hi = max(b for b, _ in taps) + 4
        kernel = torch.zeros(scale, hi - lo)
        for p, (b, w) in enumerate(taps):
            kernel[p, b - lo: b - lo + 4] = w
        self.pad_lo, self.pad_hi = -lo, hi - 1
        self.register_buffer("kernel", kernel, persistent=False)

    def _pad(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        n = x.shape[dim]
        lo = [x.narrow(dim, min(i, n - 1), 1) for i in range(self.pad_lo - 1, -1, -1)]
        hi = [x.narrow(dim, max(n - 1 - i, 0), 1) for i in range(self.pad_hi)]
        return torch.cat(lo + [x] + hi, dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s, k = self.scale, self.kernel.shape[1]
        y = self._pad(self._pad(x, 2), 3).reshape(n * c, 1, h + k - 1, w + k - 1)
        kh = self.kernel.to(x.dtype).reshape(s, 1, k, 1)
        kw = self.kernel.to(x.dtype).reshape(s, 1, 1, k)
        y = F.conv2d(y, kh)  # (n*c, s, h, w + k - 1): phase along channels
        y = F.conv2d(y.reshape(n * c * s, 1, h, w + k - 1), kw)  # (n*c*s, s, h, w)
        y = y.reshape(n, c, s, s, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(n, c, h * s, w * s)


class SRCNN(nn.Module):
    """SRCNN 9-1-5 (Dong et al.) on MATLAB-bicubic-upsampled input.

    The bicubic upsampling is part of the module, so SRCNN takes the LR image
    like every other generator here. Output = conv stack (not residual), as
    in the original.
    """

    def __init__(self, *, scale: int = 4, f1: int = 64, f2: int = 32, in_channels: int = 3):
        super().__init__()
        if f1 < 1 or f2 < 1:
            raise ValueError("f1 and f2 must be >= 1")
        self.hparams = dict(scale=scale, f1=f1, f2=f2, in_channels=in_channels)
        self.scale = scale
        self.up = MatlabBicubicUp(scale)
        self.net = nn.Sequential(
            _conv(in_channels, f1, 9), nn.ReLU(inplace=True),
            _conv(f1, f2, 1), nn.ReLU(inplace=True),
            _conv(f2, in_channels, 5),
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.net(self.up(lr))


class Discriminator(nn.Module):
    """SRGAN discriminator: 8 conv blocks 64->512 (stride 2 every other),
    LeakyReLU(0.2), BN after the first, dense 1024, one logit (no sigmoid:
    the loss is BCE-with-logits).

    ``in_size`` is the HR patch size; it must be divisible by 16.
    """

    def __init__(self, *, in_size: int = 96, channels: int = 64, in_channels: int = 3):
        super().__init__()
        if in_size % 16:
            raise ValueError(f"discriminator in_size must be divisible by 16, got {in_size}")
        self.hparams = dict(in_size=in_size, channels=channels, in_channels=in_channels)
        layers: list[nn.Module] = [_conv(in_channels, channels, 3), nn.LeakyReLU(0.2, inplace=True)]
        cin = channels
        for i, cout in enumerate([channels, channels * 2, channels * 2, channels * 4, channels * 4,
                                  channels * 8, channels * 8]):
            stride = 2 if i % 2 == 0 else 1
            layers += [_conv(cin, cout, 3, stride=stride, bias=False), nn.BatchNorm2d(cout),
                       nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        feat = in_size // 16
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * feat * feat, 1024), nn.LeakyReLU(0.2, inplace=True), nn.Linear(1024, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class UNetDiscriminator(nn.Module):
    """U-Net discriminator with spectral normalisation, after the description in Real-ESRGAN
    (Wang et al., ICCVW 2021, section 3.3 and figure 6; written from the paper).

    A 3x3 stem, three stride-2 4x4 convolutions (``channels`` -> 2x -> 4x -> 8x), three stages of
    bilinear x2 upsampling + 3x3 convolution back down the same widths, each added to the feature
    map of its size on the way down (the skips), two 3x3 refinement convolutions and a 3x3 head to
    one logit **per pixel**: (N, 1, H, W), so the generator gets local feedback on each texture
    patch instead of one verdict per crop. Every convolution but the stem and the head is spectrally
    normalised, which the paper uses to keep the training stable and which it found to temper
    over-sharpening. LeakyReLU 0.2, no BatchNorm. ``in_size`` (the HR patch) must be divisible by 8.
    """

    def __init__(self, *, in_size: int = 96, channels: int = 64, in_channels: int = 3):
        super().__init__()
        if in_size % 8 or channels < 1:
            raise ValueError(f"U-Net discriminator: in_size must be divisible by 8 and channels >= 1, got "
                             f"{in_size}, {channels}")
        self.hparams = dict(in_size=in_size, channels=channels, in_channels=in_channels)
        sn = nn.utils.parametrizations.spectral_norm
        c = channels
        self.stem = _conv(in_channels, c, 3)
        self.down = nn.ModuleList(sn(nn.Conv2d(c * m, c * m * 2, 4, stride=2, padding=1, bias=False))
                                  for m in (1, 2, 4))
        self.up = nn.ModuleList(sn(_conv(c * m * 2, c * m, 3, bias=False)) for m in (4, 2, 1))
        self.refine = nn.Sequential(sn(_conv(c, c, 3, bias=False)), nn.LeakyReLU(0.2, inplace=True),
                                    sn(_conv(c, c, 3, bias=False)), nn.LeakyReLU(0.2, inplace=True))
        self.head = _conv(c, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [F.leaky_relu(self.stem(x), 0.2)]
        for conv in self.down:
            skips.append(F.leaky_relu(conv(skips[-1]), 0.2))
        y = skips.pop()
        for conv in self.up:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = F.leaky_relu(conv(y), 0.2) + skips.pop()
        return self.head(self.refine(y))


DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {
    "vgg": Discriminator,       # SRGAN's: one logit per crop
    "unet": UNetDiscriminator,  # Real-ESRGAN's: one logit per pixel, spectral norm
}


def build_discriminator(name: str, **hparams: Any) -> nn.Module:
    """Build a discriminator from :data:`DISCRIMINATORS`. Raises KeyError naming the choices."""
    try:
        cls = DISCRIMINATORS[name]
    except KeyError:
        raise KeyError(f"unknown discriminator {name!r}; choose one of {sorted(DISCRIMINATORS)}") from None
    return cls(**hparams)


@dataclass(frozen=True)
class ArchSpec:
    """One registered generator architecture: everything the trainer, the config and the
    exporter need to know about it, so a new architecture is one module plus one entry in
    :data:`GENERATORS`.

    ``hparams(cfg)`` maps a training config (``trainer.config.TrainConfig``) to the class's
    keyword arguments; ``deploy(model)`` returns the inference form that is exported (the
    same function; e.g. re-parameterised convolutions collapsed), default: the model itself.
    """

    cls: Callable[..., nn.Module]
    summary: str
    hparams: Callable[[Any], dict[str, Any]]
    deploy: Callable[[nn.Module], nn.Module] = field(default=lambda model: model)


def _deploy_span(model: nn.Module) -> nn.Module:
    if not isinstance(model, SPAN):
        raise TypeError(f"expected a SPAN, got {type(model).__name__}")
    return model.deploy()


GENERATORS: dict[str, ArchSpec] = {
    "srresnet": ArchSpec(SRResNet, "SRResNet (Ledig et al.): residual blocks, 2.2 M MACs per LR pixel at 16x64",
                         lambda c: dict(scale=c.scale, channels=c.channels, blocks=c.blocks, bn=c.bn)),
    "srcnn": ArchSpec(SRCNN, "SRCNN 9-1-5 on MATLAB-bicubic input", lambda c: dict(scale=c.scale)),
    "span": ArchSpec(SPAN, "SPAN (Wan et al. 2024): parameter-free attention, plain 3x3 convs "
                              "(trained in deploy form)",
                     lambda c: dict(scale=c.scale, channels=c.channels, blocks=c.blocks, rep=False),
                     _deploy_span),
    "span-rep": ArchSpec(SPAN, "SPAN trained with re-parameterisable Conv3XC convs (exported collapsed)",
                         lambda c: dict(scale=c.scale, channels=c.channels, blocks=c.blocks, rep=True),
                         _deploy_span),
    "span-nearest": ArchSpec(SPAN, "SPAN body with a resize-then-convolve upsampler (nearest x2 + conv per step): "
                                   "no per-phase weights, so no pixel-lattice pattern under perceptual losses",
                             lambda c: dict(scale=c.scale, channels=c.channels, blocks=c.blocks, rep=False,
                                            upsampler="nearest"),
                             _deploy_span),
}


def arch_spec(arch: str) -> ArchSpec:
    """The registry entry of ``arch``. Raises KeyError naming the choices."""
    try:
        return GENERATORS[arch]
    except KeyError:
        raise KeyError(f"unknown generator arch {arch!r}; choose one of {sorted(GENERATORS)}") from None


def build_generator(arch: str, **hparams: Any) -> nn.Module:
    """Build a generator from the registry. Raises KeyError naming the choices."""
    return arch_spec(arch).cls(**hparams)


def deploy_generator(arch: str, model: nn.Module) -> nn.Module:
    """The inference form of a generator of ``arch`` (what export writes); same outputs."""
    return arch_spec(arch).deploy(model)

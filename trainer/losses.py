"""Pixel, VGG content and adversarial losses."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["pixel_loss", "ContentLoss", "adversarial_g", "adversarial_d"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def pixel_loss(kind: str, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(sr, hr)
    if kind == "mse":
        return F.mse_loss(sr, hr)
    raise ValueError(f"unknown pixel loss {kind!r}; choose l1 or mse")


class ContentLoss(nn.Module):
    """Distance between VGG features of SR and HR (inputs in [0, 1], ImageNet-normalised here).

    ``feature_scale`` divides the features first (SRGAN paper: 12.75).
    """

    def __init__(self, features: nn.Module, criterion: str = "mse", feature_scale: float = 1.0):
        super().__init__()
        if criterion not in ("mse", "l1"):
            raise ValueError(f"unknown content criterion {criterion!r}; choose mse or l1")
        self.features, self.criterion, self.feature_scale = features, criterion, feature_scale
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std) / self.feature_scale

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self._phi(hr)
        pred = self._phi(sr)
        fn = F.mse_loss if self.criterion == "mse" else F.l1_loss
        return fn(pred.float(), target.float())


def adversarial_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(LR)) in the numerically stable BCE-with-logits form."""
    return F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits, dtype=torch.float32))


def adversarial_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(HR) - log(1 - D(G(LR))), as BCE with logits (mean of the two terms' batch means)."""
    real = F.binary_cross_entropy_with_logits(real_logits.float(), torch.ones_like(real_logits, dtype=torch.float32))
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float32))
    return real + fake

"""SPAN: a fast x-scale generator after Wan et al., "Swift Parameter-free Attention Network
for Efficient Super-Resolution" (CVPR Workshops 2024, NTIRE 2024 Efficient SR winner;
arXiv:2311.12770). Written here from the paper's description.

Structure (all convolutions stride 1, 'same' padding, so the network is translation
equivariant with a finite receptive radius, as the exact tiler needs):

* ``head``: 3x3 conv, 3 -> C channels (feature F0).
* ``blocks``: B Swift Parameter-free Attention Blocks (SPAB). Block i computes
  ``H = conv3(silu(conv2(silu(conv1(O)))))`` and returns ``(O + H) * (sigmoid(H) - 0.5)``:
  the attention map is the origin-symmetric activation of the block's own features
  (no parameters, no pooling), applied to the residual sum.
* ``trunk``: 3x3 conv on the last block's output; ``fuse``: 1x1 conv on the channel
  concatenation of F0, O1, O(B-1) and trunk(O(B)) (the paper's feature fusion).
* ``tail``: 3x3 conv to 3 * scale^2 channels and one PixelShuffle(scale). To this,
  before the shuffle, the LR input repeated scale^2 times is added: a nearest-neighbour
  "anchor" skip (Du et al., "Anchor-based Plain Net for Mobile Image Super-Resolution",
  CVPRW 2021), so the network only learns the residual; it costs one add per output pixel.
* ``upsampler="nearest"`` (this project's variant, not the paper's): instead of the tail and
  the shuffle, a 3x3 conv to ``up_channels`` features, then per factor of the scale (2s, then
  3s) a nearest-neighbour upsampling and a 3x3 conv + LeakyReLU(0.2) at the new resolution, and
  a 3x3 conv to RGB; the nearest-upsampled LR is the anchor. Resize-then-convolve (Odena et al.,
  "Deconvolution and Checkerboard Artifacts", Distill 2016) has no per-phase weights, so it
  cannot paint a fixed pattern on the x``scale`` pixel lattice, which the pixel shuffle learned
  under the perceptual loss (TRAINING.md, fast_gan3). Costs ~40 K more multiply-adds per LR pixel.

Re-parameterisation (the paper's Conv3XC): with ``rep=True`` every 3x3 conv trains in an
expanded form, 1x1 (C_in -> g*C_in) -> 3x3 (g*C_in -> g*C_out) -> 1x1 (g*C_out -> C_out)
plus a 1x1 shortcut (C_in -> C_out), g = ``rep_gain``. The expansion is linear, so it
collapses exactly into one 3x3 conv (:meth:`RepConv3.fused`); :meth:`SPAN.deploy` returns
the plain network (``rep=False``) with the collapsed weights, which is what is exported.
With ``rep=False`` the network trains directly in its deploy form (4-5x cheaper per step).

Defaults follow the paper's SPAN (48 channels, 6 blocks): ~0.43 M multiply-adds per LR
pixel in the deploy form (SRResNet-16: 2.2 M).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SPAN", "RepConv3", "UPSAMPLERS"]

UPSAMPLERS = ("shuffle", "nearest")


def _factors(scale: int) -> list[int]:
    """``scale`` as 2s then 3s (4 -> [2, 2], 6 -> [2, 3]); [] when it has another prime factor."""
    out, rest = [], scale
    for f in (2, 3):
        while rest % f == 0:
            out.append(f)
            rest //= f
    return out if rest == 1 else []


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    """A conv's bias in float64 (every conv here is built with one)."""
    if conv.bias is None:
        raise ValueError("RepConv3 convs are built with a bias")
    return conv.bias.double()


class RepConv3(nn.Module):
    """A 3x3 'same' convolution that trains in SPAN's expanded Conv3XC form.

    ``forward`` runs the expanded branches; :meth:`fused` returns the (weight, bias) of the
    single 3x3 conv they equal (exactly, up to float rounding). Input/output: float NCHW.
    """

    def __init__(self, cin: int, cout: int, gain: int = 2):
        super().__init__()
        if gain < 1:
            raise ValueError(f"rep_gain must be >= 1, got {gain}")
        self.skip = nn.Conv2d(cin, cout, 1)
        self.expand = nn.Conv2d(cin, cin * gain, 1)
        self.conv = nn.Conv2d(cin * gain, cout * gain, 3)  # valid: the input is padded first
        self.squeeze = nn.Conv2d(cout * gain, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Zero-pad the input, not the expanded features: the expand conv's bias then also fills the
        # border ring, exactly as the fused 3x3 conv's bias (which sums that bias over all 9 taps) assumes.
        return self.skip(x) + self.squeeze(self.conv(self.expand(F.pad(x, (1, 1, 1, 1)))))

    @torch.no_grad()
    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (cout, cin, 3, 3), bias (cout,)) of the equivalent single 3x3 conv, float64-computed."""
        b1, b2, b3, bs = (_bias(c) for c in (self.expand, self.conv, self.squeeze, self.skip))
        w1 = self.expand.weight.double()[:, :, 0, 0]                                       # (gi, i)
        w2 = self.conv.weight.double()                                                     # (go, gi, 3, 3)
        w3 = self.squeeze.weight.double()[:, :, 0, 0]                                      # (o, go)
        ws = self.skip.weight.double()[:, :, 0, 0]                                         # (o, i)
        w = torch.einsum("op,pqyx,qi->oiyx", w3, w2, w1)
        w[:, :, 1, 1] += ws
        b = w3 @ (b2 + torch.einsum("pqyx,q->p", w2, b1)) + b3 + bs
        return w.to(self.skip.weight.dtype), b.to(self.skip.weight.dtype)


def _conv3(cin: int, cout: int, rep: bool, gain: int) -> nn.Module:
    return RepConv3(cin, cout, gain) if rep else nn.Conv2d(cin, cout, 3, padding=1)


class _SPAB(nn.Module):
    """Swift parameter-free attention block: (O + H) * (sigmoid(H) - 0.5), H a 3-conv stack."""

    def __init__(self, channels: int, rep: bool, gain: int):
        super().__init__()
        self.conv1 = _conv3(channels, channels, rep, gain)
        self.conv2 = _conv3(channels, channels, rep, gain)
        self.conv3 = _conv3(channels, channels, rep, gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv3(F.silu(self.conv2(F.silu(self.conv1(x)))))
        return (x + h) * (torch.sigmoid(h) - 0.5)


class SPAN(nn.Module):
    """SPAN generator (see the module docstring). LR float NCHW RGB in [0, 1] -> (N, 3, H*scale,
    W*scale), linear (not clamped). Receptive radius 3 * blocks + 3 LR pixels.

    Raises ValueError if scale < 2, channels < 1, blocks < 2 (the fusion needs O1 and O(B-1))
    or rep_gain < 1.
    """

    def __init__(self, *, scale: int = 4, channels: int = 48, blocks: int = 6, rep: bool = True,
                 rep_gain: int = 2, in_channels: int = 3, upsampler: str = "shuffle", up_channels: int = 16):
        super().__init__()
        factors = _factors(scale)
        if (scale < 2 or channels < 1 or blocks < 2 or rep_gain < 1 or in_channels < 1 or up_channels < 1
                or upsampler not in UPSAMPLERS or (upsampler == "nearest" and not factors)):
            raise ValueError(f"SPAN needs scale >= 2 (a product of 2s and 3s for the nearest upsampler), "
                             f"channels >= 1, blocks >= 2, rep_gain >= 1, up_channels >= 1, upsampler in "
                             f"{UPSAMPLERS}; got scale={scale}, channels={channels}, blocks={blocks}, "
                             f"rep_gain={rep_gain}, up_channels={up_channels}, upsampler={upsampler!r}")
        self.hparams: dict[str, Any] = dict(scale=scale, channels=channels, blocks=blocks, rep=rep, rep_gain=rep_gain,
                            in_channels=in_channels, upsampler=upsampler, up_channels=up_channels)
        self.scale = scale
        # Registration order = forward order along the longest path (export/receptive.py walks it).
        self.head = _conv3(in_channels, channels, rep, rep_gain)
        self.blocks = nn.ModuleList(_SPAB(channels, rep, rep_gain) for _ in range(blocks))
        self.trunk = _conv3(channels, channels, rep, rep_gain)
        self.fuse = nn.Conv2d(4 * channels, channels, 1)
        if upsampler == "shuffle":
            self.tail = nn.Conv2d(channels, in_channels * scale * scale, 3, padding=1)
            self.shuffle = nn.PixelShuffle(scale)
        else:
            self.up_in = nn.Conv2d(channels, up_channels, 3, padding=1)
            self.up = nn.Sequential(*(layer for f in factors for layer in (
                nn.Upsample(scale_factor=f, mode="nearest"), nn.Conv2d(up_channels, up_channels, 3, padding=1),
                nn.LeakyReLU(0.2))))
            self.up_out = nn.Conv2d(up_channels, in_channels, 3, padding=1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        f0 = self.head(lr)
        outs = []
        o = f0
        for block in self.blocks:
            o = block(o)
            outs.append(o)
        feat = self.fuse(torch.cat([f0, outs[0], outs[-2], self.trunk(outs[-1])], dim=1))
        if self.hparams["upsampler"] == "nearest":
            return self.up_out(self.up(self.up_in(feat))) + F.interpolate(lr, scale_factor=self.scale, mode="nearest")
        n, c, h, w = lr.shape
        s2 = self.scale * self.scale
        anchor = lr.unsqueeze(2).expand(n, c, s2, h, w).reshape(n, c * s2, h, w)
        return self.shuffle(self.tail(feat) + anchor)

    def deploy(self) -> SPAN:
        """The same function as a plain network (``rep=False``): every RepConv3 collapsed into one
        3x3 conv. Returns a new module in eval mode (self is unchanged); identity when already plain."""
        plain = SPAN(**{**self.hparams, "rep": False})
        modules = dict(self.named_modules())
        fused = {name: m.fused() for name, m in modules.items() if isinstance(m, RepConv3)}
        own = self.state_dict()
        state = {}
        for key in plain.state_dict():
            owner, kind = key.rsplit(".", 1)
            state[key] = fused[owner][0 if kind == "weight" else 1] if owner in fused else own[key]
        ref = next(self.parameters())
        plain = plain.to(device=ref.device, dtype=ref.dtype)
        plain.load_state_dict(state, strict=True)
        return plain.eval()

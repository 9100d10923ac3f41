"""Pixel, VGG content and adversarial losses."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from srgan.runtime.metrics import Y_WEIGHTS, gaussian_taps

__all__ = ["pixel_loss", "usm_sharpen", "lowfreq_loss", "lattice_loss", "chroma_loss", "chroma_highpass",
           "artifact_map", "artifact_loss", "edge_loss", "ContentLoss", "LPIPS_VGG16_TAPS", "adversarial_g",
           "adversarial_d"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision VGG-16 ``features`` indices of conv1_2, conv2_2, conv3_3, conv4_3, conv5_3: LPIPS (Zhang et al., CVPR
# 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric") reads the ReLUs after them. Its input
# scaling ((2x - 1 - shift) / scale) is exactly the ImageNet normalisation above, so it shares the content loss's pass.
LPIPS_VGG16_TAPS = (2, 7, 14, 21, 28)


def pixel_loss(kind: str, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(sr, hr)
    if kind == "mse":
        return F.mse_loss(sr, hr)
    raise ValueError(f"unknown pixel loss {kind!r}; choose l1 or mse")


def usm_sharpen(hr: torch.Tensor, amount: float, *, size: int = 51, threshold: float = 10.0 / 255) -> torch.Tensor:
    """Unsharp-masked copy of an (N, C, H, W) batch in [0, 1]: the sharpened GT of Real-ESRGAN
    (Wang et al., ICCVW 2021), which its pixel and perceptual terms compare with so that the
    model aims a little sharper than the HR (its discriminator still sees the plain HR).

    As described there: a Gaussian blur of ``size`` x ``size`` taps (sigma from the size by
    OpenCV's rule for sigma 0: 8.0 for 51); the residual ``hr - blur``; ``hr + amount *
    residual``, clamped to [0, 1], is taken where ``|residual| > threshold``, with that mask
    softened by the same blur so the sharpened and plain regions meet without a seam; the
    rest stays ``hr``. One difference: edges are replicated (Real-ESRGAN reflects), so a patch
    smaller than the kernel works. No gradient (a target).
    """
    if amount == 0:
        return hr
    g = hr.new_tensor(gaussian_taps(size, 0.3 * ((size - 1) * 0.5 - 1) + 0.8), dtype=torch.float32)

    def blur(img: torch.Tensor) -> torch.Tensor:
        pad = size // 2
        out = F.pad(img, (pad, pad, pad, pad), mode="replicate")
        out = F.conv2d(out, g.view(1, 1, 1, size).expand(img.shape[1], 1, 1, size), groups=img.shape[1])
        return F.conv2d(out, g.view(1, 1, size, 1).expand(img.shape[1], 1, size, 1), groups=img.shape[1])

    with torch.no_grad():
        img = hr.float()
        residual = img - blur(img)
        soft = blur((residual.abs() > threshold).float())
        sharp = (img + amount * residual).clamp(0, 1)
        return (soft * sharp + (1 - soft) * img).to(hr.dtype)


def lowfreq_loss(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    """L1 between ``sr`` and ``hr`` averaged over scale x scale blocks: colour and LR-scale fidelity.

    Perceptual losses push the image's mean colour (a VGG-16 fine-tune here
    darkened blue by ~3.5 levels) while a full-resolution pixel loss, which also
    fights texture, resists too weakly; this term pins what the LR input already
    determines and leaves the detail inside each block to the other losses.
    """
    return F.l1_loss(F.avg_pool2d(sr.float(), scale), F.avg_pool2d(hr.float(), scale))


def lattice_loss(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean |phase mean| of the error ``sr - hr`` on the x``scale`` pixel lattice: the checkerboard penalty.

    The error of each image and channel is averaged over each of the scale x scale
    sub-pixel positions, less their overall mean. That is the error's content at
    the lattice frequencies (k / scale cycles per pixel), where a pixel-shuffle
    checkerboard lives and ``runtime.metrics.lattice_ratio`` measures it. Perceptual
    and adversarial gradients push on exactly these few frequencies while the
    pixel loss barely resists; an L1 penalty here holds them at the HR's value
    and leaves all other frequencies (texture) to the other losses.
    """
    n, c, h, w = sr.shape
    e = (sr.float() - hr.float())[..., : h - h % scale, : w - w % scale]
    phase = e.reshape(n, c, h // scale, scale, w // scale, scale).mean(dim=(2, 4))
    return (phase - phase.mean(dim=(2, 3), keepdim=True)).abs().mean()


# BT.601 Cb, Cr rows for RGB in [0, 1] (offsets dropped): the chroma of runtime.metrics.chroma_noise_ratio.
_CBCR = ((-37.797 / 255, -74.203 / 255, 112.0 / 255), (112.0 / 255, -93.786 / 255, -18.214 / 255))


def chroma_highpass(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(N, 2, H, W) high-frequency Cb, Cr of an (N, 3, H, W) RGB batch in [0, 1]: each chroma plane
    less two passes of a ``scale + 1`` (odd) box mean, edges replicated. The same band
    ``runtime.metrics.chroma_noise_ratio`` measures: detail finer than about one LR pixel."""
    w = x.new_tensor(_CBCR).view(2, 3, 1, 1)
    c = F.conv2d(x.float(), w.float())
    k = scale + 1 if scale % 2 == 0 else scale
    low = c
    for _ in range(2):
        low = F.avg_pool2d(F.pad(low, (k // 2,) * 4, mode="replicate"), k, stride=1)
    return c - low


def chroma_loss(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    """L1 between the high-frequency chroma (:func:`chroma_highpass`) of ``sr`` and ``hr``.

    The colour-noise fix: perceptual and adversarial gradients invent fine detail in all three
    channels, and nothing ties its colour to the HR's, so green/magenta speckle appears inside
    windows and foliage. This term holds the fine chroma at the HR's (mostly: none) and leaves
    fine luminance detail, which the perceptual terms are there to make, untouched.
    """
    return F.l1_loss(chroma_highpass(sr, scale), chroma_highpass(hr, scale))


def artifact_map(sr: torch.Tensor, sr_ema: torch.Tensor, hr: torch.Tensor, *, window: int = 7,
                 power: float = 5.0) -> torch.Tensor:
    """(N, 1, H, W) artifact map of LDL (Liang, Zeng and Zhang, "Details or Artifacts: A Locally
    Discriminative Learning Approach to Realistic Image Super-Resolution", CVPR 2022), no gradient.

    The residual ``|hr - sr|`` (summed over channels) has a high local variance where a GAN
    paints wrong structure (wobbly lines, aliasing, speckle) and a low one where it paints
    plausible texture, whose error is spread evenly. The map is that local variance over a
    ``window`` x ``window`` neighbourhood (unbiased, edges replicated: the paper zero-pads)
    times the patch's global residual variance to the power 1 / ``power`` (the paper's
    sigma = var(R)^(1/5), so patches with little error are penalised little). As in the
    paper, it is kept only where the EMA of G is closer to ``hr`` than G is now
    (``|hr - sr_ema| < |hr - sr|`` summed over channels): there the artefact is new and unstable,
    where G already beats its average it is left to the other losses. One difference: a tie
    (only at a run's first step, where the EMA is G) counts as not new here; the paper keeps it.
    """
    with torch.no_grad():
        r = (hr.float() - sr.float()).abs().sum(dim=1, keepdim=True)
        r_ema = (hr.float() - sr_ema.float()).abs().sum(dim=1, keepdim=True)
        pad = window // 2
        rp = F.pad(r, (pad,) * 4, mode="replicate")
        mean = F.avg_pool2d(rp, window, stride=1)
        local_var = (F.avg_pool2d(rp * rp, window, stride=1) - mean * mean).clamp_min(0) * (
            window * window / (window * window - 1))
        global_var = r.flatten(1).var(dim=1).view(-1, 1, 1, 1)
        return local_var * global_var.pow(1.0 / power) * (r_ema < r)


def artifact_loss(sr: torch.Tensor, sr_ema: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """LDL's artefact term: L1 between ``sr`` and ``hr`` weighted per pixel by :func:`artifact_map`
    (summed over the map's pixels and channels, divided by the element count, as a mean L1)."""
    m = artifact_map(sr, sr_ema, hr)
    return (m * (sr.float() - hr.float()).abs()).mean()


def edge_loss(sr: torch.Tensor, hr: torch.Tensor, scale: int, *, min_step: float = 20.0 / 255) -> torch.Tensor:
    """Edge-position term: L1 between the signed vertical and horizontal Y steps of ``sr`` and ``hr``,
    counted only within ``scale`` pixels (across the edge) of a strong step of ``hr``.

    From the gradient loss of SPSR (Ma et al., "Structure-Preserving Super Resolution with Gradient
    Guidance", CVPR 2020), which holds SR's gradient map to HR's so that GAN texture does not bend
    structure. Two differences: the steps are signed and per axis (an edge moved by a pixel changes
    where its step lies, not how large it is, so a magnitude map barely sees it), and the term is
    masked to where ``runtime.metrics.edge_wobble`` looks: near HR steps of at least ``min_step``
    (20 levels of 255), widened by ``scale`` pixels across the edge so that a step painted beside
    the true one is penalised too. Elsewhere (texture, flat areas) it is zero and leaves the other
    losses alone. The mean is over all step positions of both axes, like a mean L1.
    """
    w = sr.new_tensor(Y_WEIGHTS).float().view(1, 3, 1, 1)  # the luma edge_wobble measures (offset dropped)
    ys, yh = (sr.float() * w).sum(dim=1, keepdim=True), (hr.float() * w).sum(dim=1, keepdim=True)
    total = sr.new_zeros((), dtype=torch.float32)
    for dim, k in ((2, (2 * scale + 1, 1)), (3, (1, 2 * scale + 1))):
        gs, gh = ys.diff(dim=dim), yh.diff(dim=dim)
        near = F.max_pool2d((gh.abs() >= min_step).float(), k, stride=1, padding=(k[0] // 2, k[1] // 2))
        total = total + (near * (gs - gh).abs()).mean()
    return total / 2


class ContentLoss(nn.Module):
    """Distance between VGG features of SR and HR (inputs in [0, 1], ImageNet-normalised here).

    ``feature_scale`` divides the features first (SRGAN paper: 12.75). ``taps`` are
    (index in ``features``, weight) pairs whose distances are summed (Real-ESRGAN style
    multi-layer loss); the default is the last layer alone, weight 1.

    With ``lpips_heads`` (LPIPS v0.1's five VGG linear heads, :func:`trainer.pretrained.load_lpips_heads`) the same
    pass also gives the LPIPS-VGG distance (:meth:`terms`): at each :data:`LPIPS_VGG16_TAPS` ReLU, the channel vectors
    unit-normalised, their squared difference weighed by the head, averaged over positions, summed over layers.
    ``features`` must then be VGG-16's through conv5_3.
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, features: nn.Sequential, criterion: str = "mse", feature_scale: float = 1.0,
                 taps: Sequence[Sequence[float]] | None = None, lpips_heads: Sequence[torch.Tensor] | None = None):
        super().__init__()
        if criterion not in ("mse", "l1"):
            raise ValueError(f"unknown content criterion {criterion!r}; choose mse or l1")
        self.features, self.criterion, self.feature_scale = features, criterion, feature_scale
        self.taps = dict(sorted((int(i), float(w)) for i, w in (taps or [(len(features) - 1, 1.0)])))  # net order
        if not all(0 <= i < len(features) for i in self.taps):
            raise ValueError(f"content taps {sorted(self.taps)} outside the {len(features)}-layer feature net")
        self.heads = nn.ParameterList()  # frozen; empty without LPIPS
        if lpips_heads is not None:
            widths = [features[i].out_channels if i < len(features) and isinstance(features[i], nn.Conv2d) else None
                      for i in LPIPS_VGG16_TAPS]
            if widths != [h.shape[1] for h in lpips_heads]:
                raise ValueError(f"LPIPS-VGG needs VGG-16 features through conv5_3 (convs at {LPIPS_VGG16_TAPS}); "
                                 f"this {len(features)}-layer net has widths {widths} there: use the VGG-16 trunk "
                                 "(--vgg-weights) and a content layer reaching conv5_3")
            self.heads.extend(nn.Parameter(h.detach().float().clone(), requires_grad=False) for h in lpips_heads)
        self._wanted = sorted(set(self.taps) | (set(LPIPS_VGG16_TAPS) if lpips_heads is not None else set()))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _phi(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        x, out = (x - self.mean) / self.std, {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._wanted:
                out[i] = x
            if len(out) == len(self._wanted):
                break
        return out

    def terms(self, sr: torch.Tensor, hr: torch.Tensor, *, lpips: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(content distance, LPIPS-VGG distance), from one VGG pass of each image; the second is None without
        heads or with ``lpips=False`` (a phase that does not weigh it skips its arithmetic)."""
        with torch.no_grad():
            targets = self._phi(hr)
        feats = self._phi(sr)
        fn = F.mse_loss if self.criterion == "mse" else F.l1_loss
        content = torch.stack([w * fn(feats[i].float() / self.feature_scale, targets[i].float() / self.feature_scale)
                               for i, w in self.taps.items()]).sum()
        if not (lpips and len(self.heads)):
            return content, None

        def unit(f: torch.Tensor) -> torch.Tensor:
            f = F.relu(f.float())
            return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)

        lp = torch.stack([(h * (unit(feats[i]) - unit(targets[i])).pow(2)).sum(1).mean()
                          for i, h in zip(LPIPS_VGG16_TAPS, self.heads)]).sum()
        return content, lp

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.terms(sr, hr, lpips=False)[0]


def adversarial_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(LR)) in the numerically stable BCE-with-logits form."""
    return F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits, dtype=torch.float32))


def adversarial_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(HR) - log(1 - D(G(LR))), as BCE with logits (mean of the two terms' batch means)."""
    real = F.binary_cross_entropy_with_logits(real_logits.float(), torch.ones_like(real_logits, dtype=torch.float32))
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float32))
    return real + fake

"""Pretrained ImageNet trunks (VGG for the content loss, AlexNet for LPIPS).

Weights come from torchvision's cache (``$TORCH_HOME/hub/checkpoints``, with
torchvision's own file names), from a download into that cache when online,
or from a file the user names (``.pth`` or ``.safetensors`` in torchvision's
key layout). Missing weights are a PretrainedWeightsError naming the exact file
and folder; random weights only when the caller asks for them by name.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srgan.runtime.errors import SRGANError

__all__ = ["PretrainedWeightsError", "read_state_dict", "quantize_int8", "INT8_SCALE", "vgg_layer_index",
           "parse_layer_spec", "load_vgg_features", "load_alexnet_features", "load_lpips", "load_lpips_heads",
           "torchvision_cache_file"]

log = logging.getLogger(__name__)

_VGG_CFG = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class PretrainedWeightsError(SRGANError):
    """Raised if pretrained weights are missing, unreadable, or of the wrong network."""


def _layer_names(arch: str) -> dict[str, int]:
    names: dict[str, int] = {}
    idx, block, k = 0, 1, 1
    for v in _VGG_CFG[arch]:
        if v == "M":
            names[f"pool{block}"] = idx
            idx, block, k = idx + 1, block + 1, 1
        else:
            names[f"conv{block}_{k}"] = idx
            names[f"relu{block}_{k}"] = idx + 1
            idx, k = idx + 2, k + 1
    return names


def vgg_layer_index(arch: str, layer: str) -> tuple[int, str]:
    """Index in ``vgg.features`` of a named layer (e.g. relu5_4), and the name used.

    VGG-16 has no 4th layer in blocks 3-5 (conv3_4 ... relu5_4): those map to the
    last layer of the same kind in the block (conv3_3 ... relu5_3), and the returned
    name says so. Raises ValueError for a name that does not exist in either network.
    """
    names = _layer_names(arch)
    if layer in names:
        return names[layer], layer
    kind, _, pos = layer.partition("_")
    if arch == "vgg16" and pos == "4" and f"{kind}_3" in names and layer in _layer_names("vgg19"):
        mapped = f"{kind}_3"
        return names[mapped], mapped
    raise ValueError(f"unknown VGG layer {layer!r}; examples: relu2_2, relu5_4, conv5_4")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a .pth/.pt (weights_only) or .safetensors state dict, fp32 (a :func:`quantize_int8` file is
    dequantized). Raises PretrainedWeightsError."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(f"cannot read weights file {path}: {exc}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    for key in [k for k in sd if k.endswith(INT8_SCALE)]:  # a file from quantize_int8: dequantize
        scale, name = sd.pop(key), key[: -len(INT8_SCALE)]
        if name not in sd or sd[name].dtype != torch.int8 or scale.shape != sd[name].shape[:1]:
            raise PretrainedWeightsError(f"{path}: {key} has no int8 tensor {name} of {scale.numel()} channels")
        sd[name] = sd[name].float() * scale.float().view(-1, *([1] * (sd[name].dim() - 1)))
    return {k: v.float() for k, v in sd.items()}


INT8_SCALE = ".int8_scale"


def quantize_int8(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Conv weights to int8 with one fp32 scale per output channel (symmetric, max |w| -> 127), for
    carrying a frozen loss network where bytes are scarce (a lent GPU call: VGG-16's 58.9 MB -> 14.7 MB).

    Each 4-D tensor ``k`` becomes int8 ``k`` plus ``k + INT8_SCALE``; other tensors stay as they are.
    :func:`read_state_dict` undoes it (the weights then differ from the originals by at most half a
    step, max |w| / 254, per channel)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if v.dim() != 4:
            out[k] = v.float().contiguous()
            continue
        scale = v.float().abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127
        out[k] = torch.round(v.float() / scale.view(-1, 1, 1, 1)).clamp(-127, 127).to(torch.int8).contiguous()
        out[k + INT8_SCALE] = scale.contiguous()
    return out


def torchvision_cache_file(weights_enum) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_enum.url).name


def _from_torchvision(weights_enum, what: str, flag: str) -> dict[str, torch.Tensor]:
    cached = torchvision_cache_file(weights_enum)
    if cached.is_file():
        return read_state_dict(cached)
    try:
        return weights_enum.get_state_dict(progress=False)
    except Exception as exc:
        raise PretrainedWeightsError(
            f"{what} ImageNet weights are not available: expected {cached.name} in {cached.parent} "
            f"(torchvision's cache, set by TORCH_HOME) and the download failed ({type(exc).__name__}). "
            f"Put torchvision's {cached.name} there, or pass {flag} FILE (a torchvision-layout .pth or "
            f".safetensors state dict)."
        ) from None


def _features_only(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith("features.") for k in sd):
        return {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    return sd


def parse_layer_spec(spec: str) -> list[tuple[str, float]]:
    """``"relu5_4"`` or ``"conv1_2:0.1,conv2_2:0.1,conv5_4:1"`` -> [(layer, weight), ...] (weight 1 if omitted).

    Raises ValueError for an empty spec or an unreadable weight."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        name, _, weight = part.partition(":")
        try:
            out.append((name.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"content layer {part!r}: weight {weight!r} is not a number") from None
    if not out or any(not name for name, _ in out):
        raise ValueError(f"content layer spec {spec!r} is empty; e.g. relu5_4 or conv1_2:0.1,conv5_4:1")
    return out


def load_vgg_features(layer: str, weights: Path | None = None, *, random_weights: bool = False
                      ) -> tuple[nn.Sequential, dict[str, Any]]:
    """VGG ``features`` truncated after ``layer``, frozen, in eval mode.

    ``layer`` is one name (``relu5_4``) or weighted taps (``conv1_2:0.1,conv5_4:1``, see
    :func:`parse_layer_spec`); the net then ends at the deepest tap and its ReLUs are not in-place,
    so a pre-activation tap keeps its value.
    With ``weights`` the file decides the network: keys up to ``features.34``
    mean VGG-19, up to ``features.28`` VGG-16 (relu5_4 then maps to relu5_3).
    Without it, torchvision's VGG-19 ImageNet weights from its cache.
    Returns (module, info) with info = {arch, layer, requested_layer, source, taps}; ``taps`` lists
    [index in the net, weight] for :class:`trainer.losses.ContentLoss`.
    """
    import torchvision

    requested = parse_layer_spec(layer)
    if random_weights:
        arch, sd, source = "vgg19", None, "RANDOM (explicitly requested; not a perceptual loss)"
    elif weights is not None:
        sd = _features_only(read_state_dict(weights))
        top = max((int(k.split(".")[0]) for k in sd if k.split(".")[0].isdigit()), default=-1)
        found = {34: "vgg19", 28: "vgg16"}.get(top)
        if found is None:
            raise PretrainedWeightsError(
                f"{weights} is not a torchvision VGG-16/VGG-19 features state dict (last conv index {top})")
        arch = found
        source = str(weights)
    else:
        arch = "vgg19"
        sd = _features_only(_from_torchvision(torchvision.models.VGG19_Weights.IMAGENET1K_V1, "VGG-19",
                                              "--vgg-weights"))
        source = "torchvision VGG19_Weights.IMAGENET1K_V1"
    resolved = [(*vgg_layer_index(arch, name), w) for name, w in requested]
    net = getattr(torchvision.models, arch)(weights=None).features
    if sd is not None:
        missing, unexpected = net.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise PretrainedWeightsError(f"VGG weights from {source} do not fit {arch}: missing {missing[:4]}, "
                                         f"unexpected {unexpected[:4]}")
    net = net[: max(i for i, _, _ in resolved) + 1].eval()
    for p in net.parameters():
        p.requires_grad_(False)
    for m in net:
        if isinstance(m, nn.ReLU):
            m.inplace = False
    if len(resolved) == 1:
        used = resolved[0][1]
    else:
        used = ",".join(f"{name}:{w:g}" for _, name, w in resolved)
    if [n for _, n, _ in resolved] != [n for n, _ in requested]:
        log.warning("content loss: %s has no %s; using %s instead", arch, layer, used)
    return net, {"arch": arch, "layer": used, "requested_layer": layer, "source": source,
                 "taps": [[i, w] for i, _, w in resolved]}


def load_alexnet_features(weights: Path | None = None) -> tuple[nn.Sequential, str]:
    """torchvision AlexNet ``features`` with ImageNet weights (cache or file)."""
    import torchvision

    if weights is not None:
        sd, source = _features_only(read_state_dict(weights)), str(weights)
    else:
        sd = _features_only(_from_torchvision(torchvision.models.AlexNet_Weights.IMAGENET1K_V1, "AlexNet",
                                              "--lpips-weights"))
        source = "torchvision AlexNet_Weights.IMAGENET1K_V1"
    net = torchvision.models.alexnet(weights=None).features
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise PretrainedWeightsError(f"AlexNet weights from {source} do not fit: missing {missing[:4]}, "
                                     f"unexpected {unexpected[:4]}")
    return net.eval(), source


def load_lpips_heads(net: str = "vgg") -> list[torch.Tensor]:
    """LPIPS v0.1's five linear heads for ``net`` (alex | vgg | squeeze), as bundled in the lpips package: one
    (1, C, 1, 1) non-negative channel weighting per tapped layer, in tap order."""
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: no LPIPS v0.1 heads for {net!r} in the installed lpips package; "
                                     "reinstall it (pip install lpips)")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return [sd[f"lin{i}.model.1.weight"].float() for i in range(sum(k.startswith("lin") for k in sd))]


def load_lpips(weights: Path | None = None) -> tuple[nn.Module, str]:
    """LPIPS v0.1 (AlexNet) from the lpips package with its bundled linear heads and an
    ImageNet AlexNet trunk from torchvision's cache or ``weights``. Input: [-1, 1] NCHW RGB.
    """
    import lpips

    trunk, source = load_alexnet_features(weights)
    model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    for i in range(1, 6):
        for name, module in getattr(model.net, f"slice{i}").named_children():
            module.load_state_dict(trunk[int(name)].state_dict())
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, source

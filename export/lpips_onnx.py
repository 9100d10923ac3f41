"""AlexNet LPIPS v0.1 as an ONNX file, so the torch-free runtime can score perceptual quality.

The graph: inputs ``img0`` and ``img1``, float32 (N, 3, H, W) RGB in **[0, 1]**
(scaled to [-1, 1] inside, as ``lpips.LPIPS(..., normalize=True)`` does), dynamic
N, H and W with H, W >= :data:`MIN_SIDE`; output ``distance``, float32 (N,), one
LPIPS distance per image pair (lower = more alike). The trunk is torchvision's
ImageNet AlexNet (its cache, or a file), the linear heads the lpips package's v0.1.
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srgan.runtime.paths import data_dir

from ._io import atomic_write_bytes, sidecar, write_json
from .onnx_export import DEFAULT_OPSET, export_onnx, ort_optimize
from .onnx_meta import check_onnx, set_metadata
from .parity import ParityReport, ParityRow, agreement, ort_session, read_rgb

__all__ = ["MIN_SIDE", "LPIPS_MAX_ABS", "LpipsExportReport", "export_lpips", "set5_bicubic_pairs"]

log = logging.getLogger(__name__)

#: Smallest image side AlexNet's five stages accept (conv 11/4, two 3/2 max-pools).
MIN_SIDE = 31
#: ONNX vs the lpips package: largest allowed absolute difference of a distance.
LPIPS_MAX_ABS = 1e-5


class _LpipsGraph(nn.Module):
    """lpips.LPIPS (v0.1, no spatial map) with [0, 1] inputs and a flat (N,) output.

    The forward pass is lpips' own, written out so the channel normalisation is
    ``f / max(||f||, 1e-10)``: lpips' ``f / (||f|| + 1e-10)`` lost its epsilon in
    the exported graph, which made all-zero feature columns (flat white areas)
    0/0 = NaN. The two agree wherever ||f|| >= 1e-10, i.e. to float precision.
    """

    def __init__(self, lp: nn.Module):
        super().__init__()
        self.lp = lp

    @staticmethod
    def _unit(f: torch.Tensor) -> torch.Tensor:
        return f / torch.clamp_min(torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)), 1e-10)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        lp: Any = self.lp  # an lpips.LPIPS (untyped): net, scaling_layer, lins, L
        outs0 = lp.net(lp.scaling_layer(2 * img0 - 1))
        outs1 = lp.net(lp.scaling_layer(2 * img1 - 1))
        total: Any = 0
        for k in range(lp.L):
            diff = (self._unit(outs0[k]) - self._unit(outs1[k])) ** 2
            total = total + lp.lins[k](diff).mean(dim=(2, 3))
        return total.reshape(-1)


@dataclass
class LpipsExportReport:
    """What :func:`export_lpips` wrote and measured.

    ``parity``: ONNX vs the lpips package (same weights) per input pair.
    ``set5_bicubic``: {image: distance} of MATLAB-bicubic x4 vs HR on Set5 (the
    sanity check; published mean 0.3407 with the real ImageNet trunk), empty if
    ../shared/data/Set5 is absent; ``set5_bicubic_mean`` their mean.
    """

    path: Path
    source: str
    parity: ParityReport
    set5_bicubic: dict[str, float] = field(default_factory=dict)

    @property
    def set5_bicubic_mean(self) -> float | None:
        return float(np.mean(list(self.set5_bicubic.values()))) if self.set5_bicubic else None

    def to_dict(self) -> dict:
        return {"model": self.path.name, "trunk": self.source, "parity": self.parity.to_dict(),
                "set5_bicubic": self.set5_bicubic, "set5_bicubic_mean": self.set5_bicubic_mean,
                "published_set5_bicubic": 0.3407}


def set5_bicubic_pairs(set_dir: Path | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, bicubic x4 of the official LR, HR cropped to match) as (H, W, 3) uint8, for Set5.

    The bicubic is the MATLAB-compatible ``imresize(lr, 4.0)``. Empty if the folder is absent.
    """
    from srgan.runtime.grids import match_reference
    from srgan.runtime.resize import imresize

    set_dir = set_dir or data_dir() / "Set5"
    out = []
    for hr_path in sorted((set_dir / "HR").glob("*.png")):
        lr_path = set_dir / "LR_bicubic_x4" / hr_path.name
        if lr_path.is_file():
            up = imresize(read_rgb(lr_path), 4.0)
            out.append((hr_path.stem, up, match_reference(read_rgb(hr_path), up.shape[0], up.shape[1], 4)))
    return out


def _nchw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


@torch.no_grad()
def export_lpips(out_path: Path, weights: Path | None = None, *, opset: int = DEFAULT_OPSET) -> LpipsExportReport:
    """Export AlexNet LPIPS v0.1 to ``out_path`` and prove it against the lpips package.

    ``weights``: AlexNet trunk file (torchvision layout, ``.pth`` or
    ``.safetensors``, e.g. ../shared/weights/alexnet_features_imagenet_torchvision.safetensors);
    None = torchvision's cache (``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``).
    Parity: random pairs at two sizes and the Set5 bicubic/HR pairs (when
    present) must agree within :data:`LPIPS_MAX_ABS`; only then is the file
    written (atomically), with ``NAME.parity.json`` beside it.

    Raises PretrainedWeightsError (weights missing or not AlexNet: the message
    names the file and folder), ExportError, ParityError.
    """
    from srgan.trainer.checkpoint import file_sha256
    from srgan.trainer.pretrained import load_lpips

    out_path = Path(out_path)
    with warnings.catch_warnings():  # lpips builds torchvision's alexnet with the deprecated pretrained=
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.models\._utils")
        lp, source = load_lpips(weights)
    graph = _LpipsGraph(lp).eval()
    proto = ort_optimize(export_onnx(graph, opset=opset, input_names=("img0", "img1"), output_name="distance",
                                     example_hw=(48, 64), min_side=MIN_SIDE))
    set_metadata(proto, {
        "model": "lpips", "net": "alex", "version": "0.1", "input_range": "0-1", "color_order": "RGB",
        "min_side": str(MIN_SIDE), "trunk": source,
        "trunk_sha256": file_sha256(weights) if weights is not None else "torchvision cache",
        "heads": "lpips package v0.1 alex.pth", "opset": str(opset),
    })
    proto.doc_string = ("AlexNet LPIPS v0.1. Inputs img0, img1: float32 NCHW RGB in [0,1] (scaled to [-1,1] "
                        f"inside), dynamic N/H/W, H,W >= {MIN_SIDE}. Output distance: float32 (N,).")
    check_onnx(proto)
    data = proto.SerializeToString()

    rng = np.random.default_rng(0)
    pairs = [(f"random {h}x{w}", rng.random((n, 3, h, w), dtype=np.float32),
              rng.random((n, 3, h, w), dtype=np.float32)) for n, h, w in ((2, 64, 48), (1, 37, 91))]
    set5 = set5_bicubic_pairs()
    pairs += [(f"Set5 {name} bicubic vs HR", _nchw(up), _nchw(hr)) for name, up, hr in set5]
    report = ParityReport(model=str(out_path), threshold=LPIPS_MAX_ABS, provider="CPUExecutionProvider",
                          real_images=f"Set5 bicubic x4 vs HR ({len(set5)} pairs)" if set5 else "none (Set5 absent)")
    scores: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / out_path.name
        staged.write_bytes(data)
        sess = ort_session(staged)
        for name, a, b in pairs:
            ref = lp(torch.from_numpy(a), torch.from_numpy(b), normalize=True).reshape(-1).numpy()
            got = sess.run({"img0": a, "img1": b})[0]
            report.rows.append(ParityRow(name, tuple(a.shape), *agreement(got, ref)))
            if name.startswith("Set5 "):
                scores[name.split()[1]] = float(got[0])
    report.check()
    report.model = out_path.name
    atomic_write_bytes(out_path, data)
    result = LpipsExportReport(path=out_path, source=source, parity=report, set5_bicubic=scores)
    write_json(sidecar(out_path, ".parity.json"), result.to_dict())
    log.info("wrote %s (trunk: %s); Set5 bicubic LPIPS %s", out_path, source, result.set5_bicubic_mean)
    return result

"""The trainer's side of evaluation: a ``.pt`` checkpoint as a runtime-style model.

Scoring, grids, the CSV layout and the report are the runtime's
(:mod:`srgan.runtime.evaluation`, torch-free); only the torch inference adapter
(:class:`TorchSR`) and loading a checkpoint for it live here. ``evaluate``,
``EvalReport`` and ``SetSummary`` are re-exported for existing callers.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from srgan.runtime.evaluation import DEFAULT_SETS, EvalReport, SetSummary, evaluate
from srgan.runtime.imageio import atomic_write

__all__ = [
    "DEFAULT_SETS",
    "EvalReport",
    "SetSummary",
    "TorchSR",
    "evaluate",
    "load_checkpoint_for_eval",
    "write_results_zip",
]

log = logging.getLogger(__name__)


class TorchSR:
    """A torch generator behind the runtime's model interface (``scale``, ``receptive_radius``,
    ``batch_pixels``, ``bytes_per_pixel`` (0: no host-memory cap), ``max_batch``, call on float32 NCHW
    in [0, 1] -> float32 NCHW)."""

    def __init__(self, model: Any, scale: int, device: str | None = None):
        import torch

        if device is not None:
            model = model.to(device)
        self.torch, self.model, self.scale = torch, model.eval(), scale
        self.device = next(model.parameters()).device
        self.receptive_radius = 64   # only used when tiling; evaluation runs whole images
        self.radius_known = False
        self.batch_pixels = 1 << 30
        self.bytes_per_pixel = 0
        self.max_batch: int | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            y = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return np.asarray(y.float().cpu().numpy(), dtype=np.float32)


def load_checkpoint_for_eval(path: str | Path, device: str = "auto", use_ema: bool = True) -> tuple[TorchSR, str]:
    """A trainer checkpoint (``.pt``) -> (:class:`TorchSR`, description). Raises CheckpointError."""
    from .checkpoint import generator_from_checkpoint, generator_weights
    from .train import resolve_device

    path = Path(path)
    net, state = generator_from_checkpoint(path, use_ema=use_ema)
    dev = str(resolve_device(device))
    weights = "EMA" if generator_weights(state, use_ema)[1] == "ema" else "raw"
    description = f"{path.name} ({state['arch']}, step {state['step']}, {weights} G, torch {dev})"
    scale: int = net.scale  # type: ignore[assignment]  # an int attribute; torch's stubs say Tensor | Module
    return TorchSR(net, scale, dev), description


def write_results_zip(run_dir: Path, zip_path: Path | None = None) -> Path:
    """Zip a run's artifacts (configs, CSV/TXT, grids, patches; not the large .pt files), atomically."""
    run_dir = Path(run_dir)
    zip_path = zip_path or run_dir / "results.zip"
    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and p.suffix not in (".pt", ".zip", ".tmp"))
    with atomic_write(zip_path) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            zf.write(p, p.relative_to(run_dir).as_posix())
    return zip_path

"""Geometric self-ensemble ("x8", EDSR's "+" results): run the model on the 8 flips and
rotations of each input and average the outputs mapped back.

It trades 8x the inference time for fidelity (higher PSNR/SSIM; measured gains are in
benchmarks/RESULTS.md). The wrapper has the model's interface, so tiling, batching,
memory caps and every caller work unchanged: each tile is transformed whole, with its
context, so tiled and whole-image results stay equal.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["SelfEnsemble", "TRANSFORMS"]

#: (quarter turns, horizontal flip after the turn): the dihedral group of the square.
TRANSFORMS = tuple((k, flip) for k in range(4) for flip in (False, True))


def _forward(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = np.rot90(x, k, axes=(2, 3))
    return x[..., ::-1] if flip else x


def _inverse(y: np.ndarray, k: int, flip: bool) -> np.ndarray:
    return np.rot90(y[..., ::-1] if flip else y, -k, axes=(2, 3))


class SelfEnsemble:
    """``model`` (an :class:`~runtime.session.SRModel` or anything with its interface) behind an
    x8 self-ensemble. Attributes (``scale``, ``receptive_radius``, ``provider``...) are the model's."""

    def __init__(self, model: Callable[[np.ndarray], np.ndarray]):
        self.model = model

    def __getattr__(self, name: str) -> Any:
        # "model": not set yet (copy, unpickling), no recursion. "upscale_region": the model's
        # region call would run the plain model and bypass the ensemble, so callers use __call__.
        if name in ("model", "upscale_region"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Float32 NCHW in [0, 1] -> the mean of the 8 back-transformed outputs (float32)."""
        total = None
        for k, flip in TRANSFORMS:
            y = _inverse(self.model(np.ascontiguousarray(_forward(x, k, flip))), k, flip)
            total = y.astype(np.float32, copy=True) if total is None else np.add(total, y, out=total)
        assert total is not None  # TRANSFORMS is not empty
        return total * np.float32(1 / len(TRANSFORMS))

"""Training data: image folders (DIV2K layout or any folder), LR pairs, patches.

LR images come from official LR files when they exist beside the HR ones
(DIV2K ``DIV2K_train_LR_bicubic/X4``, or an ``LR_bicubic_x4`` folder next to
``HR``), else from the project's MATLAB-compatible ``imresize`` (or Pillow's
bicubic when ``degradation='pil'`` is asked for explicitly). Decoded pairs are
kept in memory and optionally cached as ``.npy`` files so a training step
never waits on PNG decoding. Batches are a pure function of (seed, step,
rank), which makes resume exact and DDP shards disjoint.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srgan.runtime.datasets import DatasetError as DataError
from srgan.runtime.datasets import discover, find_images
from srgan.runtime.imageio import atomic_write
from srgan.runtime.resize import imresize

__all__ = ["DataError", "ImagePair", "find_images", "discover", "load_pairs", "PatchBatches", "epoch_steps"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImagePair:
    name: str
    hr: np.ndarray  # HxWx3 uint8, H and W multiples of scale
    lr: np.ndarray  # (H/scale)x(W/scale)x3 uint8


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read training image {path}: {exc}. Remove or replace the file.") from None


def degrade(hr: np.ndarray, scale: int, degradation: str = "matlab") -> np.ndarray:
    """Make the LR image for an HR uint8 image whose sides are multiples of scale."""
    h, w = hr.shape[:2]
    if degradation == "matlab":
        return imresize(hr, 1.0 / scale)
    if degradation == "pil":
        return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC))
    raise DataError(f"unknown degradation {degradation!r}; choose matlab or pil")


def _load_one(hr_path: Path, lr_path: Path | None, scale: int, degradation: str,
              cache_dir: Path | None) -> ImagePair:
    key = None
    if cache_dir is not None:
        st = hr_path.stat()
        tag = f"{hr_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{lr_path}|{scale}|{degradation}"
        key = cache_dir / (hashlib.sha1(tag.encode()).hexdigest()[:20] + ".npz")
        if key.is_file():
            with np.load(key) as z:
                return ImagePair(hr_path.stem, z["hr"], z["lr"])
    hr = _read_rgb(hr_path)
    h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    hr = np.ascontiguousarray(hr[:h, :w])
    lr = None
    if lr_path is not None:
        lr = _read_rgb(lr_path)
        if lr.shape[:2] != (h // scale, w // scale):
            log.warning("official LR %s has size %s, expected %s: making LR from HR instead",
                        lr_path, lr.shape[:2], (h // scale, w // scale))
            lr = None
    if lr is None:
        lr = degrade(hr, scale, degradation)
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(key) as fh:  # a unique temp name: runs sharing a cache never collide
            np.savez(fh, hr=hr, lr=lr)
    return ImagePair(hr_path.stem, hr, lr)


def load_pairs(roots: list[Path], scale: int, degradation: str = "matlab", min_hr: int = 0,
               cache_dir: Path | None = None) -> list[ImagePair]:
    """Decode every HR image under ``roots`` and pair it with its LR image.

    Images whose shorter side is below ``min_hr`` (the HR patch size) are skipped
    with a log line. Raises DataError if nothing usable remains.
    """
    pairs: list[ImagePair] = []
    skipped = 0
    for root in roots:
        for hr_path, lr_path in discover(Path(root), scale):
            pair = _load_one(hr_path, lr_path, scale, degradation, cache_dir)
            if min(pair.hr.shape[:2]) < min_hr:
                skipped += 1
                continue
            pairs.append(pair)
    if skipped:
        log.info("skipped %d images smaller than the %d px HR patch", skipped, min_hr)
    if not pairs:
        raise DataError(f"no training image of at least {min_hr} px under {', '.join(map(str, roots))}")
    return pairs


def epoch_steps(n_images: int, batch: int) -> int:
    """One epoch = one random patch from every training image = ceil(n / batch) steps."""
    return max(1, math.ceil(n_images / batch))


class PatchBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``step`` is the whole batch for that step.

    Returns (lr, hr): float32 NCHW in [0, 1], shapes (B,3,p,p) and
    (B,3,p*s,p*s). Images are drawn uniformly; crops are aligned (HR crop at
    scale x the LR offset); augmentation = random h-flip, v-flip, transpose.
    """

    def __init__(self, pairs: list[ImagePair], *, scale: int, lr_patch: int, batch: int, seed: int,
                 augment: bool = True, rank: int = 0):
        self.pairs, self.scale, self.p, self.batch = pairs, scale, lr_patch, batch
        self.seed, self.augment, self.rank = seed, augment, rank

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(step), self.rank])
        s, p = self.scale, self.p
        lrs = np.empty((self.batch, p, p, 3), np.uint8)
        hrs = np.empty((self.batch, p * s, p * s, 3), np.uint8)
        for i in range(self.batch):
            pair = self.pairs[rng.integers(len(self.pairs))]
            lh, lw = pair.lr.shape[:2]
            y, x = rng.integers(lh - p + 1), rng.integers(lw - p + 1)
            lr = pair.lr[y:y + p, x:x + p]
            hr = pair.hr[y * s:(y + p) * s, x * s:(x + p) * s]
            if self.augment:
                hflip, vflip, rot = rng.integers(2, size=3)
                if hflip:
                    lr, hr = lr[:, ::-1], hr[:, ::-1]
                if vflip:
                    lr, hr = lr[::-1], hr[::-1]
                if rot:
                    lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
            lrs[i], hrs[i] = lr, hr
        to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div_(255.0)  # noqa: E731
        return to_t(lrs), to_t(hrs)

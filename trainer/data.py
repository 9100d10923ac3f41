"""Training data: image folders (DIV2K layout or any folder), LR pairs, patches.

LR images come from official LR files when they exist beside the HR ones
(DIV2K ``DIV2K_train_LR_bicubic/X4``, or an ``LR_bicubic_x4`` folder next to
``HR``), else from the project's MATLAB-compatible ``imresize`` (or Pillow's
bicubic when ``degradation='pil'`` is asked for explicitly). With
``degradation='real'`` no LR is stored: each step crops an HR patch and degrades
it on the fly with :data:`srgan.trainer.degradations.REAL` (blur, resize,
noise, JPEG, twice), seeded per sample. Decoded pairs are
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

from .config import ON_THE_FLY
from .degradations import DEGRADATIONS, DegradationConfig
from .degradations import degrade as degrade_real

__all__ = ["ON_THE_FLY", "DataError", "ImagePair", "PatchBatches", "data_fingerprint", "degradation_config", "discover",
           "epoch_steps", "find_images", "load_pairs"]

log = logging.getLogger(__name__)

_DEGRADE_STREAM = 0x5EA1  # keeps the per-sample degradation draws apart from the crop/flip draws


def degradation_config(degradation: str) -> DegradationConfig | None:
    """The on-the-fly degradation model named ``degradation``, or None for matlab / pil (LR made once)."""
    return DEGRADATIONS[degradation] if degradation in ON_THE_FLY else None


@dataclass(frozen=True)
class ImagePair:
    name: str
    hr: np.ndarray  # HxWx3 uint8, H and W multiples of scale
    lr: np.ndarray | None  # (H/scale)x(W/scale)x3 uint8; None when LR is made on the fly (degradation 'real')


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
        return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.Resampling.BICUBIC))
    raise DataError(f"unknown degradation {degradation!r}; choose matlab or pil (real is made per sample)")


def _load_one(hr_path: Path, lr_path: Path | None, scale: int, degradation: str,
              cache_dir: Path | None) -> ImagePair:
    key = None
    if degradation in ON_THE_FLY:  # LR is made per sample from HR crops: no official LR, nothing to cache
        lr_path, cache_dir = None, None
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
    if lr is None and degradation not in ON_THE_FLY:
        lr = degrade(hr, scale, degradation)
    if key is not None:
        assert lr is not None  # cached only for fixed degradations, which always make an LR above
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


def data_fingerprint(roots: list[Path], scale: int) -> dict[str, int | str]:
    """What a training set is, without decoding it: ``{"images": n, "sha256": hex}`` over every
    HR (and official LR) file's path relative to its root folder and its size in bytes.

    Equal fingerprints mean the same files; a file added, removed, renamed or rewritten with a
    new size changes it. Raises DataError if a folder does not exist or holds no image.
    """
    digest = hashlib.sha256()
    images = 0
    for root in roots:
        root = Path(root)
        for hr_path, lr_path in discover(root, scale):
            images += 1
            for path in (hr_path, lr_path) if lr_path is not None else (hr_path,):
                digest.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return {"images": images, "sha256": digest.hexdigest()}


def epoch_steps(n_images: int, batch: int) -> int:
    """One epoch = one random patch from every training image = ceil(n / batch) steps."""
    return max(1, math.ceil(n_images / batch))


class PatchBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``step`` is the whole batch for that step.

    Returns (lr, hr): float32 NCHW in [0, 1], shapes (B,3,p,p) and
    (B,3,p*s,p*s). Images are drawn uniformly; crops are aligned (HR crop at
    scale x the LR offset); augmentation = random h-flip, v-flip, transpose.
    With ``degradation`` (a :class:`DegradationConfig` of scale ``scale``) the HR
    crop (any offset), augmented, is degraded into its LR patch; that sample's
    draws come from a generator seeded by (seed, step, rank, sample index), so a
    batch is still a pure function of (seed, step, rank).
    """

    def __init__(self, pairs: list[ImagePair], *, scale: int, lr_patch: int, batch: int, seed: int,
                 augment: bool = True, rank: int = 0, degradation: DegradationConfig | None = None):
        if degradation is not None and degradation.scale != scale:
            raise DataError(f"degradation {degradation.name!r} is x{degradation.scale}, the run is x{scale}")
        if degradation is None and any(p.lr is None for p in pairs):
            raise DataError("these pairs have no stored LR (degradation 'real'): pass the degradation config")
        self.pairs, self.scale, self.p, self.batch = pairs, scale, lr_patch, batch
        self.seed, self.augment, self.rank, self.degradation = seed, augment, rank, degradation

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(step), self.rank])
        s, p = self.scale, self.p
        lrs = np.empty((self.batch, p, p, 3), np.uint8)
        hrs = np.empty((self.batch, p * s, p * s, 3), np.uint8)
        for i in range(self.batch):
            pair = self.pairs[rng.integers(len(self.pairs))]
            if self.degradation is not None:
                lrs[i], hrs[i] = self._degraded(pair.hr, rng, step, i)
                continue
            assert pair.lr is not None  # checked in __init__
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

    def _degraded(self, hr_image: np.ndarray, rng: np.random.Generator, step: int, i: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(lr (p, p, 3), hr (p*s, p*s, 3)) uint8: a random HR crop, augmented, then degraded."""
        hp = self.p * self.scale
        h, w = hr_image.shape[:2]
        y, x = rng.integers(h - hp + 1), rng.integers(w - hp + 1)
        hr = hr_image[y:y + hp, x:x + hp]
        if self.augment:
            hflip, vflip, rot = rng.integers(2, size=3)
            hr = hr[:, ::-1] if hflip else hr
            hr = hr[::-1] if vflip else hr
            hr = hr.transpose(1, 0, 2) if rot else hr
        hr = np.ascontiguousarray(hr)
        sample_rng = np.random.default_rng([self.seed, int(step), self.rank, i, _DEGRADE_STREAM])
        assert self.degradation is not None
        lr, _ = degrade_real(hr, self.degradation, sample_rng)
        return lr, hr

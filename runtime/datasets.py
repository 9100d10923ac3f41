"""Image folders for training and evaluation, torch-free: which files, and LR/HR pairs for scoring.

Three layouts: DIV2K (``DIV2K_train_HR/`` + ``DIV2K_train_LR_bicubic/X{s}/NNNNx{s}.png``;
the ``valid`` part where there is no ``train`` part),
benchmark sets (``HR/`` + optional ``LR_bicubic_x{s}/`` with the same names, as
../shared/data/Set5), and any folder of images (HR only). Where an official LR
file exists it is used; otherwise callers make LR with the MATLAB ``imresize``.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UsageError
from .formats import INPUT_SUFFIXES
from .imageio import read_image
from .resize import imresize

__all__ = ["DatasetError", "Sample", "find_images", "discover", "iter_samples", "load_dataset"]

log = logging.getLogger(__name__)


class DatasetError(UsageError, ValueError):
    """A data folder is missing, empty, or holds an image that cannot be used (the message says which)."""


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted), by suffix."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in INPUT_SUFFIXES and p.is_file())


def discover(root: Path, scale: int) -> list[tuple[Path, Path | None]]:
    """(hr_path, official_lr_path or None) for every image of a data folder in one of the three layouts.

    Raises :class:`DatasetError` if the folder does not exist or holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"data folder {root} does not exist. Give a folder of images, a benchmark folder (HR/ and "
            f"LR_bicubic_x{scale}/) or a DIV2K folder (DIV2K_train_HR/); `cli.py fetch-div2k DIR` downloads DIV2K "
            "on a machine with internet.")
    div2k = next((part for part in ("train", "valid") if (root / f"DIV2K_{part}_HR").is_dir()), None)
    if div2k is not None:
        lr_dir = root / f"DIV2K_{div2k}_LR_bicubic" / f"X{scale}"
        pairs = []
        for hr in find_images(root / f"DIV2K_{div2k}_HR"):
            lr = lr_dir / f"{hr.stem}x{scale}{hr.suffix}"
            pairs.append((hr, lr if lr.is_file() else None))
    elif (root / "HR").is_dir():
        lr_dir = root / f"LR_bicubic_x{scale}"
        pairs = [(hr, (lr_dir / hr.name) if (lr_dir / hr.name).is_file() else None) for hr in find_images(root / "HR")]
    else:
        pairs = [(p, None) for p in find_images(root)]
    if not pairs:
        raise DatasetError(f"no images ({', '.join(sorted(INPUT_SUFFIXES))}) found under {root}")
    return pairs


@dataclass(frozen=True)
class Sample:
    """One evaluation image: ``lr`` (h, w, C) and ``hr`` (h*s, w*s, C) uint8, C = 1 (gray) or 3."""

    dataset: str
    name: str
    lr: np.ndarray
    hr: np.ndarray


def _color(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.dtype != np.uint8:
        raise DatasetError(f"{path}: benchmark images must be 8-bit, got {pixels.dtype}")
    return pixels[:, :, :1] if pixels.shape[2] in (1, 2) else pixels[:, :, :3]


def iter_samples(root: str | Path, scale: int = 4) -> Iterator[Sample]:
    """The LR/HR pairs of a data folder, one decoded at a time.

    HR is cropped top-left to a multiple of ``scale``. LR is the official file
    when there is one of the right size, else MATLAB-bicubic ``imresize`` of the
    cropped HR (logged when an official file was ignored). Alpha is dropped.
    Raises :class:`DatasetError` (no images, not 8-bit, LR and HR differ in channels).
    """
    root = Path(root)
    for path, lr_path in discover(root, scale):
        hr = _color(read_image(path).pixels, path)
        h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
        hr = np.ascontiguousarray(hr[:h, :w])
        lr = None
        if lr_path is not None:
            lr = _color(read_image(lr_path).pixels, lr_path)
            if lr.shape[:2] != (h // scale, w // scale):
                log.warning("%s is %dx%d, not %dx%d: making LR with imresize instead", lr_path,
                            lr.shape[1], lr.shape[0], w // scale, h // scale)
                lr = None
            elif lr.shape[2] != hr.shape[2]:
                raise DatasetError(f"{lr_path} has {lr.shape[2]} channels but its HR has {hr.shape[2]}")
        if lr is None:
            lr = imresize(hr, 1.0 / scale)
        yield Sample(root.name, path.name, np.ascontiguousarray(lr), hr)


def load_dataset(root: str | Path, scale: int = 4) -> list[Sample]:
    """:func:`iter_samples` as a list (all decoded)."""
    return list(iter_samples(root, scale))

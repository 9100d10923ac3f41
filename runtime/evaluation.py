"""Evaluation of an SR model on benchmark folders, torch-free.

PSNR / SSIM (Y, border = scale) and LPIPS for the model and for MATLAB bicubic,
per image and mean, written as CSV + TXT, with 4-panel comparison grids
(LR | bicubic | SR | HR) and zoomed patches. Any model with the runtime's
interface runs here (an ONNX :class:`~runtime.session.SRModel`, a
:class:`~runtime.ensemble.SelfEnsemble`, or the trainer's torch adapter for
``.pt`` checkpoints, which is the only part that lives in ``srgan.trainer``).
"""
from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import grids, metrics
from .datasets import iter_samples
from .imageio import atomic_write, write_image
from .paths import data_dir
from .pipeline import upscale_image

__all__ = [
    "DEFAULT_SETS",
    "SUMMARY_COLUMNS",
    "EvalModel",
    "EvalReport",
    "SetSummary",
    "default_sets",
    "evaluate",
]

log = logging.getLogger(__name__)

#: The benchmark sets scored when none are named (looked up under :func:`runtime.paths.data_dir`).
DEFAULT_SETS = ("Set5", "Set14", "BSD100")
SUMMARY_COLUMNS = ("set", "images", "psnr_y", "ssim_y", "lpips", "lattice", "color_shift", "chroma_noise",
                   "edge_wobble", "bicubic_psnr_y", "bicubic_ssim_y", "bicubic_lpips", "bicubic_lattice",
                   "bicubic_color_shift", "bicubic_chroma_noise", "bicubic_edge_wobble")


class EvalModel(Protocol):
    """What :func:`evaluate` needs of a model: ``scale`` and the tiler's attributes (see
    :class:`~runtime.session.SRModel`), called on float32 NCHW RGB in [0, 1]."""

    scale: int
    receptive_radius: int
    batch_pixels: int
    bytes_per_pixel: int
    max_batch: int | None

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class SetSummary:
    """Means over one benchmark folder: ``means`` maps each of :data:`SUMMARY_COLUMNS` [2:] to a float
    (or a text such as :data:`runtime.grids.LPIPS_UNAVAILABLE` when it was not measured)."""

    name: str
    images: int
    means: dict[str, float | str]


@dataclass
class EvalReport:
    """The result of :func:`evaluate`: the model's description, one :class:`SetSummary` per folder,
    and the folder the files went to (None when nothing was written)."""

    model: str
    sets: list[SetSummary] = field(default_factory=list)
    out_dir: Path | None = None

    def table(self) -> str:
        """Human-readable summary (also written to summary.txt)."""
        def f(v: float | str, p: int = 2) -> str:
            return f"{v:.{p}f}" if isinstance(v, float) else "n/a"

        lines = [f"model: {self.model}", "",
                 (f"{'set':<10}{'n':>4}  {'PSNR-Y':>7} {'SSIM-Y':>7} {'LPIPS':>7} {'lattice':>7} {'colour':>6} "
                  f"{'chroma':>6} {'wobble':>6}   "
                 f"{'bicubic PSNR-Y':>14} {'SSIM-Y':>7} {'LPIPS':>7}")]
        for s in self.sets:
            m = s.means
            lines.append(f"{s.name:<10}{s.images:>4}  {f(m['psnr_y']):>7} {f(m['ssim_y'], 4):>7} "
                         f"{f(m['lpips'], 4):>7} {f(m['lattice']):>7} {f(m['color_shift']):>6} "
                         f"{f(m['chroma_noise']):>6} {f(m['edge_wobble']):>6}   "
                         f"{f(m['bicubic_psnr_y']):>14} {f(m['bicubic_ssim_y'], 4):>7} "
                         f"{f(m['bicubic_lpips'], 4):>7}")
        lines += ["", ("lattice: power at the x-scale upsampling lattice frequencies over the HR's (checkerboard "
                  "when well above 1); colour: largest channel-mean shift, 0-255 levels; chroma: high-frequency "
                  "CbCr energy over the HR's (colour speckle when well above 1); wobble: RMS wander of straight "
                  "HR edges in the result, HR px (images with such edges)")]
        if any(isinstance(s.means.get("lpips"), str) for s in self.sets):
            lines += ["", f"LPIPS: {grids.LPIPS_UNAVAILABLE}"]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"model", "out_dir", "sets": [{"set", "images", <metric>: value}...]}``."""
        return {"model": self.model, "out_dir": None if self.out_dir is None else str(self.out_dir),
                "sets": [{"set": s.name, "images": s.images, **s.means} for s in self.sets]}


def default_sets() -> list[Path]:
    """The :data:`DEFAULT_SETS` folders that exist under :func:`runtime.paths.data_dir` (maybe none)."""
    root = data_dir()
    return [root / name for name in DEFAULT_SETS if (root / name).is_dir()]


def _patches(bicubic: np.ndarray, sr: np.ndarray, hr: np.ndarray, side: int = 64) -> np.ndarray:
    """bicubic | SR | HR crops of ``side`` HR pixels around the image centre, shown 4x (nearest)."""
    h, w = hr.shape[:2]
    side = min(side, h, w)
    y, x = (h - side) // 2, (w - side) // 2
    crops = [np.repeat(np.repeat(im[y:y + side, x:x + side], 4, 0), 4, 1) for im in (bicubic, sr, hr)]
    crops = [np.repeat(c, 3, axis=2) if c.shape[2] == 1 else c for c in crops]
    gap = np.full((side * 4, 8, 3), 255, np.uint8)
    return np.concatenate([crops[0], gap, crops[1], gap, crops[2]], axis=1)


def evaluate(model: EvalModel, data_dirs: Sequence[str | Path], out_dir: str | Path | None = None, *,
             description: str = "", lpips: grids.LpipsFn | None = None, grids_per_set: int = 5, tile: int = 0,
             progress: Callable[[str], None] | None = None) -> EvalReport:
    """Score ``model`` on each dataset folder; returns an :class:`EvalReport`.

    A dataset folder is read by :func:`runtime.datasets.iter_samples` (``HR/`` and
    optionally official ``LR_bicubic_x{scale}/``, the DIV2K layout, or any
    folder; LR made with MATLAB ``imresize`` when absent), the same pairs
    ``srgan bench quality`` scores. ``lpips``: a scorer, or None for the
    :data:`runtime.grids.LPIPS_UNAVAILABLE` text. ``tile``: LR tile side (0 = whole
    images). Writes, under ``out_dir`` (when given): ``<set>.csv`` (per image +
    mean row), ``summary.csv``, ``summary.txt``, ``grids/<set>/<name>.png`` and
    ``patches/<set>/<name>.png`` for the first ``grids_per_set`` images.
    Raises :class:`~runtime.datasets.DatasetError` for a folder without usable images.
    """
    scale = model.scale
    out = None if out_dir is None else Path(out_dir)
    report = EvalReport(description or str(model), out_dir=out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for root in map(Path, data_dirs):
        name = root.name
        rows: list[tuple[str, dict[str, float | str] | None, str]] = []
        for i, sample in enumerate(iter_samples(root, scale)):
            lr, stem = sample.lr, Path(sample.name).stem
            sr = upscale_image(lr, model, tile=tile)  # type: ignore[arg-type]  # any EvalModel runs
            hr = grids.match_reference(sample.hr, sr.shape[0], sr.shape[1], scale)
            bicubic = grids.bicubic_baseline(lr, scale)
            scores = grids.score(sr, bicubic, hr, scale, lpips)
            rows.append((sample.name, scores, ""))
            if out is not None and i < grids_per_set:
                for sub in ("grids", "patches"):
                    (out / sub / name).mkdir(parents=True, exist_ok=True)
                write_image(out / "grids" / name / f"{stem}.png",
                            grids.make_grid(lr, bicubic, sr, hr, scale=scale, scores=scores))
                write_image(out / "patches" / name / f"{stem}.png", _patches(bicubic, sr, hr))
            if progress is not None:
                progress(f"{name}/{sample.name}: {scores['psnr_y']:.2f} dB")
        report.sets.append(SetSummary(name, len(rows), _means([s for _, s, _ in rows if s is not None])))
        if out is not None:
            grids.write_metrics_csv(out / f"{name}.csv", rows)
    if out is not None:
        _write_summary(report, out)
    return report


def _means(scores: list[dict[str, float | str]]) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for key in grids.METRIC_COLUMNS:
        values = [s[key] for s in scores]
        nums = [v for v in values if isinstance(v, float)]
        out[key] = metrics.nan_mean(nums) if nums and len(nums) == len(values) else next(
            (v for v in values if isinstance(v, str)), "n/a")
    return out


def _write_summary(report: EvalReport, out_dir: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    for s in report.sets:
        w.writerow([s.name, s.images] + [f"{s.means[k]:.6f}" if isinstance(s.means[k], float) else s.means[k]
                                         for k in SUMMARY_COLUMNS[2:]])
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / "summary.csv") as fh:
        fh.write(buf.getvalue().encode())
    with atomic_write(out_dir / "summary.txt") as fh:
        fh.write(report.table().encode())

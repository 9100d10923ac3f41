"""The benchmark reports: plain dataclasses that :mod:`srgan.runtime.bench` fills and
:mod:`srgan.runtime.charts` draws (both import this module; neither imports the other's types)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["MacCount", "LatencyRow", "LatencyReport", "QualityRow", "QualitySummary", "QualityReport", "mp_per_s"]


@dataclass(frozen=True)
class MacCount:
    """Multiply-adds of one inference per LR input pixel: ``per_lr_pixel`` in total and ``by_op``."""

    per_lr_pixel: float
    by_op: dict[str, float]


@dataclass(frozen=True)
class LatencyRow:
    """One configuration: ``tile`` LR side (0 = whole image), ``tiles`` inference tiles per image.

    Times are medians over the timed runs. ``gflops``/``fraction_of_peak``
    count useful work only (each LR pixel once, not the tiles' overlapping
    context); None when FLOPs or the peak were not measured.
    """

    provider: str
    threads: int
    tile: int
    tiles: int
    ms_per_tile: float
    ms_per_image: float
    output_mp_per_s: float
    peak_rss_mib: float
    peak_gflops: float | None
    gflops: float | None
    fraction_of_peak: float | None


@dataclass
class LatencyReport:
    """All rows of :func:`bench_latency`, the image size, MAC count (or why not) and machine info."""

    model: Path
    lr_size: tuple[int, int]
    scale: int
    runs: int
    macs: MacCount | None
    macs_note: str
    rows: list[LatencyRow] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QualityRow:
    """One method on one image: metrics (see :func:`runtime.grids.score_one`), seconds, output pixels, and
    ``color``, the colour cast (:func:`runtime.metrics.color_shift`, 0-255 levels; NaN in files written
    before it was measured)."""

    dataset: str
    image: str
    method: str
    psnr_y: float
    ssim_y: float
    psnr_rgb: float | str
    lpips: float | str
    seconds: float
    output_pixels: int
    color: float = float("nan")


@dataclass(frozen=True)
class QualitySummary:
    """Means of one method over one dataset (``lpips`` text when not measured), its throughput, and the mean
    colour cast (signed, as ``srgan eval``'s ``colour``)."""

    dataset: str
    method: str
    images: int
    psnr_y: float
    ssim_y: float
    lpips: float | str
    output_mp_per_s: float
    color: float = float("nan")


@dataclass
class QualityReport:
    """Per-image rows, methods in run order, peers not run (name -> reason), machine info."""

    rows: list[QualityRow]
    methods: list[str]
    scale: int
    skipped: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.dataset for r in self.rows))

    def summary(self) -> list[QualitySummary]:
        """Means per (dataset, method), datasets and methods in run order."""
        out = []
        for d in self.datasets:
            for m in self.methods:
                rows = [r for r in self.rows if r.dataset == d and r.method == m]
                if not rows:
                    continue
                lp = [r.lpips for r in rows]
                numbers = [v for v in lp if isinstance(v, float)]
                lpips = float(np.mean(numbers)) if len(numbers) == len(lp) else \
                    next(v for v in lp if isinstance(v, str))
                out.append(QualitySummary(d, m, len(rows), float(np.mean([r.psnr_y for r in rows])),
                                          float(np.mean([r.ssim_y for r in rows])), lpips,
                                          mp_per_s(rows), float(np.mean([r.color for r in rows]))))
        return out

    def speed(self, method: str) -> float:
        """Output megapixels per second of ``method`` over all its images."""
        return mp_per_s([r for r in self.rows if r.method == method])


def mp_per_s(rows: Iterable[QualityRow]) -> float:
    """Output megapixels per second over ``rows`` (inf when no time was measured)."""
    rows = list(rows)
    seconds = sum(r.seconds for r in rows)
    return sum(r.output_pixels for r in rows) / seconds / 1e6 if seconds > 0 else float("inf")

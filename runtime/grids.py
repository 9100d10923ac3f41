"""Comparison outputs, as the SRGAN report made them: labelled panels and a metrics table.

Panels: LR (nearest) | bicubic | SR | HR (when given), each labelled (with PSNR /
SSIM when HR is given), plus a second row of zoomed patches from the busiest
region. The bicubic baseline is MATLAB-compatible ``imresize`` (DESIGN.md).
Metrics follow :mod:`runtime.metrics`: Y channel, border = scale.

LPIPS: the columns exist now. Until an LPIPS scorer is passed in (an ONNX
AlexNet LPIPS made by ``cli.py export-lpips``, see ``registry.LPIPS_MODEL_FILE``)
they hold :data:`LPIPS_UNAVAILABLE`, never a silent blank.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import metrics
from .imageio import atomic_write
from .resize import imresize

__all__ = [
    "LPIPS_UNAVAILABLE", "METRIC_COLUMNS", "CSV_COLUMNS", "LpipsFn", "bicubic_baseline", "match_reference",
    "score", "score_one", "make_grid", "write_metrics_csv",
]

LPIPS_UNAVAILABLE = "unavailable: run cli.py export-lpips"
#: ``lpips(a, b)``: two (H, W, 3) images of one dtype -> distance (lower is better).
LpipsFn = Callable[[np.ndarray, np.ndarray], float]
METRIC_COLUMNS = ("psnr_y", "ssim_y", "psnr_rgb", "lpips", "lattice", "color_shift", "chroma_noise", "edge_wobble",
                  "bicubic_psnr_y", "bicubic_ssim_y", "bicubic_psnr_rgb", "bicubic_lpips", "bicubic_lattice",
                  "bicubic_color_shift", "bicubic_chroma_noise", "bicubic_edge_wobble")
CSV_COLUMNS = ("file", *METRIC_COLUMNS, "note")

_PANEL_MAX = 768  # longest panel side in the grid, display pixels
_ZOOM_SIDE = 256  # side of a zoomed patch, display pixels
_LABEL_H = 22
_GAP = 6


def bicubic_baseline(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-bicubic x``scale`` of (h, w, C) ``lr``, same dtype (the literature's baseline)."""
    return imresize(lr, float(scale))


def match_reference(hr: np.ndarray, height: int, width: int, scale: int) -> np.ndarray:
    """``hr`` cropped top-left to ``height`` x ``width``, as the benchmark sets pair LR and HR.

    HR may be up to ``scale - 1`` pixels larger per side (LR = floor(HR / scale)).
    Raises ValueError if the sizes do not pair up that way.
    """
    hh, hw = hr.shape[:2]
    if not (0 <= hh - height < scale and 0 <= hw - width < scale):
        raise ValueError(f"HR is {hw}x{hh} but SR is {width}x{height}; they do not pair up")
    return hr[:height, :width]


def score(sr: np.ndarray, bicubic: np.ndarray, hr: np.ndarray, scale: int,
          lpips: LpipsFn | None = None) -> dict[str, float | str]:
    """PSNR / SSIM (Y, border = ``scale``), RGB PSNR, LPIPS, lattice and colour shift of SR and of
    bicubic against ``hr``.

    All three are (H, W, C) colour images (C = 1 or 3, no alpha) of equal size.
    """
    row = {k: v for prefix, img in (("", sr), ("bicubic_", bicubic))
           for k, v in ((prefix + m, x) for m, x in score_one(img, hr, scale, lpips).items())}
    return {k: row[k] for k in METRIC_COLUMNS}


def score_one(img: np.ndarray, hr: np.ndarray, scale: int, lpips: LpipsFn | None = None) -> dict[str, float | str]:
    """``psnr_y``, ``ssim_y`` (border = ``scale``), ``psnr_rgb``, ``lpips``, and the artifact checks
    ``lattice`` (checkerboard, :func:`runtime.metrics.lattice_ratio`), ``color_shift`` (colour cast,
    :func:`runtime.metrics.color_shift`), ``chroma_noise`` (colour speckle,
    :func:`runtime.metrics.chroma_noise_ratio`) and ``edge_wobble`` (wavy straight lines, HR px;
    NaN on an image without straight edges, :func:`runtime.metrics.edge_wobble`) of one result against ``hr``.

    Both (H, W, C) of equal size, C = 1 or 3 (no alpha). A gray image is
    compared on its gray values; ``psnr_rgb`` of gray vs colour and ``lpips``
    without a scorer hold a text that says why there is no number.
    """
    return {
        "psnr_y": metrics.psnr(img, hr, border=scale),
        "ssim_y": metrics.ssim(img, hr, border=scale),
        "psnr_rgb": metrics.psnr(img, hr, border=scale, channel="rgb") if img.shape[2] == hr.shape[2]
        else "n/a: gray vs colour",
        "lpips": LPIPS_UNAVAILABLE if lpips is None else lpips(img, hr),
        "lattice": metrics.lattice_ratio(img, hr, scale),
        "color_shift": metrics.color_shift(img, hr),
        "chroma_noise": metrics.chroma_noise_ratio(img, hr, scale),
        "edge_wobble": metrics.edge_wobble(img, hr, scale),
    }


def _display(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 for showing: 16-bit reduced, gray repeated."""
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def _busiest_patch(lr: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left (y, x) of the ``side`` x ``side`` LR window with the most gradient energy."""
    y = metrics.to_y(lr)
    energy = np.zeros_like(y)
    energy[1:, :] += np.abs(np.diff(y, axis=0))
    energy[:, 1:] += np.abs(np.diff(y, axis=1))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
    py, px = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(py), int(px)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: fixed bitmap font
        return ImageFont.load_default()


def make_grid(lr: np.ndarray, bicubic: np.ndarray, sr: np.ndarray, hr: np.ndarray | None = None, *,
              scale: int, scores: dict[str, float | str] | None = None) -> np.ndarray:
    """The comparison figure as (H, W, 3) uint8.

    ``lr`` (h, w, C); ``bicubic``, ``sr`` and ``hr`` (h*scale, w*scale, C'), any of
    uint8/uint16 and gray or RGB (no alpha). ``scores`` from :func:`score` adds
    PSNR / SSIM to the labels.
    """
    h, w = lr.shape[:2]
    big = [np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1), bicubic, sr] + ([hr] if hr is not None else [])
    big = [_display(p) for p in big]
    labels = ["LR (nearest)", "bicubic", "SR"] + (["HR"] if hr is not None else [])
    if scores is not None:
        for i, prefix in ((1, "bicubic_"), (2, "")):
            labels[i] += f"  {scores[prefix + 'psnr_y']:.2f} dB / {scores[prefix + 'ssim_y']:.4f}"

    side = max(1, min(h, w, max(4, min(h, w) // 3), 48))
    py, px = _busiest_patch(lr, side)
    box = (px * scale, py * scale, (px + side) * scale, (py + side) * scale)
    shrink = min(1.0, _PANEL_MAX / max(h * scale, w * scale))
    pw, ph = max(1, round(w * scale * shrink)), max(1, round(h * scale * shrink))
    zoom = max(_ZOOM_SIDE, side * scale)

    n = len(big)
    width = max(n * (pw + _GAP), n * (zoom + _GAP)) + _GAP
    height = _GAP + _LABEL_H + ph + _GAP + zoom + _GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(14)
    for i, (panel, label) in enumerate(zip(big, labels, strict=True)):
        im = Image.fromarray(panel)
        x0 = _GAP + i * (pw + _GAP)
        draw.text((x0, _GAP + 2), label, fill="black", font=font)
        canvas.paste(im.resize((pw, ph), Image.Resampling.LANCZOS) if shrink < 1 else im, (x0, _GAP + _LABEL_H))
        rect = [x0 + math.floor(c * shrink) if j % 2 == 0 else _GAP + _LABEL_H + math.floor(c * shrink)
                for j, c in enumerate(box)]
        draw.rectangle(rect, outline=(255, 0, 0), width=2)
        patch = im.crop(box).resize((zoom, zoom), Image.Resampling.NEAREST)
        canvas.paste(patch, (_GAP + i * (zoom + _GAP), _GAP + _LABEL_H + ph + _GAP))
    return np.asarray(canvas)


def _fmt(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.6f}"


def write_metrics_csv(path: str | Path, rows: Sequence[tuple[str, dict[str, float | str] | None, str]]) -> None:
    """Write ``(file, scores or None, note)`` rows plus a ``mean`` row (over rows with scores), atomically.

    A column whose values are text (e.g. :data:`LPIPS_UNAVAILABLE`) keeps that
    text in the mean row.
    """
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(CSV_COLUMNS)
    scored = [s for _, s, _ in rows if s is not None]
    for name, s, note in rows:
        out.writerow([name, *(_fmt(s[c]) if s else "" for c in METRIC_COLUMNS), note])
    mean: list[str] = []
    for c in METRIC_COLUMNS:
        values = [s[c] for s in scored]
        numbers = [v for v in values if not isinstance(v, str)]
        if numbers and len(numbers) == len(values):
            mean.append(_fmt(metrics.nan_mean(numbers)))
        else:
            mean.append(next((v for v in values if isinstance(v, str)), ""))
    out.writerow(["mean", *mean, f"{len(scored)} of {len(rows)} images scored"])
    with atomic_write(path) as fh:
        fh.write(buf.getvalue().encode())

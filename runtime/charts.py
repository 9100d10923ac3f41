"""PNG charts for the benchmark reports, drawn with matplotlib (optional: the ``bench`` extra).

Each function writes its PNG(s) atomically and returns the paths written; with
matplotlib missing it logs how to install it and returns an empty list, so the
CSV and Markdown outputs never depend on it.
"""
from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any

from .imageio import atomic_write
from .reports import LatencyReport, QualityReport

__all__ = ["quality_charts", "latency_chart", "PER_IMAGE_BARS_MAX"]

log = logging.getLogger(__name__)

#: Datasets with more images than this get a box plot of per-image gains instead of bars.
PER_IMAGE_BARS_MAX = 24
_DPI = 110


def _pyplot() -> Any | None:
    try:
        import matplotlib
    except ImportError:
        log.warning("charts skipped: matplotlib is not installed (pip install 'srgan-toolkit[bench]')")
        return None
    matplotlib.use("Agg", force=True)  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
    return path


def quality_charts(report: QualityReport, out_dir: Path) -> list[Path]:
    """``quality_vs_speed.png`` (PSNR-Y, and LPIPS when measured, vs output MP/s, one panel per dataset)
    and ``per_image_<dataset>.png`` (each method's PSNR-Y gain over bicubic, per image)."""
    plt = _pyplot()
    if plt is None:
        return []
    written = [_quality_vs_speed(plt, report, out_dir / "quality_vs_speed.png")]
    for d in report.datasets:
        written.append(_per_image(plt, report, d, out_dir / f"per_image_{d}.png"))
    return written


def _colors(plt: Any, methods: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _quality_vs_speed(plt: Any, report: QualityReport, path: Path) -> Path:
    summary = report.summary()
    datasets = report.datasets
    with_lpips = any(isinstance(s.lpips, float) for s in summary)
    metrics = [("psnr_y", "PSNR-Y (dB), higher is better")] + ([("lpips", "LPIPS, lower is better")]
                                                                if with_lpips else [])
    colors = _colors(plt, report.methods)
    markers = {m: "osD^vP*Xhp"[i % 10] for i, m in enumerate(report.methods)}
    fig, axes = plt.subplots(len(metrics), len(datasets), figsize=(4.4 * len(datasets) + 1.8, 3.8 * len(metrics)),
                             squeeze=False)
    for col, d in enumerate(datasets):
        for row, (key, label) in enumerate(metrics):
            ax = axes[row][col]
            points = [(s, getattr(s, key)) for s in summary if s.dataset == d]
            points = [(s, y) for s, y in points if isinstance(y, float) and math.isfinite(y)]
            for s, y in points:
                ax.scatter(s.output_mp_per_s, y, s=70, color=colors[s.method], marker=markers[s.method],
                           label=s.method, zorder=3, edgecolors="black", linewidths=0.5)
            if not points:  # e.g. LPIPS not a number for an image of this set
                ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(d, fontsize=11)
                continue
            ax.set_xscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(d, fontsize=11)
            ax.set_xlabel("output megapixels / s (log; faster ->)")
            ax.set_ylabel(label)
            ax.margins(x=0.15, y=0.12)
    handles, labels = axes[0][0].get_legend_handles_labels()  # the PSNR row has every method
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, title="method")
    fig.suptitle(f"Quality vs speed, x{report.scale} ({report.machine.get('cpu', '?')}, "
                 f"{report.machine.get('cores', '?')} cores; speed on a shared machine)", fontsize=11)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def _per_image(plt: Any, report: QualityReport, dataset: str, path: Path) -> Path:
    rows = [r for r in report.rows if r.dataset == dataset]
    images = list(dict.fromkeys(r.image for r in rows))
    psnr = {(r.method, r.image): r.psnr_y for r in rows}
    base = "bicubic" if "bicubic" in report.methods else None
    methods = [m for m in report.methods if m != base]
    colors = _colors(plt, report.methods)

    def value(m: str, img: str) -> float:
        return psnr[(m, img)] - (psnr[(base, img)] if base else 0.0)

    ylabel = "PSNR-Y gain over bicubic (dB)" if base else "PSNR-Y (dB)"
    if len(images) <= PER_IMAGE_BARS_MAX:
        fig, ax = plt.subplots(figsize=(min(16.0, max(7.0, 0.16 * len(images) * max(1, len(methods)) + 2)), 4.6))
        width = 0.8 / max(1, len(methods))
        for i, m in enumerate(methods):
            xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(images))]
            ax.bar(xs, [value(m, img) for img in images], width, label=m, color=colors[m])
        ax.set_xticks(range(len(images)))
        ax.set_xticklabels([img.rsplit(".", 1)[0] for img in images], rotation=45, ha="right", fontsize=9)
        title = f"{dataset}: per image"
    else:
        fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(methods) + 2), 4.4))
        data = [[value(m, img) for img in images] for m in methods]
        parts = ax.boxplot(data, patch_artist=True, showmeans=True, medianprops={"color": "black"},
                           meanprops={"markerfacecolor": "white", "markeredgecolor": "black"})
        for patch, m in zip(parts["boxes"], methods):
            patch.set_facecolor(colors[m])
            patch.set_alpha(0.7)
        ax.set_xticks(range(1, len(methods) + 1))
        ax.set_xticklabels(methods, rotation=20, ha="right")
        title = f"{dataset}: distribution over its {len(images)} images (box: quartiles, line: median, triangle: mean)"
    ax.axhline(0, color="black", linewidth=0.8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    if len(images) <= PER_IMAGE_BARS_MAX and methods:
        ax.legend(fontsize=8, ncol=min(4, len(methods)), loc="best")
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def latency_chart(report: LatencyReport, path: Path) -> list[Path]:
    """``latency.png``: output MP/s per tile size, one bar per (provider, threads), labelled with the
    fraction of the fp32 matmul peak (when measured) and the peak RSS."""
    plt = _pyplot()
    if plt is None or not report.rows:
        return []
    tiles = list(dict.fromkeys(r.tile for r in report.rows))
    configs = list(dict.fromkeys((r.provider, r.threads) for r in report.rows))
    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(tiles) * max(1, len(configs)) / 2 + 2), 4.4))
    width = 0.8 / len(configs)
    cmap = plt.get_cmap("tab10")
    for i, (provider, threads) in enumerate(configs):
        rows = {r.tile: r for r in report.rows if (r.provider, r.threads) == (provider, threads)}
        xs = [j + (i - (len(configs) - 1) / 2) * width for j in range(len(tiles))]
        ys = [rows[t].output_mp_per_s if t in rows else 0.0 for t in tiles]
        label = f"{provider.removesuffix('ExecutionProvider')}, {threads or 'default'} thread(s)"
        bars = ax.bar(xs, ys, width, label=label, color=cmap(i % 10))
        for bar, t in zip(bars, tiles):
            if t in rows:
                frac = rows[t].fraction_of_peak
                text = ("" if frac is None else f"{frac:.0%} of peak\n") + f"{rows[t].peak_rss_mib:.0f} MiB"
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7.5)
    ax.set_xticks(range(len(tiles)))
    ax.set_xticklabels([f"tile {t}" if t else "whole image" for t in tiles])
    ax.set_ylabel("output megapixels / s")
    h, w = report.lr_size
    ax.set_title(f"{report.model.name}: {w}x{h} LR input (labels: fraction of the fp32 matmul peak, "
                 "peak RSS)", fontsize=10)
    ax.margins(y=0.15)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return [out]

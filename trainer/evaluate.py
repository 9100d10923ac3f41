"""Evaluation of a checkpoint or ONNX model on SR benchmark folders.

PSNR / SSIM (Y, border = scale) and LPIPS for the model and for MATLAB bicubic,
per image and mean, written as CSV + TXT, with 4-panel comparison grids
(LR | bicubic | SR | HR) and zoomed patches. Scoring, grids and the CSV layout
are the runtime's (one definition); only the torch inference adapter lives here.
"""
from __future__ import annotations

import csv
import io
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from srgan.runtime import grids
from srgan.runtime.datasets import iter_samples
from srgan.runtime.imageio import atomic_write, write_image
from srgan.runtime.pipeline import upscale_image


__all__ = ["TorchSR", "load_for_eval", "evaluate", "EvalReport", "SetSummary", "write_results_zip",
           "DEFAULT_SETS"]

log = logging.getLogger(__name__)
DEFAULT_SETS = ("Set5", "Set14", "BSD100")
SUMMARY_COLUMNS = ("set", "images", "psnr_y", "ssim_y", "lpips", "lattice", "color_shift", "bicubic_psnr_y",
                   "bicubic_ssim_y", "bicubic_lpips", "bicubic_lattice", "bicubic_color_shift")


class TorchSR:
    """A torch generator behind the runtime's model interface (``scale``, ``receptive_radius``,
    ``batch_pixels``, ``bytes_per_pixel`` (0: no host-memory cap), ``max_batch``, call on float32 NCHW
    in [0, 1] -> float32 NCHW)."""

    def __init__(self, model, scale: int, device: str | None = None):
        import torch

        if device is not None:
            model = model.to(device)
        self.torch, self.model, self.scale = torch, model.eval(), scale
        self.device = next(model.parameters()).device
        self.receptive_radius = 64   # only used when tiling; evaluation runs whole images
        self.radius_known = False
        self.batch_pixels = 1 << 30
        self.bytes_per_pixel = 0
        self.max_batch = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            y = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return y.float().cpu().numpy()


def load_for_eval(model_path: Path, device: str = "auto", threads: int = 0, use_ema: bool = True):
    """An ONNX file -> the runtime's SRModel; a checkpoint -> TorchSR. Returns (model, description)."""
    model_path = Path(model_path)
    if model_path.suffix == ".onnx":
        from srgan.runtime.session import load_model

        m = load_model(model_path, device=device, threads=threads)
        return m, f"{model_path.name} (onnxruntime, {m.provider})"
    from .checkpoint import generator_from_checkpoint, generator_weights
    from .train import resolve_device

    net, state = generator_from_checkpoint(model_path, use_ema=use_ema)
    dev = str(resolve_device(device))
    weights = "EMA" if generator_weights(state, use_ema)[1] == "ema" else "raw"
    return TorchSR(net, net.scale, dev), f"{model_path.name} ({state['arch']}, step {state['step']}, {weights} G, torch {dev})"


@dataclass
class SetSummary:
    name: str
    images: int
    means: dict[str, float | str]


@dataclass
class EvalReport:
    model: str
    sets: list[SetSummary] = field(default_factory=list)
    out_dir: Path | None = None

    def table(self) -> str:
        """Human-readable summary (also written to summary.txt)."""
        lines = [f"model: {self.model}", "",
                 f"{'set':<10}{'n':>4}  {'PSNR-Y':>7} {'SSIM-Y':>7} {'LPIPS':>7} {'lattice':>7} {'colour':>6}   "
                 f"{'bicubic PSNR-Y':>14} {'SSIM-Y':>7} {'LPIPS':>7}"]
        for s in self.sets:
            m = s.means
            f = lambda v, p=2: f"{v:.{p}f}" if isinstance(v, float) else "n/a"  # noqa: E731
            lines.append(f"{s.name:<10}{s.images:>4}  {f(m['psnr_y']):>7} {f(m['ssim_y'], 4):>7} "
                         f"{f(m['lpips'], 4):>7} {f(m['lattice']):>7} {f(m['color_shift']):>6}   "
                         f"{f(m['bicubic_psnr_y']):>14} {f(m['bicubic_ssim_y'], 4):>7} "
                         f"{f(m['bicubic_lpips'], 4):>7}")
        lines += ["", "lattice: power at the x-scale upsampling lattice frequencies over the HR's (checkerboard "
                  "when well above 1); colour: largest channel-mean shift, 0-255 levels"]
        if any(isinstance(s.means.get("lpips"), str) for s in self.sets):
            lines += ["", f"LPIPS: {grids.LPIPS_UNAVAILABLE}"]
        return "\n".join(lines) + "\n"


def _patches(bicubic: np.ndarray, sr: np.ndarray, hr: np.ndarray, side: int = 64) -> np.ndarray:
    """bicubic | SR | HR crops of ``side`` HR pixels around the image centre, shown 4x (nearest)."""
    h, w = hr.shape[:2]
    side = min(side, h, w)
    y, x = (h - side) // 2, (w - side) // 2
    crops = [np.repeat(np.repeat(im[y:y + side, x:x + side], 4, 0), 4, 1) for im in (bicubic, sr, hr)]
    crops = [np.repeat(c, 3, axis=2) if c.shape[2] == 1 else c for c in crops]
    gap = np.full((side * 4, 8, 3), 255, np.uint8)
    return np.concatenate([crops[0], gap, crops[1], gap, crops[2]], axis=1)


def evaluate(model, data_dirs: list[Path], out_dir: Path | None, *, description: str = "",
             lpips: grids.LpipsFn | None = None, grids_per_set: int = 5, tile: int = 0,
             progress: Callable[[str], None] | None = None) -> EvalReport:
    """Score ``model`` (runtime SRModel or TorchSR) on each dataset folder.

    A dataset folder is read by :func:`runtime.datasets.iter_samples` (``HR/`` and
    optionally official ``LR_bicubic_x{scale}/``, the DIV2K layout, or any
    folder; LR made with MATLAB ``imresize`` when absent), the same pairs
    ``cli.py bench quality`` scores. Writes,
    under ``out_dir`` (when given): ``<set>.csv`` (per image + mean row),
    ``summary.csv``, ``summary.txt``, ``grids/<set>/<name>.png`` and
    ``patches/<set>/<name>.png`` for the first ``grids_per_set`` images.
    """
    scale = model.scale
    report = EvalReport(description or str(model), out_dir=out_dir)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    for root in map(Path, data_dirs):
        name = root.name
        rows = []
        for i, sample in enumerate(iter_samples(root, scale)):
            lr, stem = sample.lr, Path(sample.name).stem
            sr = upscale_image(lr, model, tile=tile)
            hr = grids.match_reference(sample.hr, sr.shape[0], sr.shape[1], scale)
            bicubic = grids.bicubic_baseline(lr, scale)
            scores = grids.score(sr, bicubic, hr, scale, lpips)
            rows.append((sample.name, scores, ""))
            if out_dir is not None and i < grids_per_set:
                for sub in ("grids", "patches"):
                    (out_dir / sub / name).mkdir(parents=True, exist_ok=True)
                write_image(out_dir / "grids" / name / f"{stem}.png",
                            grids.make_grid(lr, bicubic, sr, hr, scale=scale, scores=scores))
                write_image(out_dir / "patches" / name / f"{stem}.png", _patches(bicubic, sr, hr))
            if progress is not None:
                progress(f"{name}/{sample.name}: {scores['psnr_y']:.2f} dB")
        means = _means([s for _, s, _ in rows])
        report.sets.append(SetSummary(name, len(rows), means))
        if out_dir is not None:
            grids.write_metrics_csv(out_dir / f"{name}.csv", rows)
    if out_dir is not None:
        _write_summary(report, out_dir)
    return report


def _means(scores: list[dict[str, float | str]]) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for key in grids.METRIC_COLUMNS:
        values = [s[key] for s in scores]
        nums = [v for v in values if isinstance(v, float)]
        out[key] = float(np.mean(nums)) if nums and len(nums) == len(values) else next(
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


def write_results_zip(run_dir: Path, zip_path: Path | None = None) -> Path:
    """Zip a run's artifacts (configs, CSV/TXT, grids, patches; not the large .pt files), atomically."""
    run_dir = Path(run_dir)
    zip_path = zip_path or run_dir / "results.zip"
    files = sorted(p for p in run_dir.rglob("*") if p.is_file() and p.suffix not in (".pt", ".zip", ".tmp"))
    with atomic_write(zip_path) as fh:
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                zf.write(p, p.relative_to(run_dir).as_posix())
    return zip_path

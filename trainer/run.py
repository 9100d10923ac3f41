"""Training runs as the CLI starts them: config resolution, validation, artifacts.

``run_training`` resolves the config (a preset, or the run's saved config on
``--resume``) with strict overrides, calls :func:`trainer.train.train`, and
hooks validation into every checkpoint: PSNR/SSIM on a validation folder
(grids and zoomed patches for its first five images, a ``val.csv`` row per
checkpoint). At the end it writes ``results.zip`` with every artifact except
the large ``.pt`` files.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Callable

from .config import TrainConfig, apply_overrides, load_config, preset
from .train import RunResult, train

__all__ = ["resolve_config", "run_training", "default_lpips"]

log = logging.getLogger(__name__)


def resolve_config(preset_name: str | None, out: Path, resume: bool, overrides: dict[str, Any]) -> TrainConfig:
    """The config for a run: the saved one when resuming (a run keeps its settings), else the preset;
    then ``overrides`` (strict keys). Raises ConfigError."""
    saved = Path(out) / "config.json"
    if resume and saved.is_file():
        cfg = load_config(saved)
        if preset_name and preset_name != cfg.preset:
            log.warning("resuming a %r run; --preset %r ignored", cfg.preset, preset_name)
    else:
        cfg = preset(preset_name or "psnr")
    return apply_overrides(cfg, overrides)


def default_lpips():
    """LPIPS scorer from models/lpips_alex.onnx (runtime, torch-free), or None when it is missing."""
    from srgan.runtime.lpips import available_lpips

    scorer = available_lpips()
    return None if scorer is None else scorer.distance


def _validator(out: Path, val_dirs: list[Path], scale: int) -> Callable[[int, Any], None]:
    from .evaluate import TorchSR, evaluate

    lpips = default_lpips()

    def validate(step: int, generator) -> None:
        was_training = generator.training
        model = TorchSR(generator, scale)
        report = evaluate(model, val_dirs, out / "val" / f"step_{step:07d}", lpips=lpips,
                          description=f"step {step}")
        generator.train(was_training)
        path = out / "val.csv"
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(["step", "set", "psnr_y", "ssim_y", "lpips", "bicubic_psnr_y"])
            for s in report.sets:
                w.writerow([step, s.name, *(s.means[k] for k in ("psnr_y", "ssim_y", "lpips", "bicubic_psnr_y"))])
        log.info("validation at step %d: %s", step, ", ".join(f"{s.name} {s.means['psnr_y']:.2f} dB"
                                                               for s in report.sets))

    return validate


def run_training(*, preset_name: str | None, data: list[Path], out: Path, steps: int | None = None,
                 resume: bool = False, device: str = "auto", vgg_weights: Path | None = None,
                 random_vgg: bool = False, init_from: Path | None = None, val: list[Path] | None = None,
                 cache_dir: Path | None = None, overrides: dict[str, Any] | None = None,
                 on_log: Callable[[dict[str, Any]], None] | None = None) -> tuple[RunResult, TrainConfig]:
    """Resolve the config, train, validate at each checkpoint, zip the artifacts."""
    overrides = dict(overrides or {})
    if steps is not None:
        overrides["steps"] = steps
        overrides["epochs"] = None  # an explicit step count wins over a preset's epochs
    cfg = resolve_config(preset_name, out, resume, overrides)
    hook = _validator(Path(out), list(val), cfg.scale) if val else None
    result = train(cfg, list(data), Path(out), resume=resume, device=device, vgg_weights=vgg_weights,
                   random_vgg=random_vgg, init_from=init_from, cache_dir=cache_dir, on_log=on_log,
                   on_checkpoint=hook)
    if Path(out, "config.json").is_file():
        from .evaluate import write_results_zip

        write_results_zip(Path(out))
    return result, cfg

"""Training runs as the CLI starts them: config resolution, run safety, validation, artifacts.

``run_training`` resolves the config and data (:func:`resolve_run`: a preset for a new
run; on ``--resume`` the run's own saved config and data, with any difference refused
unless ``allow_changes``), calls :func:`trainer.train.train`, and hooks validation into
every checkpoint: PSNR/SSIM on a validation folder (grids and zoomed patches for its
first five images, a ``val.csv`` row per checkpoint). At the end it writes
``results.zip`` with every artifact except the large ``.pt`` files.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import TrainConfig, apply_overrides, load_config, preset
from .data import data_fingerprint
from .train import CONFIG_NAME, RunError, RunResult, check_out, dist_info, read_resolved, train

__all__ = ["resolve_run", "run_training", "default_lpips"]

log = logging.getLogger(__name__)


def _resolve_config(preset_name: str | None, out: Path, resume: bool, overrides: dict[str, Any]) -> TrainConfig:
    """The config for a run: the saved one when resuming (a run keeps its settings), else the preset;
    then ``overrides`` (strict keys). Raises ConfigError, or RunError for another preset on resume."""
    saved = Path(out) / CONFIG_NAME
    if resume and saved.is_file():
        cfg = load_config(saved)
        if preset_name and preset_name != cfg.preset:
            raise RunError(f"{out} is a {cfg.preset!r} run and a resumed run keeps its preset: drop --preset "
                           f"{preset_name} (change single settings with --set KEY=VALUE --allow-changes)")
    else:
        cfg = preset(preset_name or "psnr")
    return apply_overrides(cfg, overrides)


def _same_paths(a: list[Path], b: list[Path]) -> bool:
    return [os.path.abspath(p) for p in a] == [os.path.abspath(p) for p in b]


def resolve_run(preset_name: str | None, data: list[Path] | None, out: Path, *, resume: bool = False,
                overrides: dict[str, Any] | None = None,
                allow_changes: bool = False) -> tuple[TrainConfig, list[Path], dict[str, Any]]:
    """The (config, data folders, changes) a run is to train with.

    A new run: the preset (default ``psnr``) with ``overrides``; ``data`` is required.
    On ``resume``: the config and data saved in ``out/config.json``; ``overrides`` or ``data``
    that differ from them (by value, by folder, or by content: see
    :func:`trainer.data.data_fingerprint`) are refused unless ``allow_changes``, and the
    differences are returned as ``{key: [saved, new]}`` (keys ``data``/``data_content`` for the
    data) for the run's history. Raises RunError with the fix, ConfigError, DataError.
    """
    out = Path(out)
    overrides = dict(overrides or {})
    if not resume:
        if not data:
            raise RunError("--data is needed to start a run (a resumed run reads its data from its config.json)")
        return _resolve_config(preset_name, out, False, overrides), list(data), {}
    check_out(out, resume=True, overwrite=False)
    if not (out / CONFIG_NAME).is_file():
        raise RunError(f"{out / CONFIG_NAME} does not exist, so the run's settings are unknown: start the run over "
                       "with --overwrite")
    saved = load_config(out / CONFIG_NAME)
    cfg = _resolve_config(preset_name, out, True, overrides)
    changes: dict[str, Any] = {f.name: [getattr(saved, f.name), getattr(cfg, f.name)]
                               for f in dataclasses.fields(cfg) if getattr(saved, f.name) != getattr(cfg, f.name)}
    resolved = read_resolved(out)
    saved_data = [Path(d) for d in resolved.get("data") or []]
    if data:
        if not _same_paths(list(data), saved_data):
            changes["data"] = [[str(d) for d in saved_data], [os.path.abspath(d) for d in data]]
    elif not saved_data:
        raise RunError(f"{out / CONFIG_NAME} records no training data: pass --data DIR")
    else:
        missing = [d for d in saved_data if not d.is_dir()]
        if missing:
            raise RunError(f"the run's training data {missing[0]} is not there: pass --data DIR (with "
                           "--allow-changes if it is not the same data)")
    folders = list(data) if data else saved_data
    before = resolved.get("data_fingerprint")
    if before:
        now = data_fingerprint(folders, cfg.scale)
        if now != before:
            changes["data_content"] = [before, now]
    if changes and not allow_changes:
        said = "; ".join(f"{k}: {old} -> {new}" if k != "data_content" else
                         f"the files differ ({old['images']} -> {new['images']} images)"
                         for k, (old, new) in changes.items())
        raise RunError(f"resuming {out} with other settings or data than it was trained with ({said}). "
                       "Resume without them, or pass --allow-changes to apply them (recorded in "
                       f"{out / CONFIG_NAME}, _resolved.history)")
    return cfg, folders, changes


def default_lpips() -> Callable[..., Any] | None:
    """LPIPS scorer from models/lpips_alex.onnx (runtime, torch-free), or None when it is missing."""
    from srgan.runtime.lpips import available_lpips

    scorer = available_lpips()
    return None if scorer is None else scorer.distance


def _validator(out: Path, val_dirs: list[Path], scale: int) -> Callable[[int, Any], None]:
    from .evaluate import TorchSR, evaluate

    lpips = default_lpips()

    def validate(step: int, generator: Any) -> None:
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


def run_training(*, preset_name: str | None, data: list[Path] | None, out: Path, steps: int | None = None,
                 resume: bool = False, overwrite: bool = False, allow_changes: bool = False, device: str = "auto",
                 vgg_weights: Path | None = None, random_vgg: bool = False, init_from: Path | None = None,
                 val: list[Path] | None = None, cache_dir: Path | None = None,
                 overrides: dict[str, Any] | None = None,
                 on_log: Callable[[dict[str, Any]], None] | None = None) -> tuple[RunResult, TrainConfig]:
    """Resolve the config and data (:func:`resolve_run`), train, validate at each checkpoint, zip the
    artifacts. ``steps`` sets the total (it clears a preset's ``epochs``). A run stopped by SIGINT or
    SIGTERM returns normally with ``RunResult.stopped_by`` set. Raises RunError, ConfigError, DataError,
    CheckpointError, PretrainedWeightsError, DeviceError."""
    overrides = dict(overrides or {})
    if steps is not None:
        overrides["steps"] = steps
        overrides["epochs"] = None  # an explicit step count wins over a preset's epochs
    out = Path(out)
    check_out(out, resume=resume, overwrite=overwrite)  # before any work
    cfg, folders, changes = resolve_run(preset_name, data, out, resume=resume, overrides=overrides,
                                        allow_changes=allow_changes)
    if resume and init_from is not None:
        log.warning("--init %s is ignored: a resumed run continues from its own checkpoint", init_from)
    hook = _validator(out, list(val), cfg.scale) if val else None
    result = train(cfg, folders, out, resume=resume, overwrite=overwrite, changes=changes, device=device,
                   vgg_weights=vgg_weights, random_vgg=random_vgg, init_from=init_from, cache_dir=cache_dir,
                   on_log=on_log, on_checkpoint=hook)
    if (out / CONFIG_NAME).is_file() and dist_info()[1] == 0:  # one writer: under DDP every rank gets here
        from .evaluate import write_results_zip

        write_results_zip(out)
    return result, cfg

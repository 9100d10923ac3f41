"""The two-phase SRGAN training loop (phase 1: G warm-up; phase 2: adversarial).

``train()`` is a library function: it returns a RunResult and writes into the
run folder (resolved config, loss CSV, checkpoints, validation artifacts). It
runs single-process or under ``torchrun`` (DistributedDataParallel; gloo on
CPU, nccl on CUDA). Batches depend only on (seed, step, rank), and every piece
of state is checkpointed, so N steps + resume + N steps equals 2N steps.

Run safety: a folder that holds a run (:data:`RUN_FILES`) is never started over
unless ``overwrite`` (which removes the run's outputs first); SIGINT or SIGTERM
during the loop finishes the step in progress, writes a checkpoint at that step
(atomically) and returns with ``RunResult.stopped_by`` set, so ``resume``
continues from there.

The pieces: :func:`_setup` (device, data, networks, optimisers), :func:`_resume`
(restore a checkpoint), :func:`_step` (one optimisation step), :func:`_log_step`
(loss CSV row), :func:`_save` (checkpoint + generator file).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn

from srgan.runtime.errors import DeviceError, SRGANError
from srgan.runtime.imageio import atomic_write

from .checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    generator_from_checkpoint,
    generator_weights,
    lineage,
    load_checkpoint,
    save_checkpoint,
)
from .config import ConfigError, TrainConfig, save_config
from .data import ImagePair, PatchBatches, data_fingerprint, degradation_config, epoch_steps, load_pairs
from .losses import (
    ContentLoss,
    adversarial_d,
    adversarial_g,
    artifact_loss,
    chroma_loss,
    edge_loss,
    lattice_loss,
    lowfreq_loss,
    pixel_loss,
    usm_sharpen,
)
from .models import build_discriminator, build_generator
from .pretrained import load_lpips_heads, load_vgg_features

__all__ = ["RunResult", "RunError", "train", "dist_info", "resolve_device", "autocast_dtype", "check_out",
           "read_resolved", "CHECKPOINT_NAME", "GENERATOR_NAME", "CONFIG_NAME", "RUN_FILES", "RUN_OUTPUTS"]

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.pt"      # full training state (large; keep out of git)
GENERATOR_NAME = "generator.pt"        # G + EMA + config only (small; what ships to continue)
CONFIG_NAME = "config.json"            # the resolved config; ``_resolved`` holds data, history, ...
LOSSES_NAME = "losses.csv"
#: Any one of these in a folder means it holds a run.
RUN_FILES = (CONFIG_NAME, CHECKPOINT_NAME, GENERATOR_NAME, LOSSES_NAME)
#: Everything a run writes into its folder (validation by trainer.run): what ``overwrite`` removes.
RUN_OUTPUTS = (*RUN_FILES, "val.csv", "val", "results.zip")
LOSS_FIELDS = ["step", "phase", "lr_g", "g_total", "pixel", "content", "lpips", "lattice", "lowfreq", "chroma",
               "artifact", "edge", "distill", "adv_g", "d_loss", "d_real", "d_fake", "steps_per_s", "images_per_s"]
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunError(SRGANError):
    """Raised if a run folder does not allow what was asked: starting over an existing run, resuming
    a folder without one, or resuming with other data or settings without ``--allow-changes``."""


@dataclass
class RunResult:
    """What a call of :func:`train` did: ``step`` reached of ``steps``; ``stopped_by`` is the signal
    name (``"SIGINT"``/``"SIGTERM"``) when a signal stopped it early (its checkpoint is at ``step``)."""

    out_dir: Path
    step: int
    steps: int
    warmup_steps: int
    epoch_steps: int
    checkpoint: Path
    last_losses: dict[str, float] = field(default_factory=dict)
    content_info: dict[str, Any] | None = None
    stopped_by: str | None = None


def resolve_device(device: str) -> torch.device:
    """auto -> cuda when available else cpu; an explicit cuda without a GPU raises DeviceError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for this config and device, or None for fp32."""
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


# ---- the run folder ---------------------------------------------------------------------------

def check_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start over a run: raises RunError if ``out`` holds one (any of :data:`RUN_FILES`) and
    neither ``resume`` nor ``overwrite`` is set, if both are, or if ``resume`` finds no checkpoint."""
    out = Path(out)
    if resume and overwrite:
        raise RunError("--resume continues the run in --out and --overwrite starts it over: choose one")
    if resume:
        if not (out / CHECKPOINT_NAME).is_file():
            raise RunError(f"{out} holds no run to resume: {out / CHECKPOINT_NAME} does not exist; "
                           "start the run without --resume")
        return
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not overwrite:
        raise RunError(f"{out} already holds a run ({', '.join(found)}): continue it with --resume, start it over "
                       "with --overwrite (its checkpoints and logs are deleted), or choose another --out")


def _clear_run(out: Path) -> None:
    """Remove what a run wrote into ``out`` (:data:`RUN_OUTPUTS`; nothing else)."""
    for name in RUN_OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def read_resolved(out: Path) -> dict[str, Any]:
    """The ``_resolved`` part of a run's ``config.json`` (data, fingerprint, history...); {} if absent."""
    import json

    path = Path(out) / CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        resolved = json.loads(path.read_text()).get("_resolved") or {}
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read {path}: {exc}") from None
    return dict(resolved)


# ---- stopping on a signal ---------------------------------------------------------------------

class _StopOnSignal:
    """While active, SIGINT/SIGTERM set :attr:`name` instead of stopping the process; the loop then
    finishes its step and checkpoints it. The first signal restores the previous handlers, so a second
    one acts as usual (quit at once). Only installable from the main thread (else a no-op)."""

    def __init__(self) -> None:
        self.name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in _STOP_SIGNALS}
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.name = signal.Signals(signum).name
        self._restore()
        log.warning("%s: stopping after this step and writing a checkpoint (send it again to quit at once)",
                    self.name)

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self._restore()


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process (which stops the loop cleanly)."""
    for s in _STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


# ---- setup ------------------------------------------------------------------------------------

@dataclass
class _Setup:
    """Everything one training process works with (built by :func:`_setup`)."""

    cfg: TrainConfig
    dev: torch.device
    world: int
    rank: int
    amp_dtype: torch.dtype | None
    pairs: list[ImagePair]
    degradation_params: dict[str, Any] | None
    epoch_steps: int
    warmup: int
    steps: int
    G: nn.Module
    D: nn.Module | None
    ema: nn.Module | None
    content: ContentLoss | None
    content_info: dict[str, Any] | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    scaler: torch.amp.GradScaler
    Gt: nn.Module              # G, or G wrapped in DistributedDataParallel
    Dt: nn.Module | None
    fmt: torch.memory_format
    degradation: Any = None    # on-the-fly LR model (trainer.degradations), None when LR is made once
    initialised_from: dict[str, Any] | None = None  # --init: the parent model (file, sha256, step, its own parent)
    teacher: nn.Module | None = None                 # distill: the frozen generator G is also held to
    distilled_from: dict[str, Any] | None = None     # its lineage (file, sha256, step, its own parent)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dev.type, dtype=self.amp_dtype)


def dist_info() -> tuple[int, int, int]:
    """(world size, rank, local rank) of this process as torchrun sets them; (1, 0, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _init_device(device: str) -> tuple[torch.device, int, int]:
    """The device of this process, world size and rank (joins the process group under torchrun)."""
    world, rank, local_rank = dist_info()
    dev = resolve_device(device)
    if world > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev, world, rank


def _setup(cfg: TrainConfig, data: list[Path], dev: torch.device, world: int, rank: int, *,
           vgg_weights: Path | None, random_vgg: bool, init_from: Path | None, cache_dir: Path | None) -> _Setup:
    """Load the data, build G (and D, the EMA of G, the content loss) and the optimisers."""
    amp_dtype = autocast_dtype(cfg.amp, dev)
    torch.manual_seed(cfg.seed)
    pairs = load_pairs(list(data), cfg.scale, cfg.degradation, min_hr=cfg.hr_patch, cache_dir=cache_dir)
    degradation = degradation_config(cfg.degradation)  # on-the-fly LR model (None: LR made once)
    degradation_params = _plain(dataclasses.asdict(degradation)) if degradation is not None else None
    ep = epoch_steps(len(pairs), cfg.batch * world)
    warmup = cfg.resolve_warmup(ep)
    steps = cfg.resolve_steps(ep)
    use_gan = cfg.uses_gan(warmup, steps)
    # the content loss is built wherever a phase weighs it, with or without a discriminator (adv=0 in phase 2 is
    # the paper's SRResNet-VGG: pixel + content)
    needs_vgg = cfg.warmup_content > 0 and warmup > 0 or steps > warmup and (cfg.content > 0 or cfg.lpips > 0)

    G = build_generator(cfg.arch, **cfg.model_kwargs()).to(dev)
    try:
        D = build_discriminator(cfg.disc, in_size=cfg.hr_patch, channels=cfg.disc_channels).to(dev) if use_gan else None
    except KeyError as exc:
        raise ConfigError(exc.args[0]) from None
    if cfg.channels_last:
        G = G.to(memory_format=torch.channels_last)
        if D is not None:
            D = D.to(memory_format=torch.channels_last)
    initialised_from = None
    if init_from is not None:
        init = load_checkpoint(init_from)
        weights = generator_weights(init)[0]
        if cfg.init_partial:
            own = G.state_dict()
            weights = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
            if not weights:
                raise CheckpointError(f"--init {init_from}: no layer matches {cfg.arch} by name and shape")
            fresh = sorted(k for k in own if k not in weights)
            log.info("init_partial: %d tensors loaded from %s; fresh: %s", len(weights), init_from, fresh or "none")
        try:
            G.load_state_dict(weights, strict=not cfg.init_partial)
        except RuntimeError as e:  # missing / unexpected / mis-shaped tensors
            raise CheckpointError(f"--init {init_from} ({init.get('arch')}) does not fit {cfg.arch} with these "
                                  f"hyperparameters: {str(e).splitlines()[0]} ... To load the layers that match "
                                  "and start the rest fresh, add --set init_partial=true") from None
        log.info("generator initialised from %s (step %s)", init_from, init.get("step"))
        initialised_from = lineage(init_from, init)
    teacher, distilled_from = _load_teacher(cfg, dev) if cfg.distill else (None, None)
    ema = copy.deepcopy(G).eval() if cfg.ema_decay > 0 else None
    if ema is not None:
        for p in ema.parameters():
            p.requires_grad_(False)
    content = None
    content_info = None
    if needs_vgg:
        feats, content_info = load_vgg_features(cfg.content_layer, vgg_weights, random_weights=random_vgg)
        heads = load_lpips_heads("vgg") if cfg.lpips > 0 and steps > warmup else None
        try:
            content = ContentLoss(feats, cfg.content_criterion, cfg.content_feature_scale, content_info["taps"],
                                  heads).to(dev)
        except ValueError as exc:  # its message names the fix (e.g. LPIPS-VGG without a VGG-16 trunk)
            raise ConfigError(str(exc)) from None
        if cfg.channels_last:
            content = content.to(memory_format=torch.channels_last)
        log.info("content loss: %s %s from %s", content_info["arch"], content_info["layer"], content_info["source"])

    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas) if D is not None else None
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    Gt: nn.Module = G
    Dt: nn.Module | None = D
    if world > 1:
        ids = [dev.index] if dev.type == "cuda" else None
        Gt = nn.parallel.DistributedDataParallel(G, device_ids=ids)
        if D is not None:
            Dt = nn.parallel.DistributedDataParallel(D, device_ids=ids)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return _Setup(cfg, dev, world, rank, amp_dtype, pairs, degradation_params, ep, warmup, steps, G, D, ema,
                  content, content_info, opt_g, opt_d, scaler, Gt, Dt, fmt, degradation, initialised_from, teacher,
                  distilled_from)


def _load_teacher(cfg: TrainConfig, dev: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen generator ``cfg.teacher`` (a .pt checkpoint or one of our ONNX exports, rebuilt and
    proven against its graph) and its lineage; ConfigError if it is not an x``cfg.scale`` model."""
    path = Path(cfg.teacher)
    model, state = generator_from_checkpoint(path)
    if state["hparams"].get("scale") != cfg.scale:
        raise ConfigError(f"teacher {path} is an x{state['hparams'].get('scale')} model; this run trains x{cfg.scale}")
    for p in model.parameters():
        p.requires_grad_(False)
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    log.info("distilling from %s (%s, step %s), weight %g", path, state.get("arch"), state.get("step"), cfg.distill)
    return model, lineage(path, state)


def _resume(s: _Setup, ckpt_path: Path) -> int:
    """Restore G, its EMA, D, both optimisers and the RNG from ``ckpt_path``; returns its step."""
    state = load_checkpoint(ckpt_path)
    s.G.load_state_dict(state["g"])
    s.opt_g.load_state_dict(state["opt_g"])
    if s.ema is not None and state.get("g_ema"):
        s.ema.load_state_dict(state["g_ema"])
    if s.D is not None and s.opt_d is not None and state.get("d"):
        try:
            s.D.load_state_dict(state["d"])
        except RuntimeError:
            raise CheckpointError(f"{ckpt_path}: its discriminator ({state.get('d_hparams')}) is not the configured "
                                  f"{s.cfg.disc} ({s.D.hparams}); a run keeps its discriminator: start a new run "
                                  "with --init instead of --resume") from None
        s.opt_d.load_state_dict(state["opt_d"])
    torch.set_rng_state(state["torch_rng"])
    s.initialised_from = state.get("initialised_from")
    if s.distilled_from is not None and (state.get("distilled_from") or {}).get("sha256") != s.distilled_from["sha256"]:
        raise CheckpointError(f"{ckpt_path}: the run distilled from {state.get('distilled_from')}, not from "
                              f"{s.distilled_from}; a run keeps its teacher: start a new run with --init instead")
    start = int(state["step"])
    log.info("resumed %s at step %d", ckpt_path, start)
    if start >= s.steps:
        log.info("run already has %d >= %d steps; nothing to do", start, s.steps)
    return start


def _write_config(s: _Setup, out: Path, data: list[Path], *, start: int, resume: bool, overwrite: bool,
                  changes: dict[str, Any] | None) -> None:
    """Save the resolved config with ``_resolved``: what this run derived, its data (absolute paths and
    fingerprint) and its history (one entry per start or resume, with the changes allowed then)."""
    history = list(read_resolved(out).get("history") or []) if resume else []
    entry: dict[str, Any] = {"at": datetime.now(UTC).isoformat(timespec="seconds"),
                             "action": "resume" if resume else "overwrite" if overwrite else "start", "step": start}
    if changes:
        entry["changes"] = changes
    save_config(s.cfg, out / CONFIG_NAME, extra={
        "epoch_steps": s.epoch_steps, "steps": s.steps, "warmup_steps": s.warmup, "train_images": len(s.pairs),
        "world_size": s.world, "device": str(s.dev),
        "autocast": str(s.amp_dtype).replace("torch.", "") if s.amp_dtype else "fp32",
        "data": [os.path.abspath(p) for p in data], "data_fingerprint": data_fingerprint(data, s.cfg.scale),
        "content_loss": s.content_info, "degradation_params": s.degradation_params, "history": [*history, entry],
    })


# ---- one step, logging, checkpoints -----------------------------------------------------------

def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach().float(), 1.0 - decay)
        for eb, b in zip(ema.buffers(), model.buffers()):
            eb.copy_(b)


def _unwrap(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


def _step(s: _Setup, lr: torch.Tensor, hr: torch.Tensor, step: int) -> tuple[int, dict[str, float]]:
    """One optimisation step (0-based ``step``) on a batch: lr (B,3,p,p), hr (B,3,p*s,p*s) in [0, 1].

    Updates D (phase 2, every ``d_every`` steps), then G, then the EMA of G. Returns (phase, loss terms).
    """
    cfg = s.cfg
    lr = lr.to(s.dev, non_blocking=True).contiguous(memory_format=s.fmt)
    hr = hr.to(s.dev, non_blocking=True).contiguous(memory_format=s.fmt)
    phase = 1 if step < s.warmup else 2
    decay = cfg.lr_gamma ** sum(step >= m for m in cfg.lr_milestones)
    for opt, base in ((s.opt_g, cfg.lr_g), (s.opt_d, cfg.lr_d)):
        for group in opt.param_groups if opt is not None else ():
            group["lr"] = base * decay
    terms: dict[str, float] = {}
    with s.autocast():
        sr = s.Gt(lr)
    if phase == 2 and s.D is not None and s.Dt is not None and s.opt_d is not None and step % cfg.d_every == 0:
        s.D.train()
        for p in s.D.parameters():
            p.requires_grad_(True)
        with s.autocast():
            real, fake = s.Dt(hr), s.Dt(sr.detach())
        d_loss = adversarial_d(real, fake)
        s.opt_d.zero_grad(set_to_none=True)
        s.scaler.scale(d_loss).backward()
        s.scaler.step(s.opt_d)
        terms.update(d_loss=d_loss.item(), d_real=torch.sigmoid(real.float()).mean().item(),
                     d_fake=torch.sigmoid(fake.float()).mean().item())
    w_pix, w_con, w_adv = ((cfg.warmup_pixel, cfg.warmup_content, 0.0) if phase == 1
                           else (cfg.pixel, cfg.content, cfg.adv if s.D is not None else 0.0))
    w_lat, w_low = (cfg.lattice, cfg.lowfreq) if phase == 2 else (0.0, 0.0)
    sr32 = sr.float()
    loss = torch.zeros((), device=s.dev)
    target = usm_sharpen(hr, cfg.gt_usm).contiguous(memory_format=s.fmt)  # hr itself when gt_usm is 0
    if w_pix:
        pix = pixel_loss(cfg.pixel_loss, sr32, target)
        loss = loss + w_pix * pix
        terms["pixel"] = pix.item()
    w_lp = cfg.lpips if phase == 2 else 0.0
    if (w_con or w_lp) and s.content is not None:
        with s.autocast():
            con, lp = s.content.terms(sr, target, lpips=bool(w_lp))
        if w_con:
            loss = loss + w_con * con
            terms["content"] = con.item()
        if w_lp and lp is not None:
            loss = loss + w_lp * lp
            terms["lpips"] = lp.item()
    p2 = phase == 2
    # the phase-2 terms of (SR, HR, scale) alone, by their LOSS_FIELDS name: (weight, loss function)
    for name, (w, fn) in {"lattice": (w_lat, lattice_loss), "lowfreq": (w_low, lowfreq_loss),
                          "chroma": (cfg.chroma if p2 else 0.0, chroma_loss),
                          "edge": (cfg.edge if p2 else 0.0, edge_loss)}.items():
        if w:
            value = fn(sr32, hr, cfg.scale)
            loss = loss + w * value
            terms[name] = value.item()
    if p2 and cfg.artifact and s.ema is not None:
        with torch.no_grad(), s.autocast():
            sr_ema = s.ema(lr)
        art = artifact_loss(sr32, sr_ema, hr)
        loss = loss + cfg.artifact * art
        terms["artifact"] = art.item()
    if p2 and cfg.distill and s.teacher is not None:
        with torch.no_grad(), s.autocast():
            taught = s.teacher(lr).float().clamp(0, 1)  # clamped, as the runtime clamps every output
        dis = pixel_loss("l1", sr32, taught)
        loss = loss + cfg.distill * dis
        terms["distill"] = dis.item()
    if w_adv and s.D is not None and s.Dt is not None:
        for p in s.D.parameters():
            p.requires_grad_(False)
        with s.autocast():
            adv = adversarial_g(s.Dt(sr))
        loss = loss + w_adv * adv
        terms["adv_g"] = adv.item()
    s.opt_g.zero_grad(set_to_none=True)
    s.scaler.scale(loss).backward()
    s.scaler.step(s.opt_g)
    s.scaler.update()
    if s.ema is not None:
        _ema_update(s.ema, s.G, min(cfg.ema_decay, (1 + step) / (10 + step)))
    terms["g_total"] = loss.item()
    return phase, terms


def _open_log(csv_path: Path, *, resume: bool, start: int) -> None:
    """Start ``losses.csv`` (header), or on resume drop the rows an interrupted run logged after its
    checkpoint (they are replayed) and rewrite it under today's columns."""
    if not csv_path.exists():
        with open(csv_path, "w", newline="") as fh:
            csv.writer(fh).writerow(LOSS_FIELDS)
        return
    if not resume:
        return
    with open(csv_path, newline="") as fh:
        header, *rows = csv.reader(fh)
    by_step = {int(r[0]): dict(zip(header, r)) for r in rows if r and int(r[0]) <= start}  # later row wins
    text = io.StringIO()  # a log from an older version gains the new (empty) columns
    csv.writer(text).writerows([LOSS_FIELDS, *([by_step[k].get(f, "") for f in LOSS_FIELDS]
                                               for k in sorted(by_step))])
    with atomic_write(csv_path) as fh:
        fh.write(text.getvalue().encode())


def _log_step(csv_path: Path, row: dict[str, Any]) -> None:
    """Append one row (``LOSS_FIELDS``; floats to 6 significant digits) to the loss CSV."""
    with open(csv_path, "a", newline="") as fh:
        csv.writer(fh).writerow([_fmt(row.get(k, "")) for k in LOSS_FIELDS])


def _save(s: _Setup, out: Path, step: int) -> None:
    """Write the full checkpoint and the generator-only file at ``step`` (each atomically)."""
    g_state = {k: v.detach().cpu() for k, v in s.G.state_dict().items()}
    e_state = {k: v.detach().cpu() for k, v in s.ema.state_dict().items()} if s.ema is not None else None
    common = {
        "format_version": FORMAT_VERSION, "arch": s.cfg.arch, "hparams": _unwrap(s.G).hparams,
        "g": g_state, "g_ema": e_state, "step": step, "phase": 1 if step <= s.warmup else 2,
        "warmup_steps": s.warmup, "config": _plain(dataclasses.asdict(s.cfg)), "content_loss": s.content_info,
        "train_images": len(s.pairs), "degradation_params": s.degradation_params,
        "initialised_from": s.initialised_from, "distilled_from": s.distilled_from,
    }
    full = dict(common, opt_g=s.opt_g.state_dict(),
                d=s.D.state_dict() if s.D is not None else None, d_hparams=s.D.hparams if s.D is not None else None,
                opt_d=s.opt_d.state_dict() if s.opt_d else None, torch_rng=torch.get_rng_state())
    save_checkpoint(full, out / CHECKPOINT_NAME)
    save_checkpoint(common, out / GENERATOR_NAME)


def _agree(s: _Setup, name: str | None) -> str | None:
    """The signal (name) that stops the loop, if any process got one: every rank must leave the loop
    at the same step, so under DDP the ranks agree on it after each step."""
    if s.world == 1:
        return name
    import torch.distributed as dist

    flag = torch.tensor([float(signal.Signals[name].value) if name else 0.0], device=s.dev)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return signal.Signals(int(flag.item())).name if flag.item() else None


# ---- the loop ---------------------------------------------------------------------------------

def train(cfg: TrainConfig, data: list[Path], out: Path, *, resume: bool = False, overwrite: bool = False,
          changes: dict[str, Any] | None = None, device: str = "auto", vgg_weights: Path | None = None,
          random_vgg: bool = False, init_from: Path | None = None, cache_dir: Path | None = None,
          on_log: Callable[[dict[str, Any]], None] | None = None,
          on_checkpoint: Callable[[int, nn.Module], None] | None = None) -> RunResult:
    """Train (or continue training) a generator; see the module docstring.

    ``resume``: continue the run in ``out`` from its checkpoint; ``overwrite``: start over a run
    that is there (its outputs are removed first); without either, a run in ``out`` is refused.
    ``changes``: what the caller allowed to differ from the saved run ({key: [old, new]}), recorded
    in ``config.json`` (``_resolved.history``). ``init_from``: a checkpoint whose generator weights
    start this run (e.g. phase 2 from a PSNR model, or fine-tuning the shipped model on one's own
    photos; ignored on resume). ``on_checkpoint(step, generator)`` is called on rank 0 after each
    regular checkpoint (validation grids and metrics hook in here), not after a stop by a signal.
    Raises RunError, DataError, PretrainedWeightsError, CheckpointError, DeviceError, ConfigError.
    """
    out = Path(out)
    check_out(out, resume=resume, overwrite=overwrite)  # every rank, before any of them writes
    overwrite = overwrite and any((out / name).exists() for name in RUN_FILES)
    with _StopOnSignal() as stop:
        dev, world, rank = _init_device(device)
        if overwrite and rank == 0:
            _clear_run(out)
        s = _setup(cfg, data, dev, world, rank, vgg_weights=vgg_weights, random_vgg=random_vgg,
                   init_from=None if resume else init_from, cache_dir=cache_dir)
        ckpt_path = out / CHECKPOINT_NAME
        start = _resume(s, ckpt_path) if resume else 0
        csv_path = out / LOSSES_NAME
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            _write_config(s, out, data, start=start, resume=resume, overwrite=overwrite, changes=changes)
            log.info("%d training images; 1 epoch = %d steps of %d x %d patches; phase 1 = steps [0, %d), "
                     "phase 2 = [%d, %d)", len(s.pairs), s.epoch_steps, cfg.batch * world, cfg.hr_patch, s.warmup,
                     s.warmup, s.steps)
            _open_log(csv_path, resume=resume, start=start)

        dataset = PatchBatches(s.pairs, scale=cfg.scale, lr_patch=cfg.lr_patch, batch=cfg.batch, seed=cfg.seed,
                               augment=cfg.augment, rank=rank, degradation=s.degradation)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=range(start, s.steps), num_workers=cfg.workers,
            persistent_workers=False, pin_memory=dev.type == "cuda",
            worker_init_fn=_ignore_stop_signals if cfg.workers else None,
        )

        def save(step: int, validate: bool = True) -> None:
            if rank != 0:
                return
            _save(s, out, step)
            if validate and on_checkpoint is not None:
                on_checkpoint(step, s.ema if s.ema is not None else s.G)

        last: dict[str, float] = {}
        t0, n_since = time.perf_counter(), 0
        s.G.train()
        step = saved = start
        stopped_by = None
        for lr, hr in loader:
            phase, last = _step(s, lr, hr, step)
            step += 1
            n_since += 1
            if rank == 0 and (step % cfg.log_every == 0 or step == s.steps):
                dt = time.perf_counter() - t0
                row = {"step": step, "total": s.steps, "phase": phase, "lr_g": s.opt_g.param_groups[0]["lr"],
                       **last, "steps_per_s": n_since / dt, "images_per_s": n_since * cfg.batch * world / dt}
                _log_step(csv_path, row)
                if on_log is not None:
                    on_log(row)
                t0, n_since = time.perf_counter(), 0
            if step % cfg.checkpoint_every == 0 and step != s.steps:
                save(step)
                saved = step
            stopped_by = _agree(s, stop.name)
            if stopped_by and step < s.steps:
                break
            stopped_by = None  # a signal at the last step: the run is complete anyway
        if stopped_by:
            if step != saved:
                save(step, validate=False)
            log.warning("stopped by %s at step %d of %d; the checkpoint %s is at that step (continue with "
                        "--resume)", stopped_by, step, s.steps, ckpt_path)
        elif step == s.steps and (start < s.steps or not ckpt_path.exists()):
            save(step)
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
    return RunResult(out, step, s.steps, s.warmup, s.epoch_steps, ckpt_path, last, s.content_info, stopped_by)


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def _plain(obj: Any) -> Any:
    """Config dict with tuples as lists, so weights_only loading accepts it."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj

"""The two-phase SRGAN training loop (phase 1: G warm-up; phase 2: adversarial).

``train()`` is a library function: it returns a RunResult and writes into the
run folder (resolved config, loss CSV, checkpoints, validation artifacts). It
runs single-process or under ``torchrun`` (DistributedDataParallel; gloo on
CPU, nccl on CUDA). Batches depend only on (seed, step, rank), and every piece
of state is checkpointed, so N steps + resume + N steps equals 2N steps.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from srgan.runtime.imageio import atomic_write

from .checkpoint import FORMAT_VERSION, generator_weights, load_checkpoint, save_checkpoint
from .config import TrainConfig, save_config
from .data import PatchBatches, epoch_steps, load_pairs
from .losses import ContentLoss, adversarial_d, adversarial_g, lattice_loss, lowfreq_loss, pixel_loss
from .models import Discriminator, build_generator
from .pretrained import load_vgg_features

__all__ = ["RunResult", "train", "resolve_device", "autocast_dtype", "CHECKPOINT_NAME", "GENERATOR_NAME"]

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.pt"      # full training state (large; keep out of git)
GENERATOR_NAME = "generator.pt"        # G + EMA + config only (small; what ships to continue)
LOSS_FIELDS = ["step", "phase", "lr_g", "g_total", "pixel", "content", "lattice", "lowfreq", "adv_g", "d_loss",
               "d_real", "d_fake", "steps_per_s", "images_per_s"]


@dataclass
class RunResult:
    out_dir: Path
    step: int
    steps: int
    warmup_steps: int
    epoch_steps: int
    checkpoint: Path
    last_losses: dict[str, float] = field(default_factory=dict)
    content_info: dict[str, Any] | None = None


class DeviceError(RuntimeError):
    """Raised if the requested device is not available."""


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


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach().float(), 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def _unwrap(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


def train(cfg: TrainConfig, data: list[Path], out: Path, *, resume: bool = False, device: str = "auto",
          vgg_weights: Path | None = None, random_vgg: bool = False, init_from: Path | None = None,
          cache_dir: Path | None = None, on_log: Callable[[dict[str, Any]], None] | None = None,
          on_checkpoint: Callable[[int, nn.Module], None] | None = None) -> RunResult:
    """Train (or continue training) a generator; see the module docstring.

    ``init_from``: a checkpoint whose generator weights start this run (e.g. phase 2
    from a PSNR model, or fine-tuning the shipped model on one's own photos).
    ``on_checkpoint(step, generator)`` is called on rank 0 after each checkpoint
    (validation grids and metrics hook in here).
    Raises DataError, PretrainedWeightsError, CheckpointError, DeviceError.
    """
    out = Path(out)
    world, rank, local_rank = _dist_info()
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
    amp_dtype = autocast_dtype(cfg.amp, dev)
    torch.manual_seed(cfg.seed)

    pairs = load_pairs(list(data), cfg.scale, cfg.degradation, min_hr=cfg.hr_patch, cache_dir=cache_dir)
    ep = epoch_steps(len(pairs), cfg.batch * world)
    warmup = cfg.resolve_warmup(ep)
    steps = cfg.resolve_steps(ep)
    use_gan = cfg.uses_gan(warmup, steps)
    needs_vgg = cfg.warmup_content > 0 and warmup > 0 or use_gan and cfg.content > 0

    G = build_generator(cfg.arch, **cfg.model_kwargs()).to(dev)
    D = Discriminator(in_size=cfg.hr_patch).to(dev) if use_gan else None
    if cfg.channels_last:
        G = G.to(memory_format=torch.channels_last)
        if D is not None:
            D = D.to(memory_format=torch.channels_last)
    if init_from is not None and not resume:
        init = load_checkpoint(init_from)
        G.load_state_dict(generator_weights(init)[0])
        log.info("generator initialised from %s (step %s)", init_from, init.get("step"))
    ema = copy.deepcopy(G).eval() if cfg.ema_decay > 0 else None
    if ema is not None:
        for p in ema.parameters():
            p.requires_grad_(False)
    content = None
    content_info = None
    if needs_vgg:
        feats, content_info = load_vgg_features(cfg.content_layer, vgg_weights, random_weights=random_vgg)
        content = ContentLoss(feats, cfg.content_criterion, cfg.content_feature_scale, content_info["taps"]).to(dev)
        if cfg.channels_last:
            content = content.to(memory_format=torch.channels_last)
        log.info("content loss: %s %s from %s", content_info["arch"], content_info["layer"], content_info["source"])

    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas) if D is not None else None
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)

    start = 0
    ckpt_path = out / CHECKPOINT_NAME
    if resume:
        state = load_checkpoint(ckpt_path)
        G.load_state_dict(state["g"])
        opt_g.load_state_dict(state["opt_g"])
        if ema is not None and state.get("g_ema"):
            ema.load_state_dict(state["g_ema"])
        if D is not None and state.get("d"):
            D.load_state_dict(state["d"])
            opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        log.info("resumed %s at step %d", ckpt_path, start)
        if start >= steps:
            log.info("run already has %d >= %d steps; nothing to do", start, steps)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.json", extra={
            "epoch_steps": ep, "steps": steps, "warmup_steps": warmup, "train_images": len(pairs), "world_size": world,
            "device": str(dev), "autocast": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
            "data": [str(p) for p in data], "content_loss": content_info,
        })
        log.info("%d training images; 1 epoch = %d steps of %d x %d patches; phase 1 = steps [0, %d), "
                 "phase 2 = [%d, %d)", len(pairs), ep, cfg.batch * world, cfg.hr_patch, warmup, warmup, steps)

    Gt, Dt = G, D
    if world > 1:
        ids = [dev.index] if dev.type == "cuda" else None
        Gt = nn.parallel.DistributedDataParallel(G, device_ids=ids)
        if D is not None:
            Dt = nn.parallel.DistributedDataParallel(D, device_ids=ids)

    dataset = PatchBatches(pairs, scale=cfg.scale, lr_patch=cfg.lr_patch, batch=cfg.batch, seed=cfg.seed,
                           augment=cfg.augment, rank=rank)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(start, steps), num_workers=cfg.workers,
        persistent_workers=False, pin_memory=dev.type == "cuda",
    )
    autocast = (lambda: torch.autocast(dev.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format

    def save(step: int) -> None:
        if rank != 0:
            return
        g_state = {k: v.detach().cpu() for k, v in G.state_dict().items()}
        e_state = {k: v.detach().cpu() for k, v in ema.state_dict().items()} if ema is not None else None
        common = {
            "format_version": FORMAT_VERSION, "arch": cfg.arch, "hparams": _unwrap(G).hparams,
            "g": g_state, "g_ema": e_state, "step": step, "phase": 1 if step <= warmup else 2,
            "warmup_steps": warmup, "config": _plain(dataclasses.asdict(cfg)), "content_loss": content_info,
            "train_images": len(pairs),
        }
        full = dict(common, opt_g=opt_g.state_dict(),
                    d=D.state_dict() if D is not None else None, d_hparams=D.hparams if D is not None else None,
                    opt_d=opt_d.state_dict() if opt_d else None, torch_rng=torch.get_rng_state())
        save_checkpoint(full, ckpt_path)
        save_checkpoint(common, out / GENERATOR_NAME)
        if on_checkpoint is not None:
            on_checkpoint(step, ema if ema is not None else G)

    csv_path = out / "losses.csv"
    if rank == 0 and not csv_path.exists():
        with open(csv_path, "w", newline="") as fh:
            csv.writer(fh).writerow(LOSS_FIELDS)
    elif rank == 0 and resume:  # rows logged after the checkpoint by an interrupted run are replayed: drop them
        with open(csv_path, newline="") as fh:
            header, *rows = csv.reader(fh)
        by_step = {int(r[0]): dict(zip(header, r)) for r in rows if r and int(r[0]) <= start}  # later row wins
        text = io.StringIO()  # rewritten under today's columns (a log from an older version gains empty ones)
        csv.writer(text).writerows([LOSS_FIELDS, *([by_step[k].get(f, "") for f in LOSS_FIELDS]
                                                   for k in sorted(by_step))])
        with atomic_write(csv_path) as fh:
            fh.write(text.getvalue().encode())
    last: dict[str, float] = {}
    t0, n_since = time.perf_counter(), 0
    G.train()
    step = start
    for lr, hr in loader:
        lr = lr.to(dev, non_blocking=True).contiguous(memory_format=fmt)
        hr = hr.to(dev, non_blocking=True).contiguous(memory_format=fmt)
        phase = 1 if step < warmup else 2
        decay = cfg.lr_gamma ** sum(step >= m for m in cfg.lr_milestones)
        for opt, base in ((opt_g, cfg.lr_g), (opt_d, cfg.lr_d)):
            for group in opt.param_groups if opt is not None else ():
                group["lr"] = base * decay
        terms: dict[str, float] = {}
        d_loss = None
        with autocast():
            sr = Gt(lr)
        if phase == 2 and D is not None and step % cfg.d_every == 0:
            D.train()
            for p in D.parameters():
                p.requires_grad_(True)
            with autocast():
                real, fake = Dt(hr), Dt(sr.detach())
            d_loss = adversarial_d(real, fake)
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(d_loss).backward()
            scaler.step(opt_d)
            terms.update(d_loss=d_loss.item(), d_real=torch.sigmoid(real.float()).mean().item(),
                         d_fake=torch.sigmoid(fake.float()).mean().item())
        w_pix, w_con, w_adv = ((cfg.warmup_pixel, cfg.warmup_content, 0.0) if phase == 1
                               else (cfg.pixel, cfg.content, cfg.adv if D is not None else 0.0))
        w_lat, w_low = (cfg.lattice, cfg.lowfreq) if phase == 2 else (0.0, 0.0)
        sr32 = sr.float()
        loss = torch.zeros((), device=dev)
        if w_pix:
            pix = pixel_loss(cfg.pixel_loss, sr32, hr)
            loss = loss + w_pix * pix
            terms["pixel"] = pix.item()
        if w_con:
            with autocast():
                con = content(sr, hr)
            loss = loss + w_con * con
            terms["content"] = con.item()
        if w_lat:
            lat = lattice_loss(sr32, hr, cfg.scale)
            loss = loss + w_lat * lat
            terms["lattice"] = lat.item()
        if w_low:
            low = lowfreq_loss(sr32, hr, cfg.scale)
            loss = loss + w_low * low
            terms["lowfreq"] = low.item()
        if w_adv:
            for p in D.parameters():
                p.requires_grad_(False)
            with autocast():
                adv = adversarial_g(Dt(sr))
            loss = loss + w_adv * adv
            terms["adv_g"] = adv.item()
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt_g)
        scaler.update()
        if ema is not None:
            _ema_update(ema, G, min(cfg.ema_decay, (1 + step) / (10 + step)))
        step += 1
        n_since += 1
        terms["g_total"] = loss.item()
        last = terms
        if rank == 0 and (step % cfg.log_every == 0 or step == steps):
            dt = time.perf_counter() - t0
            row = {"step": step, "total": steps, "phase": phase, "lr_g": opt_g.param_groups[0]["lr"], **terms,
                   "steps_per_s": n_since / dt, "images_per_s": n_since * cfg.batch * world / dt}
            with open(csv_path, "a", newline="") as fh:
                csv.writer(fh).writerow([_fmt(row.get(k, "")) for k in LOSS_FIELDS])
            if on_log is not None:
                on_log(row)
            t0, n_since = time.perf_counter(), 0
        if step % cfg.checkpoint_every == 0 and step != steps:
            save(step)
    if step == steps and (start < steps or not ckpt_path.exists()):
        save(step)
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
    return RunResult(out, step, steps, warmup, ep, ckpt_path, last, content_info)


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def _plain(obj: Any) -> Any:
    """Config dict with tuples as lists, so weights_only loading accepts it."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj

"""Typed, frozen training configuration with named presets.

A config is a frozen dataclass; overrides are strict (an unknown key is an
error) and the resolved config is saved as JSON next to every run.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from srgan.runtime.errors import SRGANError
from srgan.runtime.imageio import atomic_write

__all__ = ["LR_MODELS", "ON_THE_FLY", "TrainConfig", "PRESETS", "preset", "apply_overrides", "ConfigError",
           "load_config", "save_config"]


class ConfigError(SRGANError):
    """Raised if a preset name, key or value is invalid."""


#: The models of trainer.degradations.DEGRADATIONS the trainer draws per sample from HR crops (named here, not
#: imported, to keep this module light for the CLI; a test checks each is registered there).
ON_THE_FLY: tuple[str, ...] = ("real", "real-mean", "real-mix", "real-orders", "real-first")
#: How the trainer makes LR from HR: once per image (matlab: MATLAB-style bicubic imresize; pil: Pillow's
#: bicubic), or per sample by one of ON_THE_FLY.
LR_MODELS: tuple[str, ...] = ("matlab", "pil", *ON_THE_FLY)


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "custom"
    # model
    arch: str = "srresnet"                  # registry key in trainer.models.GENERATORS
    blocks: int = 16
    channels: int = 64
    bn: bool = True
    scale: int = 4
    # data
    hr_patch: int = 96                      # LR patch = hr_patch // scale
    batch: int = 16
    degradation: str = "matlab"             # matlab | pil (LR made once from HR when no official LR exists) |
                                            # real (per-sample blur/resize/noise/JPEG x2: trainer.degradations.REAL)
                                            # | real-mean (the same, LR channel means kept at the HR's)
                                            # | real-mix (real-mean, a fifth of the samples clean bicubic)
                                            # | real-orders (real-mix, half the rest first-order)
                                            # | real-first (real-mix, four fifths of the rest first-order)
    workers: int = 2
    augment: bool = True                    # flips + 90-degree rotations
    init_partial: bool = False              # --init: load only the layers with the same name and shape (the
                                            # rest start fresh; both lists are logged), e.g. a new upsampler
    # schedule (steps are the unit; an epoch = ceil(n_images / batch) steps, printed at start)
    steps: int = 10000                      # total steps (phase 1 + phase 2)
    epochs: float | None = None             # if set, total = epochs x epoch steps (an explicit --steps clears it)
    warmup_steps: int | None = None         # phase-1 length; None -> warmup_epochs
    warmup_epochs: float | None = None
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    lr_milestones: tuple[int, ...] = ()     # absolute steps where both lrs are multiplied by lr_gamma
    lr_gamma: float = 0.1
    d_every: int = 1                        # phase 2: update D when step % d_every == 0
    disc: str = "vgg"                       # discriminator, a key of trainer.models.DISCRIMINATORS (checked when
                                            # built; this module stays torch-free): vgg (SRGAN's,
                                            # one logit per crop) | unet (Real-ESRGAN's, per pixel, spectral norm)
    disc_channels: int = 64                 # its first layer's width (the rest are multiples)
    # losses, phase 1 (warm-up, D frozen)
    warmup_pixel: float = 1.0
    warmup_content: float = 0.0
    # losses, phase 2 (adversarial)
    pixel: float = 0.0
    content: float = 1.0
    adv: float = 1e-3
    pixel_loss: str = "l1"                  # l1 | mse
    gt_usm: float = 0.0                     # pixel and content terms compare with an unsharp-masked HR of this
                                            # amount (Real-ESRGAN's 0.5; trainer.losses.usm_sharpen); D sees the HR
    content_layer: str = "relu5_4"
    content_criterion: str = "mse"          # mse | l1
    content_feature_scale: float = 1.0      # features divided by this (paper: 12.75)
    lpips: float = 0.0                      # phase 2: LPIPS-VGG distance weight, on the content loss's VGG-16 pass
                                            # (trainer.losses.ContentLoss.terms)
    lattice: float = 0.0                    # phase 2: checkerboard penalty weight (trainer.losses.lattice_loss)
    lowfreq: float = 0.0                    # phase 2: colour / LR-scale fidelity weight (trainer.losses.lowfreq_loss)
    chroma: float = 0.0                     # phase 2: fine-chroma (colour noise) weight (trainer.losses.chroma_loss)
    artifact: float = 0.0                   # phase 2: LDL artefact-map L1 (trainer.losses.artifact_loss; needs EMA)
    edge: float = 0.0                       # phase 2: edge-position term near HR edges (trainer.losses.edge_loss)
    distill: float = 0.0                    # phase 2: L1 weight between G's output and the teacher's
    teacher: str = ""                       # phase 2: the generator distilled from (.pt or our .onnx), for distill
    # bookkeeping
    ema_decay: float = 0.999                # 0 disables the EMA of G
    checkpoint_every: int = 500
    log_every: int = 20
    seed: int = 0
    amp: str = "auto"                       # auto | off | bf16 | fp16
    channels_last: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.scale in (2, 4, 8), "scale must be 2, 4 or 8"),
            (self.hr_patch % self.scale == 0, "hr_patch must be divisible by scale"),
            (self.batch >= 1 and self.steps >= 0, "batch >= 1 and steps >= 0"),
            (self.pixel_loss in ("l1", "mse"), "pixel_loss must be l1 or mse"),
            (self.content_criterion in ("l1", "mse"), "content_criterion must be l1 or mse"),
            (self.degradation in LR_MODELS, f"degradation must be one of {', '.join(LR_MODELS)}"),
            (self.amp in ("auto", "off", "bf16", "fp16"), "amp must be auto, off, bf16 or fp16"),
            (self.d_every >= 1, "d_every must be >= 1"),
            (self.disc_channels >= 1, "disc_channels must be >= 1"),
            (0.0 <= self.ema_decay < 1.0, "ema_decay must be in [0, 1)"),
            (min(self.lpips, self.lattice, self.lowfreq, self.chroma, self.artifact, self.edge, self.distill,
                 self.gt_usm) >= 0.0,
             "lpips, lattice, lowfreq, chroma, artifact, edge, distill and gt_usm must be >= 0"),
            (self.distill == 0.0 or bool(self.teacher),
             "distill needs the model to distil from: --set teacher=models/NAME.onnx (or a .pt checkpoint)"),
            (self.artifact == 0.0 or self.ema_decay > 0.0, "artifact (LDL) compares G with its EMA: ema_decay > 0"),
            (self.checkpoint_every >= 1 and self.log_every >= 1, "checkpoint_every and log_every must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    @property
    def lr_patch(self) -> int:
        return self.hr_patch // self.scale

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the generator class for ``arch`` (from the registry in trainer.models).
        Raises ConfigError naming the registered architectures."""
        from .models import arch_spec

        try:
            return arch_spec(self.arch).hparams(self)
        except KeyError as exc:
            raise ConfigError(exc.args[0]) from None

    def resolve_steps(self, epoch_steps: int) -> int:
        """Total steps: ``epochs`` x ``epoch_steps`` when epochs is set, else ``steps``."""
        return self.steps if self.epochs is None else int(round(self.epochs * epoch_steps))

    def resolve_warmup(self, epoch_steps: int) -> int:
        """Phase-1 length in steps (explicit steps win over epochs; default: the whole run)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        if self.warmup_epochs is not None:
            return int(round(self.warmup_epochs * epoch_steps))
        return self.resolve_steps(epoch_steps)

    def uses_gan(self, warmup: int, steps: int) -> bool:
        return steps > warmup and self.adv > 0


SRGAN_CONTENT_LAYERS = "conv1_2:0.1,conv2_2:0.1,conv3_4:1,conv4_4:1,conv5_4:1"  # VGG-16: conv3_3, conv4_3, conv5_3

PRESETS: dict[str, TrainConfig] = {
    # The SRGAN report's numbers: 2 warm-up + 16 adversarial epochs, batch 16, HR 96, Adam 1e-4
    # for G and D, content (VGG relu5_4) + 0.07 pixel + 1e-6 adversarial, D every 6 steps.
    "report": TrainConfig(
        preset="report", warmup_epochs=2, epochs=18, warmup_pixel=0.07, warmup_content=1.0,
        pixel=0.07, content=1.0, adv=1e-6, d_every=6, content_layer="relu5_4", pixel_loss="l1",
    ),
    # Ledig et al.: MSE SRResNet warm-up, then VGG54/12.75 + 1e-3 adversarial, lr 1e-4 then 1e-5.
    "paper": TrainConfig(
        preset="paper", warmup_steps=1_000_000, steps=1_200_000, pixel_loss="mse", warmup_pixel=1.0,
        warmup_content=0.0, pixel=0.0, content=1.0, adv=1e-3, content_feature_scale=12.75,
        content_layer="relu5_4", d_every=1, lr_milestones=(1_100_000,),
    ),
    # PSNR-oriented model: L1 pixel loss only, no BN (as EDSR/ESRGAN found better for fidelity).
    "psnr": TrainConfig(
        preset="psnr", bn=False, steps=100_000, warmup_pixel=1.0, warmup_content=0.0, adv=0.0,
        lr_g=2e-4, lr_milestones=(50_000, 80_000), lr_gamma=0.5,
    ),
    # Perceptual fine-tuning of a psnr model (--init): Real-ESRGAN's multi-layer pre-activation VGG
    # loss (L1) and ESRGAN's adversarial weight, L1 pixel loss at 1, plus the two terms that keep
    # the result clean: a checkerboard (lattice) penalty and colour / LR-scale fidelity (lowfreq).
    # Without them this fine-tune showed a pixel-lattice pattern 230x the HR's and a -4 level colour
    # cast (benchmarks/TRAINING.md).
    "srgan": TrainConfig(
        preset="srgan", bn=False, steps=20_000, warmup_steps=0, pixel_loss="l1", pixel=1.0,
        content=1.0, content_criterion="l1", content_layer=SRGAN_CONTENT_LAYERS, adv=5e-3, d_every=1,
        lattice=500.0, lowfreq=30.0, ema_decay=0.995, lr_milestones=(15_000,), lr_gamma=0.5,
    ),
    # The fast generator (trainer/span.py: SPAN, 48 channels, 6 blocks; ~0.43 M MACs per LR pixel),
    # PSNR phase from scratch: L1, Adam 5e-4 halved stepwise (the SPAN paper's rate, for batch 16),
    # 128-px HR patches (a 32-px LR patch: the receptive radius is 21 LR px).
    "fast-psnr": TrainConfig(
        preset="fast-psnr", arch="span", channels=48, blocks=6, bn=False, hr_patch=128, steps=30_000,
        warmup_pixel=1.0, warmup_content=0.0, adv=0.0, lr_g=5e-4, lr_milestones=(15_000, 22_000, 26_000, 28_500),
        lr_gamma=0.5, workers=1,
    ),
    # Real photographs (issue 16), two phases on SRResNet-16 without BN (the choice while the
    # fast generator has not reached its PSNR bar), each a fine-tune (--init): `real-psnr` starts from
    # a psnr model (--init models/srresnet_x4.onnx) and learns L1 on LR made per sample by the
    # second-order degradation model (blur, resize, noise, JPEG, twice; trainer.degradations.REAL)
    # from 96-px HR crops; `real` is the srgan preset's perceptual fine-tune on the same degradations
    # (plus the fine-chroma term), started with --init from a real-psnr run. Both share one ancestor,
    # so their weights interpolate (the runtime's --denoise; benchmarks/TRAINING.md has the commands).
    "real-psnr": TrainConfig(
        preset="real-psnr", bn=False, degradation="real", steps=1_000, warmup_pixel=1.0, warmup_content=0.0,
        adv=0.0, lr_g=2e-4, lr_milestones=(600, 850), lr_gamma=0.5, workers=1,
    ),
    # SRCNN 9-1-5 baseline on bicubic-upsampled input, MSE.
    "srcnn": TrainConfig(
        preset="srcnn", arch="srcnn", steps=50_000, pixel_loss="mse", warmup_pixel=1.0, adv=0.0,
        lr_g=1e-4, hr_patch=96, ema_decay=0.0,
    ),
}
# Perceptual phase of the fast generator (--init a fast-psnr checkpoint): the srgan recipe on SPAN,
# plus the fine-chroma term against green/magenta speckle (trainer.losses.chroma_loss). Its weight is
# set by magnitude, not yet by a run: on the facade crops of benchmarks/facade_artifacts.py the
# shipped srgan_x4 has 0.0061 chroma L1 where srresnet_x4 (clean) has 0.0031, so at weight 10 the
# speckle costs ~0.03, ~4x its pixel-L1 excess (0.0066) at the pixel weight of 1.
PRESETS["fast"] = dataclasses.replace(PRESETS["srgan"], preset="fast", arch="span", channels=48, blocks=6,
                                      chroma=10.0)
PRESETS["real"] = dataclasses.replace(PRESETS["srgan"], preset="real", degradation="real", workers=1, chroma=10.0)


def preset(name: str) -> TrainConfig:
    """Return a preset by name. Raises ConfigError naming the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def _coerce(value: Any, current: Any, annotation: str, key: str) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "null") and "None" in annotation:
            return None
        if annotation.startswith("tuple"):
            parts = [p for p in text.replace(" ", "").strip("()[]").split(",") if p]
            kind = float if "float" in annotation else int
            return tuple(kind(p) for p in parts)
        if annotation == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        try:
            if "float" in annotation:
                return float(text)
            if "int" in annotation:
                number = float(text)
                if number != int(number):
                    raise ValueError
                return int(number)
        except ValueError:
            raise ConfigError(f"{key}: cannot read {value!r} as {annotation}") from None
        if annotation == "str":
            return text
        raise ConfigError(f"{key}: cannot read {value!r} as {annotation}")
    if isinstance(value, list):
        return tuple(value)
    return value


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Return a copy of cfg with overrides applied. Strings are parsed by the field's type.

    Raises ConfigError for an unknown key or an unparsable value.
    """
    known = {f.name: f for f in fields(TrainConfig)}
    parsed = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in known:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(sorted(known))}")
        parsed[key] = _coerce(value, getattr(cfg, key), str(known[key].type), key)
    try:
        return dataclasses.replace(cfg, **parsed)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


def save_config(cfg: TrainConfig, path: Path, extra: dict[str, Any] | None = None) -> None:
    data = dataclasses.asdict(cfg)
    if extra:
        data["_resolved"] = extra
    with atomic_write(path) as fh:
        fh.write(json.dumps(data, indent=2, sort_keys=True).encode())


#: Keys that older runs saved but that no longer mean anything (dropped when such a run is read).
RETIRED_KEYS = frozenset({"eval_every"})


def load_config(path: Path) -> TrainConfig:
    """Read a saved config (JSON). Unknown keys are an error, as for overrides; retired ones are dropped.
    Raises ConfigError naming the file if it cannot be read."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a saved config (a JSON object expected)")
    data.pop("_resolved", None)
    return apply_overrides(TrainConfig(), {k: v for k, v in data.items() if k not in RETIRED_KEYS})

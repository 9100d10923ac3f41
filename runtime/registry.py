"""The shipped models: an explicit table (no folder scanning). The CLI's choices come from it.

Model files live in ``models/`` at the project root, or in the folder named by
the ``SRGAN_MODELS_DIR`` environment variable.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ModelNotFoundError, UsageError
from .paths import models_dir

__all__ = ["ModelEntry", "MODELS", "DEFAULT_MODEL", "models_dir", "resolve_model", "LPIPS_MODEL_FILE"]


@dataclass(frozen=True)
class ModelEntry:
    """A shipped model: its file name under ``models/`` and what it is."""

    name: str
    filename: str
    description: str
    #: The registered model that ``--denoise 0`` means (its weights blend with this one's; ``--denoise 1`` is
    #: this model): only for a model made for degraded photos, and the partner is one architecture with it.
    denoise_partner: str | None = None


MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry("srresnet", "srresnet_x4.onnx", "SRResNet-16 x4, L1-trained, PSNR-oriented (psnr preset)"),
        ModelEntry("srgan", "srgan_x4.onnx", "SRGAN x4, perceptual + adversarial fine-tune of SRResNet (default)"),
        ModelEntry("srcnn", "srcnn_x4.onnx", "SRCNN 9-1-5 x4 on bicubic input (classic baseline)"),
        ModelEntry("fast-psnr", "fast_psnr_x4.onnx", "SPAN x4, PSNR-oriented: 1/5 of SRResNet's multiply-adds, 4-8x "
                   "its CPU throughput (Set5 31.01 dB, between srcnn's 29.88 and srresnet's 31.66)"),
        ModelEntry("fast", "fast_x4.onnx", "SPAN x4 with a resize-then-convolve upsampler, perceptual + adversarial "
                   "(fast preset): ~4x srgan's CPU throughput, LPIPS between srgan's and srresnet's"),
        ModelEntry("real", "real_x4.onnx", "SRResNet-16 x4 for JPEG/noisy/blurred photos (early model: removes "
                   "blocks and noise, smooths texture; --denoise 0..1 blends toward srgan)", denoise_partner="srgan"),
    )
}

DEFAULT_MODEL = "srgan"

#: AlexNet LPIPS v0.1 as ONNX, made by ``cli.py export-lpips``.
LPIPS_MODEL_FILE = "lpips_alex.onnx"

_HOW_TO_GET = ("train and export it (cli.py train, then cli.py export), or pass --model PATH "
               "to another x4 ONNX model")


def resolve_model(name_or_path: str | Path, *, denoise: float | None = None) -> Path:
    """Path of a registered model name, or of an ``.onnx`` file given by path.

    ``denoise`` (0..1, only for a model with a ``denoise_partner``): the path of the weight blend
    ``denoise`` x the model + (1 - ``denoise``) x its partner (:func:`runtime.blend.blend_models`, cached).
    Raises :class:`~runtime.errors.ModelNotFoundError` if the name is unknown or
    the file does not exist (the message says how to get it), :class:`~runtime.errors.UsageError` for a
    ``denoise`` the model does not take.
    """
    if denoise is not None:
        return _denoised(str(name_or_path), denoise)
    text = str(name_or_path)
    if text in MODELS:
        path = models_dir() / MODELS[text].filename
        if not path.is_file():
            raise ModelNotFoundError(path, f"model {text!r} is not there yet: {_HOW_TO_GET}")
        return path
    path = Path(text).expanduser()
    if path.suffix.lower() == ".onnx" or path.parent != Path("."):
        if not path.is_file():
            raise ModelNotFoundError(path, "model file not found")
        return path
    raise ModelNotFoundError(path, f"unknown model name; choose one of {', '.join(MODELS)} "
                                   "or give a path to an .onnx file")


def _denoised(name: str, denoise: float) -> Path:
    from .blend import blend_models

    entry = MODELS.get(name)
    takes = [e.name for e in MODELS.values() if e.denoise_partner]
    if entry is None or entry.denoise_partner is None:
        raise UsageError(f"--denoise works with the model(s) {', '.join(takes)} (made for degraded photos), "
                         f"not {name!r}; drop --denoise or use -m {takes[0]}")
    if not 0.0 <= denoise <= 1.0:
        raise UsageError(f"--denoise must be between 0 and 1, got {denoise}")
    return blend_models(resolve_model(name), resolve_model(entry.denoise_partner), denoise)

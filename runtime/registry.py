"""The shipped models: an explicit table (no folder scanning). The CLI's choices come from it.

Model files live in ``models/`` at the project root, or in the folder named by
the ``SRGAN_MODELS_DIR`` environment variable.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ModelNotFoundError
from .paths import models_dir

__all__ = ["ModelEntry", "MODELS", "DEFAULT_MODEL", "models_dir", "resolve_model", "LPIPS_MODEL_FILE"]


@dataclass(frozen=True)
class ModelEntry:
    """A shipped model: its file name under ``models/`` and what it is."""

    name: str
    filename: str
    description: str


MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry("srresnet", "srresnet_x4.onnx", "SRResNet-16 x4, L1-trained, PSNR-oriented (psnr preset)"),
        ModelEntry("srgan", "srgan_x4.onnx", "SRGAN x4, perceptual + adversarial fine-tune of SRResNet (default)"),
        ModelEntry("srcnn", "srcnn_x4.onnx", "SRCNN 9-1-5 x4 on bicubic input (classic baseline)"),
    )
}

DEFAULT_MODEL = "srgan"

#: AlexNet LPIPS v0.1 as ONNX, made by ``cli.py export-lpips``.
LPIPS_MODEL_FILE = "lpips_alex.onnx"

_HOW_TO_GET = ("train and export it (cli.py train, then cli.py export), or pass --model PATH "
               "to another x4 ONNX model")


def resolve_model(name_or_path: str | Path) -> Path:
    """Path of a registered model name, or of an ``.onnx`` file given by path.

    Raises :class:`~runtime.errors.ModelNotFoundError` if the name is unknown or
    the file does not exist; the message says how to get it.
    """
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

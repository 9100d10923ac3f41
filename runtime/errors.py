"""Typed errors a user can cause, each with a message that names the file and the fix.

Every error this package raises on purpose derives from :class:`SRGANError` (this
module is torch-free, so the trainer's and the exporter's errors derive from it too:
``ConfigError``, ``CheckpointError``, ``ExportError``...). Library code raises these;
only the CLI prints them and picks exit codes. Per-file
errors (:class:`ImageError` and its subclasses, :class:`OutputError`) fail one file of
a batch and the rest continue; setup errors (:class:`ModelError`, :class:`DeviceError`,
:class:`UsageError`) stop the run before any file is processed.
"""
from __future__ import annotations

from pathlib import Path

__all__ = [
    "SRGANError",
    "SRError",
    "ImageError",
    "ImageReadError",
    "ImageTooLargeError",
    "OutputError",
    "InputOverwriteError",
    "UnsupportedOutputError",
    "ModelError",
    "ModelNotFoundError",
    "ModelLoadError",
    "ModelRunError",
    "DeviceError",
    "EngineError",
    "UsageError",
]


class SRGANError(Exception):
    """The one base class: an error with a user-facing message (``str(err)``) that names the fix."""


SRError = SRGANError  # the runtime's former name for the base class, still used by callers


class _PathError(SRGANError):
    """An error about one file: the message reads ``<path>: <reason>``."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageError(_PathError):
    """A per-file input problem; the batch goes on with the other files."""


class ImageReadError(ImageError):
    """Raised if a file is not an image, is corrupt or truncated, or has an unsupported mode."""


class ImageTooLargeError(ImageError):
    """Raised if an image has more pixels than ``--max-pixels`` allows."""


class OutputError(_PathError):
    """A per-file output problem; the batch goes on with the other files."""


class InputOverwriteError(OutputError):
    """Raised if an output path is one of the input files (inputs are never written)."""


class UnsupportedOutputError(OutputError):
    """Raised if the output format cannot hold the image (e.g. alpha in JPEG)."""


class ModelError(_PathError):
    """A problem with the model file: the run cannot start."""


class ModelNotFoundError(ModelError):
    """Raised if a model name is unknown or its ``.onnx`` file does not exist."""


class ModelLoadError(ModelError):
    """Raised if onnxruntime cannot load the model or its interface is not an SR model's."""


class ModelRunError(SRGANError):
    """Raised if inference fails or returns an array of the wrong shape."""


class DeviceError(SRGANError):
    """Raised if the requested device (e.g. ``cuda``) is not available to onnxruntime or torch."""


class EngineError(SRGANError):
    """Raised if the requested inference engine or precision cannot be used here (exit code 2)."""


class UsageError(SRGANError):
    """Raised for a bad combination of options or inputs (exit code 2)."""

"""Typed errors a user can cause, each with a message that names the file and the fix.

Library code raises these; only the CLI prints them and picks exit codes. Per-file
errors (:class:`ImageError` and its subclasses, :class:`OutputError`) fail one file of
a batch and the rest continue; setup errors (:class:`ModelError`, :class:`DeviceError`,
:class:`UsageError`) stop the run before any file is processed.
"""
from __future__ import annotations

from pathlib import Path

__all__ = [
    "SRError",
    "ImageError",
    "ImageReadError",
    "ImageTooLargeError",
    "OutputError",
    "OutputExistsError",
    "InputOverwriteError",
    "UnsupportedOutputError",
    "ModelError",
    "ModelNotFoundError",
    "ModelLoadError",
    "ModelRunError",
    "DeviceError",
    "UsageError",
]


class SRError(Exception):
    """Base class: an error with a user-facing message (``str(err)``)."""


class _PathError(SRError):
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


class OutputExistsError(OutputError):
    """Raised if the output file exists and overwriting was not asked for."""


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


class ModelRunError(SRError):
    """Raised if inference fails or returns an array of the wrong shape."""


class DeviceError(SRError):
    """Raised if the requested device (e.g. ``cuda``) is not what onnxruntime uses."""


class UsageError(SRError):
    """Raised for a bad combination of options or inputs (exit code 2)."""

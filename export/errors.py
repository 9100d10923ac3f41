"""Typed errors of the export step, each with a message that says what to do."""
from __future__ import annotations

from typing import Any

from srgan.runtime.errors import SRGANError

__all__ = ["ExportError", "ReceptiveFieldError", "ParityError", "VariantError"]


class ExportError(SRGANError):
    """Base class: a checkpoint could not be turned into a trustworthy ONNX model."""


class ReceptiveFieldError(ExportError):
    """Raised if the measured receptive radius exceeds the one derived from the
    architecture (the tiler would produce seams), or a layer cannot be analysed."""


class ParityError(ExportError):
    """Raised if onnxruntime's output differs from torch's by more than the threshold.

    ``report`` holds the full :class:`~export.parity.ParityReport` so callers can
    show every row, not just the first failure.
    """

    def __init__(self, message: str, report: Any = None):
        super().__init__(message)
        self.report = report


class VariantError(ExportError):
    """Raised if a variant (fp16, int8) is unknown or cannot be built."""

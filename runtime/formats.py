"""Image file formats: names, suffixes and what each can hold. Light (stdlib only), so the CLI
can build its ``--format`` choices without importing numpy or Pillow."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ImageFormat", "FORMATS", "INPUT_SUFFIXES", "format_of"]


@dataclass(frozen=True)
class ImageFormat:
    """``pil``: Pillow's format name; ``suffix``: for new files; ``alpha``/``deep``: can hold
    an alpha channel / 16 bits per channel."""

    pil: str
    suffix: str
    alpha: bool
    deep: bool


#: Output formats by name: the CLI's ``--format`` choices.
FORMATS: dict[str, ImageFormat] = {
    "png": ImageFormat("PNG", ".png", alpha=True, deep=True),
    "jpeg": ImageFormat("JPEG", ".jpg", alpha=False, deep=False),
    "webp": ImageFormat("WEBP", ".webp", alpha=True, deep=False),
    "tiff": ImageFormat("TIFF", ".tif", alpha=True, deep=True),
    "bmp": ImageFormat("BMP", ".bmp", alpha=False, deep=False),  # Pillow reads 32-bit BMP back as RGB
}
_SUFFIX_FORMAT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".webp": "webp",
                  ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp"}
#: File suffixes (lower case) picked up when scanning folders.
INPUT_SUFFIXES = frozenset(_SUFFIX_FORMAT)


def format_of(path: str | Path) -> str | None:
    """Format name (a key of :data:`FORMATS`) for the path's suffix, or None if unknown."""
    return _SUFFIX_FORMAT.get(Path(path).suffix.lower())

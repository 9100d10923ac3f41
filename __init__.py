"""srgan: x4 super-resolution. ``srgan.runtime`` (torch-free upscaling), ``srgan.trainer`` (PyTorch),
``srgan.export`` (checkpoint -> ONNX), ``srgan.cli`` (the ``srgan`` command).

In the repository this file is the project root's ``__init__.py``: pyproject maps the package
``srgan`` to the root and ``srgan.runtime``/``srgan.trainer``/``srgan.export`` to the top-level
folders, so the repository keeps its layout and the installed package has one name.
"""
from __future__ import annotations

from srgan.runtime import __version__

__all__ = ["__version__"]

"""The install extras and what each promises, so a missing one is named with its install command.

The base install (``pip install srgan-toolkit``) is the runtime: no torch. Commands
and functions that need more call :func:`require_extra` first, which raises
:class:`MissingExtraError` (a usage error: the CLI exits 2) with the exact
``pip install`` command instead of a ``ModuleNotFoundError`` traceback.
"""
from __future__ import annotations

import importlib.util

from .errors import UsageError

__all__ = ["DISTRIBUTION", "EXTRAS", "MissingExtraError", "install_command", "missing_modules", "require_extra"]

#: The distribution name on the package index.
DISTRIBUTION = "srgan-toolkit"

#: Extra -> the importable modules it promises (checked by tests/test_package.py).
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "torchvision", "onnx", "lpips", "safetensors"),
    "export": ("torch", "torchvision", "onnx", "lpips", "safetensors"),
    "bench": ("onnx", "matplotlib"),
    "peers": ("cv2",),
    "ray": ("ray",),
    "gpu": ("onnxruntime",),
}


class MissingExtraError(UsageError):
    """Raised if a feature needs an install extra that is not installed; the message holds the command."""


def install_command(extra: str) -> str:
    """The shell command that installs ``extra``, e.g. ``pip install 'srgan-toolkit[train]'``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def _importable(module: str) -> bool:
    """Whether ``module`` can be found, without importing it (an import hook that refuses it counts as no)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (without importing them). KeyError if unknown."""
    return [m for m in EXTRAS[extra] if not _importable(m)]


def require_extra(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingExtraError` if ``modules`` (default: all of ``extra``'s) are not installed.

    ``what`` names the feature in the message, e.g. ``"srgan train"``.
    """
    wanted = EXTRAS[extra] if modules is None else modules
    missing = [m for m in wanted if not _importable(m)]
    if missing:
        raise MissingExtraError(f"{what} needs {', '.join(missing)} from the '{extra}' extra, which is not "
                                f"installed: {install_command(extra)}")

"""Every path the toolkit reads by default, in one place, each with an environment override.

============================  ==========================  ===============================================
what                          environment variable        default
============================  ==========================  ===============================================
shipped models                ``SRGAN_MODELS_DIR``        ``models/`` inside the installed package
shared research data          ``SRGAN_DATA_DIR``          ``<repo>/../shared/data`` in a checkout, else
                                                          ``$XDG_DATA_HOME/srgan/data``
peer models (bench)           ``SRGAN_PEERS_DIR``         ``<repo>/../shared/peers/models`` in a checkout,
                                                          else ``$XDG_DATA_HOME/srgan/peers``
caches (decoded pairs, ...)   ``SRGAN_CACHE_DIR``         ``$XDG_CACHE_HOME/srgan`` (``~/.cache/srgan``)
============================  ==========================  ===============================================

Functions, not constants: the environment is read at each call, so tests and long-lived
programs see changes.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["package_dir", "models_dir", "data_dir", "peers_dir", "cache_dir", "checkout_root"]


def package_dir() -> Path:
    """The ``srgan`` package folder (the repository root in a checkout, ``site-packages/srgan`` installed)."""
    return Path(__file__).resolve().parent.parent


def checkout_root() -> Path | None:
    """The repository root when running from a source checkout (it has ``pyproject.toml``), else None."""
    root = package_dir()
    return root if (root / "pyproject.toml").is_file() else None


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def _shared(sub: str, env: str, xdg_name: str) -> Path:
    value = os.environ.get(env)
    if value:
        return Path(value).expanduser()
    root = checkout_root()
    if root is not None:
        return root.parent / "shared" / sub
    return _xdg("XDG_DATA_HOME", ".local/share") / "srgan" / xdg_name


def models_dir() -> Path:
    """Folder of the shipped model files: ``$SRGAN_MODELS_DIR`` or the package's ``models/``."""
    value = os.environ.get("SRGAN_MODELS_DIR")
    return Path(value).expanduser() if value else package_dir() / "models"


def data_dir() -> Path:
    """Research datasets (Set5, Set14, BSD100, training sets): ``$SRGAN_DATA_DIR`` or the default above."""
    return _shared("data", "SRGAN_DATA_DIR", "data")


def peers_dir() -> Path:
    """Peer model files for ``bench quality --peer``: ``$SRGAN_PEERS_DIR`` or the default above."""
    return _shared("peers/models", "SRGAN_PEERS_DIR", "peers")


def cache_dir() -> Path:
    """Cache folder: ``$SRGAN_CACHE_DIR`` or ``$XDG_CACHE_HOME/srgan``."""
    value = os.environ.get("SRGAN_CACHE_DIR")
    return Path(value).expanduser() if value else _xdg("XDG_CACHE_HOME", ".cache") / "srgan"

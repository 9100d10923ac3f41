"""Small helpers shared by the export modules: atomic writes, sidecar names, data paths."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from srgan.runtime.imageio import atomic_write


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        fh.write(data)
        os.fchmod(fh.fileno(), 0o644)  # mkstemp makes 0600; shipped files are world-readable


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode("utf-8"))


def sidecar(model_path: Path, suffix: str) -> Path:
    """``models/x.onnx`` + ``.parity.json`` -> ``models/x.parity.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + suffix)

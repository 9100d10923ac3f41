"""Shared fixtures: tiny real ONNX models, loaded sessions, sample images, ../shared data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from tiny_models import build_tiny_sr

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

#: A sitecustomize.py that makes torch, torchvision and lpips unimportable: the base install, simulated.
BLOCK_TORCH = '''
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "lpips"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, _Block())
'''


@pytest.fixture
def torchless_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess in which torch cannot be imported (no PYTHONPATH of the parent)."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(shim)
    return env


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with tiny_x4.onnx (metadata), tiny_nometa.onnx, tiny_255.onnx, tiny_bgr.onnx, tiny_b1.onnx."""
    d = tmp_path_factory.mktemp("models")
    build_tiny_sr(d / "tiny_x4.onnx")
    build_tiny_sr(d / "tiny_nometa.onnx", metadata=False)
    build_tiny_sr(d / "tiny_255.onnx", input_range="0-255")
    build_tiny_sr(d / "tiny_bgr.onnx", color_order="BGR")
    build_tiny_sr(d / "tiny_b1.onnx", fixed_batch=True)
    return d


@pytest.fixture(scope="session")
def tiny_path(model_dir: Path) -> Path:
    return model_dir / "tiny_x4.onnx"


@pytest.fixture(scope="session")
def tiny(tiny_path: Path):
    from srgan.runtime.session import load_model

    return load_model(tiny_path, device="cpu", threads=1)


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared next to the project; tests that need its data skip without it."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED}/data is absent (research data is not part of the repo)")
    return SHARED


def photo(h: int, w: int, channels: int = 3, dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    """A smooth-plus-texture test image (H, W, C) of the given dtype, full range used."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [0.5 + 0.35 * np.sin(xx / (3 + i) + yy / (5 + 2 * i)) + 0.1 * rng.random((h, w)) for i in range(channels)]
    img = np.clip(np.stack(planes, axis=2), 0, 1)
    top = np.iinfo(dtype).max
    return np.round(img * top).astype(dtype)

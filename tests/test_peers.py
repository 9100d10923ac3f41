"""Models this project did not make (../shared/peers/models): their input_range metadata is honoured.

UpscalerJS ESRGAN slim takes and returns 0-255 values, thick 0-1 (PROVENANCE.md there).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from srgan.runtime.imageio import read_image
from srgan.runtime.metrics import psnr
from srgan.runtime.pipeline import upscale_image
from srgan.runtime.resize import imresize
from srgan.runtime.session import DEFAULT_PAD, load_model

PEERS = {"slim": 255.0, "thick": 1.0}


def peer(shared: Path, name: str) -> Path:
    path = shared / f"peers/models/upscalerjs-esrgan-{name}-x4.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="module")
def baby(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 40x40 LR crop of Set5 baby and its 160x160 HR crop."""
    lr = read_image(shared / "data/Set5/LR_bicubic_x4/baby.png").pixels[40:80, 40:80]
    hr = read_image(shared / "data/Set5/HR/baby.png").pixels[160:320, 160:320]
    return lr, hr


@pytest.mark.parametrize("name", list(PEERS))
def test_peer_esrgan_honours_input_range(shared: Path, baby, name: str) -> None:
    path = peer(shared, name)
    lr, hr = baby
    model = load_model(path, device="cpu")
    assert (model.input_range, model.scale, model.max_batch) == ({255.0: "0-255", 1.0: "0-1"}[PEERS[name]], 4, 1)
    assert model.receptive_radius == DEFAULT_PAD and not model.radius_known
    sr = upscale_image(lr, model, tile=0)
    # What the model's authors specify: feed values in its range, read values in its range.
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = lr.transpose(2, 0, 1)[None].astype(np.float32) * np.float32(PEERS[name] / 255)
    ref = np.clip(sess.run(None, {"LR": x})[0][0].transpose(1, 2, 0) / PEERS[name], 0, 1)
    assert np.abs(sr.astype(np.float64) - np.floor(ref * 255 + 0.5)).max() <= 1
    wrong = upscale_image(lr, load_model(path, device="cpu", input_range="0-1" if PEERS[name] == 255 else "0-255"),
                          tile=0)
    assert np.abs(wrong.astype(int) - sr).max() > 4  # the control: the range changes the result
    assert psnr(sr, hr, border=4) > psnr(imresize(lr, 4.0), hr, border=4) - 0.5  # a real SR result


def test_peer_tiles_match_whole_image_closely(shared: Path, baby) -> None:
    """No receptive_radius metadata: the conservative pad keeps tiles within 1 level of a whole run."""
    model = load_model(peer(shared, "slim"), device="cpu")
    lr, _ = baby
    diff = np.abs(upscale_image(lr, model, tile=12).astype(int) - upscale_image(lr, model, tile=0))
    assert diff.max() <= 1

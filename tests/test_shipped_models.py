"""Every registered model: the file the registry names is the one its card describes.

A fresh, torch-free evaluation on Set5 must give the Set5 PSNR-Y and LPIPS recorded in the model's
ONNX metadata (``quality``, written by ``cli.py eval --record``) and the receptive radius the tiler
relies on must be there. A wrong file copied into ``models/``, or a card recorded from another
checkpoint, fails here.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from srgan.runtime.api import evaluate, load
from srgan.runtime.registry import MODELS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shipped_model_matches_its_recorded_set5_numbers(name: str, shared: Path) -> None:
    model = load(name, device="cpu", threads=2, precision="fp32")
    assert model.scale == 4 and model.radius_known and model.receptive_radius > 0
    recorded = json.loads(model.metadata["quality"])["Set5"]["model"]
    means = evaluate(model, shared / "data" / "Set5", device="cpu", threads=2).sets[0].means
    assert means["psnr_y"] == pytest.approx(recorded["psnr_y"], abs=0.01)
    assert means["lpips"] == pytest.approx(recorded["lpips"], abs=0.002)

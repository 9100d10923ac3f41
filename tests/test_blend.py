"""Weight blends (runtime/blend.py) and --denoise: exact weights, cached once, typed errors, the CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_models import build_tiny_sr
from typer.testing import CliRunner

from srgan.cli import app
from srgan.runtime.blend import BLEND_KEY, blend_models
from srgan.runtime.errors import ModelLoadError, UsageError
from srgan.runtime.registry import MODELS, resolve_model
from srgan.runtime.session import load_model


@pytest.fixture
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("SRGAN_CACHE_DIR", str(tmp_path / "cache"))
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    build_tiny_sr(a, seed=0)
    build_tiny_sr(b, seed=1)
    return a, b


def _weights(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {w.name: numpy_helper.to_array(w) for w in onnx.load(path).graph.initializer}


def test_blend_weights_are_the_interpolation_and_the_file_is_made_once(pair: tuple[Path, Path]) -> None:
    a, b = pair
    out = blend_models(a, b, 0.25)
    wa, wb, wm = _weights(a), _weights(b), _weights(out)
    assert set(wm) == set(wa) and any(not np.array_equal(wa[k], wb[k]) for k in wa)
    for k in wa:
        np.testing.assert_allclose(wm[k], 0.25 * wa[k] + 0.75 * wb[k], rtol=1e-6, atol=1e-7)
    mtime = out.stat().st_mtime_ns
    assert blend_models(a, b, 0.25) == out and out.stat().st_mtime_ns == mtime  # cached, not rewritten
    assert blend_models(a, b, 1.0) == a and blend_models(a, b, 0.0) == b        # the ends are the models
    m = load_model(out, device="cpu", threads=1)
    assert m.scale == 4 and '"t": 0.25' in m.metadata[BLEND_KEY] and "a.onnx" in m.metadata[BLEND_KEY]


def test_blend_of_a_model_with_itself_computes_the_model(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = pair
    twin = tmp_path / "twin.onnx"
    twin.write_bytes(a.read_bytes())
    x = np.random.default_rng(0).random((1, 3, 20, 24), dtype=np.float32)
    y = load_model(a, device="cpu", threads=1, engine="onnxruntime")(x)
    z = load_model(blend_models(a, twin, 0.5), device="cpu", threads=1, engine="onnxruntime")(x)
    np.testing.assert_allclose(z, y, atol=1e-6)


def test_blend_refuses_other_networks_and_bad_weights(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = pair
    other = tmp_path / "wider.onnx"
    build_tiny_sr(other, hidden=4)
    with pytest.raises(ModelLoadError, match="wider.onnx"):
        blend_models(a, other, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        blend_models(a, a, 1.5)


def test_denoise_is_only_for_models_with_a_partner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert MODELS["real"].denoise_partner == "srgan"
    with pytest.raises(UsageError, match="-m real"):
        resolve_model("srresnet", denoise=0.5)
    with pytest.raises(UsageError, match="between 0 and 1"):
        resolve_model("real", denoise=2.0)
    r = CliRunner().invoke(app, ["upscale", str(tmp_path), "-o", str(tmp_path / "o"), "-m", "srgan",
                                 "--denoise", "0.5"])
    assert r.exit_code == 2 and "--denoise works with" in r.output


def test_cli_denoise_blends_real_with_its_partner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-m real --denoise t through the CLI: the output is the blend's, between the two ends'."""
    from PIL import Image

    models = tmp_path / "models"
    models.mkdir()
    build_tiny_sr(models / MODELS["real"].filename, seed=0)
    build_tiny_sr(models / MODELS["srgan"].filename, seed=1)
    env = {"SRGAN_MODELS_DIR": str(models), "SRGAN_CACHE_DIR": str(tmp_path / "cache")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(src / "x.png")
    outs = {}
    for t in ("0", "0.5", "1"):
        r = CliRunner().invoke(app, ["upscale", str(src), "-o", str(tmp_path / t), "-m", "real", "--denoise", t,
                                     "--engine", "onnxruntime", "--threads", "1", "-q"])
        assert r.exit_code == 0, r.output
        outs[t] = np.asarray(Image.open(tmp_path / t / "x.png"), dtype=np.float64)
    assert outs["0"].shape == (96, 80, 3) and not np.array_equal(outs["0"], outs["1"])
    mid = load_model(resolve_model("real", denoise=0.5), device="cpu", threads=1, engine="onnxruntime")
    assert np.abs(outs["0.5"] - outs["0"]).mean() > 0 and np.abs(outs["0.5"] - outs["1"]).mean() > 0
    assert mid.path.parent == tmp_path / "cache" / "blends"

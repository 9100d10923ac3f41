"""LPIPS as ONNX: export with random trunk weights from a temporary TORCH_HOME, parity with the
lpips package, the torch-free runtime helper, and the shipped file's sanity on Set5."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lpips")

from conftest import ROOT, SHARED, photo  # noqa: E402

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's cache name for AlexNet_Weights.IMAGENET1K_V1


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose cache holds random AlexNet ``features.*`` weights under torchvision's file name."""
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    feats = torchvision.models.alexnet(weights=None).features.state_dict()
    torch.save({f"features.{k}": v for k, v in feats.items()}, home / "hub" / "checkpoints" / ALEXNET_FILE)
    return home


@pytest.fixture(scope="module")
def exported(torch_home, tmp_path_factory) -> Path:
    """models/lpips_alex.onnx made by the CLI from the cached random trunk."""
    from typer.testing import CliRunner

    from srgan.cli import app

    out = tmp_path_factory.mktemp("models") / "lpips_alex.onnx"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(torch_home))
        res = CliRunner().invoke(app, ["export-lpips", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "PASS: max abs" in res.output and "torchvision AlexNet_Weights.IMAGENET1K_V1" in res.output
    return out


@pytest.fixture(scope="module")
def reference(torch_home):
    """The lpips package's model with the same random trunk (the parity reference)."""
    from srgan.trainer.pretrained import load_lpips

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(torch_home))
        model, source = load_lpips()
    return model


def _ref(model, a: np.ndarray, b: np.ndarray) -> float:
    t = [torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32) / 255) for x in (a, b)]
    with torch.no_grad():
        return float(model(t[0], t[1], normalize=True))


def test_parity_report_passed(exported):
    rep = json.loads(exported.with_name("lpips_alex.parity.json").read_text())
    assert rep["parity"]["passed"] and rep["parity"]["max_abs"] < 1e-5
    assert rep["parity"]["threshold"] == 1e-5 and len(rep["parity"]["rows"]) >= 2
    from srgan.export.onnx_export import read_metadata

    meta = read_metadata(exported)
    assert (meta["net"], meta["version"], meta["input_range"], meta["min_side"]) == ("alex", "0.1", "0-1", "31")


def test_runtime_helper_matches_lpips_package(exported, reference):
    from srgan.runtime.lpips import LpipsOnnx

    lp = LpipsOnnx(exported)
    a, b = photo(45, 67, seed=1), photo(45, 67, seed=2)
    assert abs(lp(a, b) - _ref(reference, a, b)) < 1e-5
    assert lp(a, a) == pytest.approx(0.0, abs=1e-7)
    # uint16 and float inputs are scaled by dtype, so the same picture gives the same distance
    a16, b16 = (x.astype(np.uint16) * 257 for x in (a, b))
    assert lp(a16, b16) == pytest.approx(lp(a, b), abs=1e-6)
    assert lp(a / 255.0, b / 255.0) == pytest.approx(lp(a, b), abs=1e-6)
    # gray is compared as RGB with equal channels; the border crop is applied to both images
    g = lp(a[:, :, :1], b[:, :, :1])
    assert g == pytest.approx(_ref(reference, np.repeat(a[:, :, :1], 3, 2), np.repeat(b[:, :, :1], 3, 2)), abs=1e-5)
    crop = LpipsOnnx(exported, border=4)(a, b)
    assert crop == pytest.approx(_ref(reference, a[4:-4, 4:-4], b[4:-4, 4:-4]), abs=1e-5)


def test_runtime_helper_rejects_bad_input(exported):
    from srgan.runtime.lpips import LpipsOnnx

    lp = LpipsOnnx(exported, border=4)
    with pytest.raises(ValueError, match="differ in shape"):
        lp(photo(40, 40), photo(40, 41))
    with pytest.raises(ValueError, match="at least 31x31"):
        lp(photo(38, 60), photo(38, 60))  # 30 rows left after the border


def test_runtime_helper_runs_without_torch(exported):
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "from runtime.lpips import LpipsOnnx\n"
            f"lp = LpipsOnnx({str(exported)!r})\n"
            "x = np.zeros((32, 32, 3), np.uint8)\n"
            "print(lp(x, x + 50) > 0, 'torch' in sys.modules and sys.modules['torch'] is not None)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "False"]


def test_missing_file_is_reported_with_the_fix(tmp_path):
    from srgan.runtime.errors import ModelNotFoundError
    from srgan.runtime.lpips import available_lpips, load_lpips

    with pytest.raises(ModelNotFoundError, match="export-lpips"):
        load_lpips(tmp_path / "lpips_alex.onnx")
    assert available_lpips(tmp_path / "lpips_alex.onnx") is None


def test_missing_weights_name_file_and_folder(tmp_path, monkeypatch):
    from urllib.error import URLError

    import torchvision.models._api as tv_api

    from srgan.export.lpips_onnx import export_lpips
    from srgan.trainer.pretrained import PretrainedWeightsError

    def offline(*args, **kwargs):
        raise URLError("no network in this test")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError) as err:
        export_lpips(tmp_path / "x.onnx")
    msg = str(err.value)
    assert ALEXNET_FILE in msg and str(tmp_path / "empty_home" / "hub" / "checkpoints") in msg
    assert "--lpips-weights FILE" in msg
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        export_lpips(tmp_path / "x.onnx", weights=tmp_path / "nope.safetensors")
    assert not (tmp_path / "x.onnx").exists()


SHIPPED = ROOT / "models" / "lpips_alex.onnx"
REAL_TRUNK = SHARED / "weights" / "alexnet_features_imagenet_torchvision.safetensors"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="models/lpips_alex.onnx not made yet (cli.py export-lpips)")
def test_shipped_lpips_scores_set5_bicubic_like_the_literature(shared):
    from srgan.export.lpips_onnx import set5_bicubic_pairs
    from srgan.runtime.lpips import LpipsOnnx

    pairs = set5_bicubic_pairs(shared / "data" / "Set5")
    lp = LpipsOnnx(SHIPPED)
    scores = [lp(up, hr) for _, up, hr in pairs]
    assert len(scores) == 5
    assert abs(np.mean(scores) - 0.3407) < 0.005  # published bicubic x4 Set5 LPIPS (alex v0.1)
    if REAL_TRUNK.is_file():  # and it is the lpips package with the real trunk, to 1e-5
        from srgan.trainer.pretrained import load_lpips

        model, _ = load_lpips(REAL_TRUNK)
        name, up, hr = pairs[1]
        assert abs(scores[1] - _ref(model, up, hr)) < 1e-5, name


def test_lpips_onnx_is_finite_on_flat_images(tmp_path, monkeypatch):
    """All-zero AlexNet features (as in flat white areas) must give 0, not 0/0 = NaN."""
    import torchvision

    from srgan.export.lpips_onnx import export_lpips
    from srgan.runtime.lpips import LpipsOnnx

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    (tmp_path / "th" / "hub" / "checkpoints").mkdir(parents=True)
    net = torchvision.models.alexnet(weights=None)
    with torch.no_grad():
        for m in net.features:
            if isinstance(m, torch.nn.Conv2d):
                m.bias.fill_(-1e3)  # every ReLU output is 0 for images in [0, 1]
    torch.save(net.state_dict(), tmp_path / "th" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    path = tmp_path / "lpips.onnx"
    export_lpips(path)
    scorer = LpipsOnnx(path)
    black = np.zeros((64, 64, 3), np.uint8)
    half = black.copy()
    half[:, 32:] = 255
    for a, b in ((black, black), (black, half), (half, half)):
        assert scorer.distance(a, b) == 0.0

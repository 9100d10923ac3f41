"""The Python API (srgan.runtime.load / upscale / upscale_files / evaluate) on real sessions and files,
and the README's API examples run verbatim."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, photo
from PIL import Image

from srgan.runtime import evaluate, load, upscale, upscale_files
from srgan.runtime.errors import ModelNotFoundError, UsageError
from srgan.runtime.imageio import read_image, write_image
from srgan.runtime.metrics import psnr
from srgan.runtime.pipeline import upscale_image
from srgan.runtime.resize import imresize
from srgan.runtime.session import SRModel


def test_load_registry_name_and_path(tiny_path: Path) -> None:
    m = load(tiny_path, device="cpu", threads=1)
    assert isinstance(m, SRModel) and m.scale == 4 and m.path == tiny_path
    with pytest.raises(ModelNotFoundError, match="unknown model name"):
        load("no-such-model")
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        load(tiny_path.with_name("missing.onnx"))


def test_upscale_numpy_matches_the_pipeline(tiny: SRModel) -> None:
    img = photo(21, 34)
    out = upscale(img, tiny, tile=0)
    assert out.shape == (84, 136, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, upscale_image(img, tiny, tile=0))
    np.testing.assert_array_equal(upscale(img, tiny, tile=8), out)  # tiling is exact


def test_upscale_numpy_layouts_and_dtypes(tiny: SRModel) -> None:
    rgb8 = photo(12, 10)
    gray = upscale(rgb8[:, :, 0], tiny, tile=0)  # (H, W) in -> (H*4, W*4) out
    assert gray.shape == (48, 40)
    np.testing.assert_array_equal(gray, upscale(rgb8[:, :, :1], tiny, tile=0)[:, :, 0])
    deep = photo(12, 10, dtype=np.uint16)
    out16 = upscale(deep, tiny, tile=0)
    assert out16.dtype == np.uint16 and out16.max() > 255  # 16 bits kept, not squeezed to 8
    f = rgb8.astype(np.float32) / 255
    outf = upscale(f, tiny, tile=0)
    assert outf.dtype == np.float32 and 0.0 <= outf.min() and outf.max() <= 1.0
    np.testing.assert_allclose(outf * 255, upscale(rgb8, tiny, tile=0).astype(np.float32), atol=0.51)
    half = upscale(rgb8, tiny, tile=0, outscale=2)
    assert half.shape == (24, 20, 3)
    with pytest.raises(UsageError, match="expected an"):
        upscale(np.zeros((4, 4, 5), np.uint8), tiny)
    with pytest.raises(UsageError, match="unsupported dtype"):
        upscale(np.zeros((4, 4, 3), np.int32), tiny)
    with pytest.raises(UsageError, match="tile must be"):
        upscale(rgb8, tiny, tile=-1)


def test_upscale_pil_keeps_mode_alpha_and_16_bit(tiny: SRModel) -> None:
    rgba = photo(10, 12, channels=4)
    rgba[:, :, 3] = np.linspace(0, 255, 12, dtype=np.uint8)[None, :]
    out = upscale(Image.fromarray(rgba, "RGBA"), tiny, tile=0)
    assert out.mode == "RGBA" and out.size == (48, 40)
    a = np.asarray(out)
    np.testing.assert_array_equal(a[:, :, :3], upscale_image(rgba[:, :, :3], tiny, tile=0))
    np.testing.assert_array_equal(a[:, :, 3], imresize(rgba[:, :, 3:], 4.0)[:, :, 0])  # alpha: bicubic
    la = upscale(Image.fromarray(rgba[:, :, [0, 3]], "LA"), tiny)
    assert la.mode == "LA"
    g16 = photo(9, 11, channels=1, dtype=np.uint16)[:, :, 0]
    out16 = upscale(Image.fromarray(g16), tiny, tile=0)
    assert out16.mode == "I;16" and out16.size == (44, 36)
    np.testing.assert_array_equal(np.asarray(out16), upscale(g16, tiny, tile=0))
    pal = Image.fromarray(photo(8, 8)).convert("P")
    assert upscale(pal, tiny).mode == "RGB"  # palette -> RGB, as files are read
    icc = Image.new("RGB", (6, 5))
    icc.info["icc_profile"] = b"fake-profile"
    assert upscale(icc, tiny).info["icc_profile"] == b"fake-profile"
    with pytest.raises(UsageError, match="PIL mode 'F'"):
        upscale(Image.new("F", (4, 4)), tiny)


def test_upscale_files_uses_the_loaded_model(tiny: SRModel, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", photo(16, 20, seed=1))
    write_image(src / "b.png", photo(12, 12, channels=4, seed=2))
    (src / "broken.png").write_bytes(b"not a png")
    report = upscale_files(src, tmp_path / "out", tiny, tile=8)
    assert report.counts == {"ok": 2, "skipped": 0, "failed": 1} and report.exit_code == 1
    assert report.model == tiny.path and report.provider == tiny.provider
    got = read_image(tmp_path / "out" / "a.png").pixels
    np.testing.assert_array_equal(got, upscale(photo(16, 20, seed=1), tiny, tile=0))
    assert read_image(tmp_path / "out" / "b.png").pixels.shape == (48, 48, 4)
    again = upscale_files([src / "a.png"], tmp_path / "out", tiny)
    assert again.counts["skipped"] == 1  # existing outputs are kept unless overwrite=True
    with pytest.raises(UsageError, match="unknown option"):
        upscale_files(src, tmp_path / "out", tiny, tiles=8)


@pytest.fixture
def tiny_set(tmp_path: Path) -> Path:
    """A one-image benchmark folder (HR only: LR made with imresize)."""
    d = tmp_path / "Tiny"
    (d / "HR").mkdir(parents=True)
    write_image(d / "HR" / "x.png", photo(48, 40, seed=3))
    return d


def test_evaluate_onnx_model_reports_what_the_metrics_say(tiny: SRModel, tiny_path: Path, tiny_set: Path,
                                                          tmp_path: Path) -> None:
    report = evaluate(tiny, [tiny_set], tmp_path / "ev", lpips=False)
    (s,) = report.sets
    hr = photo(48, 40, seed=3)
    sr = upscale_image(imresize(hr, 0.25), tiny, tile=0)
    assert s.images == 1 and s.means["psnr_y"] == pytest.approx(psnr(sr, hr, border=4, channel="y"),
                                                                    abs=1e-6)
    assert (tmp_path / "ev" / "summary.csv").is_file() and (tmp_path / "ev" / "Tiny.csv").is_file()
    by_path = evaluate(str(tiny_path), tiny_set, lpips=False, device="cpu")
    assert by_path.sets[0].means["psnr_y"] == pytest.approx(s.means["psnr_y"], abs=1e-9)
    assert report.to_dict()["sets"][0]["set"] == "Tiny"


def test_evaluate_without_torch(tiny_path: Path, tiny_set: Path, tmp_path: Path,
                                torchless_env: dict[str, str]) -> None:
    """ONNX evaluation needs no torch; a .pt checkpoint names the extra to install."""
    env = torchless_env
    code = ("import sys\nfrom srgan.runtime import evaluate\nfrom srgan.runtime.extras import MissingExtraError\n"
            f"r = evaluate({str(tiny_path)!r}, [{str(tiny_set)!r}], lpips=False, device='cpu')\n"
            "print(round(r.sets[0].means['psnr_y'], 3))\n"
            "try:\n    evaluate('run/generator.pt', [" + repr(str(tiny_set)) + "])\n"
            "except MissingExtraError as e:\n    print(e)\n"
            "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    score, message = r.stdout.splitlines()[:2]
    assert float(score) > 10
    assert "pip install 'srgan-toolkit[train]'" in message


def _readme_api_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_api_examples_run(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python block of the README's "Python API" section, verbatim, in order, in one namespace."""
    blocks = _readme_api_blocks()
    assert len(blocks) >= 4 and any("upscale_files(" in b for b in blocks) and any("evaluate(" in b for b in blocks)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SRGAN_DATA_DIR", str(shared / "data"))
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert sorted(p.name for p in (tmp_path / "out" / "set5").iterdir() if not p.name.startswith(".")) == \
        ["baby.png", "bird.png", "butterfly.png", "head.png", "woman.png"]

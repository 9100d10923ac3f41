"""runtime.ensemble: the x8 geometric self-ensemble, on a real onnxruntime model and through the CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import ROOT, photo
from typer.testing import CliRunner

from srgan import cli
from srgan.runtime.ensemble import TRANSFORMS, SelfEnsemble, _forward
from srgan.runtime.imageio import read_image, write_image
from srgan.runtime.metrics import psnr
from srgan.runtime.pipeline import upscale_image


def test_ensemble_is_equivariant_and_not_the_plain_model(tiny) -> None:
    """The mean over the dihedral group commutes with every flip/rotation (H != W, so a missed
    inverse turn fails on shape or values); the random tiny net itself does not."""
    x = np.random.default_rng(0).random((2, 3, 13, 17), dtype=np.float32)
    ens = SelfEnsemble(tiny)
    y = ens(x)
    assert y.shape == (2, 3, 52, 68) and y.dtype == np.float32
    assert np.abs(y - tiny(x)).max() > 1e-3
    for k, flip in TRANSFORMS:
        np.testing.assert_allclose(ens(np.ascontiguousarray(_forward(x, k, flip))), _forward(y, k, flip),
                                   atol=2e-6, err_msg=f"turns {k}, flip {flip}")
    assert ens.scale == tiny.scale and ens.receptive_radius == tiny.receptive_radius


def test_an_equivariant_model_is_unchanged() -> None:
    """Nearest-neighbour x4 is already symmetric: the ensemble must return it (a mean, not a sum)."""
    def nearest(x: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(x, 4, axis=2), 4, axis=3)

    x = np.random.default_rng(1).random((1, 3, 5, 9), dtype=np.float32)
    np.testing.assert_allclose(SelfEnsemble(nearest)(x), nearest(x), atol=1e-6)


def test_tiled_ensemble_equals_whole_image(tiny) -> None:
    img = photo(37, 29)
    ens = SelfEnsemble(tiny)
    np.testing.assert_array_equal(upscale_image(img, ens, tile=10), upscale_image(img, ens, tile=0))


def test_ensemble_raises_psnr_of_the_shipped_srcnn(shared: Path) -> None:
    """A real trained model on a real Set5 image: the averaged prediction is closer to the HR."""
    from srgan.runtime.session import load_model

    model = load_model(ROOT / "models" / "srcnn_x4.onnx", device="cpu", threads=1)
    lr = read_image(shared / "data" / "Set5" / "LR_bicubic_x4" / "butterfly.png").pixels
    hr = read_image(shared / "data" / "Set5" / "HR" / "butterfly.png").pixels
    plain, ens = upscale_image(lr, model, tile=0), upscale_image(lr, SelfEnsemble(model), tile=0)
    assert psnr(ens, hr, border=4) > psnr(plain, hr, border=4) + 0.05  # Y, border 4: as the benchmarks


def test_cli_upscale_ensemble_and_eval_refuses_to_record_it(tiny_path: Path, tiny, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    img = photo(21, 18)
    write_image(tmp_path / "in" / "a.png", img)
    runner = CliRunner()
    for out, extra in (("ens", ["--ensemble"]), ("plain", [])):
        r = runner.invoke(cli.app, ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / out), "-m", str(tiny_path),
                                    "--tile", "8", *extra])
        assert r.exit_code == 0, r.output
    got = read_image(tmp_path / "ens" / "a.png").pixels
    np.testing.assert_array_equal(got, upscale_image(img, SelfEnsemble(tiny), tile=0))
    assert not np.array_equal(got, read_image(tmp_path / "plain" / "a.png").pixels)
    r = runner.invoke(cli.app, ["eval", str(tiny_path), "--data", str(tmp_path / "in"), "-o", str(tmp_path / "e"),
                                "--record", "--ensemble"])
    assert r.exit_code == 2 and "drop --ensemble" in r.output

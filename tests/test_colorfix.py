"""runtime.colorfix: the colour fix, as arithmetic, on real models and Set5 images, tiled, and through the CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, photo
from typer.testing import CliRunner

from srgan import cli
from srgan.runtime.colorfix import ColorFix, color_fix, fix_radius
from srgan.runtime.ensemble import SelfEnsemble
from srgan.runtime.imageio import read_image, write_image
from srgan.runtime.metrics import color_shift, psnr
from srgan.runtime.pipeline import upscale_image, wrap_model


def _nearest(x: np.ndarray, s: int = 4) -> np.ndarray:
    return np.repeat(np.repeat(x, s, axis=2), s, axis=3)


def test_fix_removes_a_cast_and_keeps_detail() -> None:
    """An output whose block means are the input's plus a cast, with detail that averages to zero in every
    block: the fix takes the cast away and leaves the detail and everything else exactly as it was."""
    rng = np.random.default_rng(0)
    lr = rng.random((2, 3, 23, 31), dtype=np.float32)
    detail = rng.standard_normal((2, 3, 92, 124)).astype(np.float32) * 0.1
    detail -= _nearest(detail.reshape(2, 3, 23, 4, 31, 4).mean(axis=(3, 5)))  # zero mean in each 4x4 block
    cast = np.array([0.02, -0.03, 0.05], np.float32)[None, :, None, None]
    np.testing.assert_allclose(color_fix(lr, _nearest(lr) + detail + cast, 4), _nearest(lr) + detail, atol=2e-6)
    np.testing.assert_allclose(color_fix(lr, _nearest(lr) + detail, 4), _nearest(lr) + detail, atol=2e-6)
    with pytest.raises(ValueError, match="is not the input"):
        color_fix(lr, _nearest(lr)[:, :, :-4], 4)


def test_fix_reads_only_its_radius() -> None:
    """A change of the input at one LR pixel moves the output within fix_radius() LR pixels of it, and
    reaches that far (the radius is tight: the tiler's pad is not wasted)."""
    rng = np.random.default_rng(1)
    lr = rng.random((1, 3, 40, 40), dtype=np.float32)
    sr = _nearest(lr) + rng.standard_normal((1, 3, 160, 160)).astype(np.float32) * 0.05
    moved = lr.copy()
    moved[0, :, 20, 20] += 0.5
    changed = np.abs(color_fix(moved, sr, 4) - color_fix(lr, sr, 4)).max(axis=(0, 1)) > 0
    rows, cols = np.nonzero(changed)
    r = fix_radius()
    assert rows.min() // 4 == 20 - r and rows.max() // 4 == 20 + r
    assert cols.min() // 4 == 20 - r and cols.max() // 4 == 20 + r


def test_tiled_fix_equals_whole_image_on_a_real_model(shared: Path) -> None:
    """The shipped fast model (a real onnxruntime session) with the fix, tiled at 24 LR px and whole:
    equal to the byte, and the wrapper's radius is the model's plus the fix's."""
    from srgan.runtime.session import load_model

    model = load_model(ROOT / "models" / "fast_x4.onnx", device="cpu", threads=1, engine="onnxruntime")
    fixed = ColorFix(model)
    assert fixed.receptive_radius == model.receptive_radius + fix_radius() and fixed.scale == 4
    lr = read_image(shared / "data" / "Set5" / "LR_bicubic_x4" / "bird.png").pixels[:61, :53]
    whole = upscale_image(lr, fixed, tile=0)
    np.testing.assert_array_equal(upscale_image(lr, fixed, tile=24), whole)
    assert not np.array_equal(whole, upscale_image(lr, model, tile=0))


def test_fix_takes_the_cast_of_the_real_model_away_on_set5(shared: Path) -> None:
    """real_x4 (trained for degraded photos) shifts a channel mean of the Set5 butterfly by ~-0.7 levels (the first
    real model, before --degradation real-mix: ~-8; before real-orders: ~-2; before rfast: ~-1.3); the fix takes at
    least three quarters of the shift away (measured: to ~-0.08), and PSNR-Y does not fall."""
    from srgan.runtime.session import load_model

    model = load_model(ROOT / "models" / "real_x4.onnx", device="cpu", threads=2, engine="onnxruntime")
    lr = read_image(shared / "data" / "Set5" / "LR_bicubic_x4" / "butterfly.png").pixels
    hr = read_image(shared / "data" / "Set5" / "HR" / "butterfly.png").pixels
    plain, fixed = upscale_image(lr, model, tile=0), upscale_image(lr, ColorFix(model), tile=0)
    shift = color_shift(plain, hr)
    assert shift < -0.5
    assert abs(color_shift(fixed, hr)) < abs(shift) / 4
    assert psnr(fixed, hr, border=4) >= psnr(plain, hr, border=4)


def test_wrap_model_order(tiny) -> None:
    """The ensemble runs inside, the fix outside (once, on the ensemble's mean)."""
    both = wrap_model(tiny, ensemble=True, color_fix=True)
    assert isinstance(both, ColorFix) and isinstance(both.model, SelfEnsemble)
    assert wrap_model(tiny) is tiny


def test_cli_upscale_color_fix_and_eval_refuses_to_record_it(tiny_path: Path, tiny, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    img = photo(21, 18)
    write_image(tmp_path / "in" / "a.png", img)
    runner = CliRunner()
    r = runner.invoke(cli.app, ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "fix"), "-m", str(tiny_path),
                                "--tile", "8", "--color-fix"])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(read_image(tmp_path / "fix" / "a.png").pixels,
                                  upscale_image(img, ColorFix(tiny), tile=0))
    r = runner.invoke(cli.app, ["eval", str(tiny_path), "--data", str(tmp_path / "in"), "-o", str(tmp_path / "e"),
                                "--record", "--color-fix"])
    assert r.exit_code == 2 and "--color-fix" in r.output

"""Metric facts (SR-literature conventions) and agreement with scikit-image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import photo
from skimage.metrics import structural_similarity

from srgan.runtime.imageio import read_image
from srgan.runtime.metrics import color_shift, lattice_ratio, psnr, ssim, to_y
from srgan.runtime.resize import imresize


def test_mse_one_on_y_is_48_1308_db() -> None:
    gray = photo(20, 30, channels=1)
    a = np.repeat(gray, 3, axis=2).astype(np.float64) / 255
    # Adding d to R, G and B moves Y by d * (65.481 + 128.553 + 24.966) / 255 = d * 219 / 255.
    b = a + (255 / 219) / 255
    assert np.isclose(np.mean((to_y(a) - to_y(b)) ** 2), 1.0)
    assert psnr(a, b) == pytest.approx(48.1308036, abs=1e-6)


def test_gray_images_compare_on_gray_values() -> None:
    a = photo(16, 16, channels=1).astype(np.int16)
    b = (a + np.where(np.arange(16) % 2 == 0, 1, -1)[None, :, None]).clip(0, 255).astype(np.uint8)
    a = a.astype(np.uint8)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / np.mean((a.astype(float) - b) ** 2)))
    assert psnr(a[:, :, 0], b[:, :, 0]) == psnr(a, b)


def test_identical_is_inf_and_ssim_one() -> None:
    a = photo(24, 24)
    assert psnr(a, a) == float("inf")
    assert ssim(a, a) == pytest.approx(1.0)


def test_border_is_cropped() -> None:
    a = photo(32, 32)
    b = a.copy()
    b[:4] = 0
    b[:, -4:] = 255
    assert psnr(a, b, border=4) == float("inf")
    assert psnr(a, b, border=3) < 40


def test_data_range_by_dtype_not_values() -> None:
    a8 = photo(16, 16)
    a16 = a8.astype(np.uint16) * 257  # same picture, 16-bit
    af = a8.astype(np.float64) / 255
    b8 = np.clip(a8.astype(int) + 3, 0, 255).astype(np.uint8)
    assert psnr(a16, b8) == pytest.approx(psnr(a8, b8), abs=1e-9)
    assert psnr(af, b8) == pytest.approx(psnr(a8, b8), abs=1e-6)
    dark = (a8 // 16).astype(np.uint16)  # small values stay 16-bit: nearly black
    assert psnr(dark, a8) < 15


def test_rgb_psnr_is_over_all_channels() -> None:
    a = photo(10, 10)
    b = a.copy()
    b[..., 0] = np.clip(b[..., 0].astype(int) + 3, 0, 255)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert psnr(a, b, channel="rgb") == pytest.approx(10 * np.log10(255 ** 2 / mse))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_skimage_on_y(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = photo(61, 47, seed=seed)
    b = np.clip(a.astype(int) + rng.integers(-25, 25, a.shape), 0, 255).astype(np.uint8)
    ya, yb = to_y(a)[4:-4, 4:-4], to_y(b)[4:-4, 4:-4]
    ref = structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=255)
    assert ssim(a, b, border=4) == pytest.approx(ref, abs=1e-6)
    assert 0.3 < ref < 0.99


def test_shape_mismatch_and_tiny_images_raise() -> None:
    with pytest.raises(ValueError, match="differ"):
        psnr(photo(8, 8), photo(8, 9))
    with pytest.raises(ValueError, match="11x11"):
        ssim(photo(12, 12), photo(12, 12), border=2)


def _pairs(shared: Path, name: str):
    for hr_path in sorted((shared / "data" / name / "HR").glob("*.png")):
        lr = read_image(shared / "data" / name / "LR_bicubic_x4" / hr_path.name).pixels
        hr = read_image(hr_path).pixels[: lr.shape[0] * 4, : lr.shape[1] * 4]
        yield lr, hr


@pytest.mark.parametrize("name, db, ssim_ref", [("Set5", 28.42, 0.8104), ("Set14", 26.00, 0.7027)])
def test_bicubic_baseline_reproduces_published_numbers(shared: Path, name: str, db: float, ssim_ref: float) -> None:
    """Y-PSNR/SSIM of MATLAB bicubic x4 (SRGAN paper, Table 2): conventions end to end."""
    scores = [(psnr(imresize(lr, 4.0), hr, border=4), ssim(imresize(lr, 4.0), hr, border=4))
              for lr, hr in _pairs(shared, name)]
    assert np.mean([p for p, _ in scores]) == pytest.approx(db, abs=0.03)
    assert np.mean([s for _, s in scores]) == pytest.approx(ssim_ref, abs=0.005)


def test_lattice_ratio_flags_a_checkerboard_on_a_real_photo(shared: Path) -> None:
    """A +-2-level pattern of period 4 on Set5 butterfly multiplies the lattice power many times; the
    photo against itself is 1; bicubic x4 (no energy at the lattice) is far below 1."""
    lr, hr = next((lr, hr) for lr, hr in _pairs(shared, "Set5"))
    pattern = np.where((np.arange(hr.shape[0])[:, None] % 4 < 2) ^ (np.arange(hr.shape[1])[None, :] % 4 < 2), 2, -2)
    marked = np.clip(hr.astype(np.int16) + pattern[:, :, None], 0, 255).astype(np.uint8)
    assert lattice_ratio(hr, hr, 4) == pytest.approx(1.0)
    assert lattice_ratio(marked, hr, 4) > 10
    assert lattice_ratio(imresize(lr, 4.0), hr, 4) < 0.1
    with pytest.raises(ValueError, match="shape"):
        lattice_ratio(hr[:-4], hr, 4)


def test_color_shift_is_the_largest_channel_mean_difference() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(20, 200, (32, 32, 3), dtype=np.uint8)
    tinted = img.copy()
    tinted[:, :, 2] += 5
    tinted[:, :, 0] += 2
    assert color_shift(tinted, img) == pytest.approx(5.0)
    assert color_shift(img, tinted) == pytest.approx(-5.0)
    gray = img[:, :, :1]
    assert color_shift(np.repeat(gray, 3, axis=2), gray) == pytest.approx(to_y(np.repeat(gray, 3, axis=2)).mean()
                                                                        - gray.mean())

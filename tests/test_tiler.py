"""Tiling is exact: tiled output == whole-image output, for any size, tile, pad >= radius, batch."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import photo
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import RADIUS

from srgan.runtime.errors import ModelRunError
from srgan.runtime.tiler import auto_batch, fit_tile, plan_tiles, upscale_rows, upscale_tiled


def box_net(radius: int, scale: int):
    """Fake network: zero-padded (2r+1)^2 mean, squared, nearest x``scale``. Receptive radius = r."""
    def infer(x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        p = np.pad(x, ((0, 0), (0, 0), (radius, radius), (radius, radius)))
        k = 2 * radius + 1
        acc = sum(p[:, :, i:i + h, j:j + w] for i in range(k) for j in range(k)) / k ** 2
        return np.repeat(np.repeat(acc ** 2, scale, axis=2), scale, axis=3).astype(np.float32)
    return infer


def whole(img: np.ndarray, infer, scale: int) -> np.ndarray:
    x = img.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return np.clip(infer(x)[0].transpose(1, 2, 0), 0, 1)


@given(h=st.integers(1, 40), w=st.integers(1, 40), tile=st.integers(0, 30), pad=st.integers(0, 8))
def test_plan_covers_each_pixel_once_with_clipped_context(h: int, w: int, tile: int, pad: int) -> None:
    cover = np.zeros((h, w), int)
    for t in plan_tiles(h, w, tile, pad):
        y0, y1, x0, x1 = t.core
        cover[y0:y1, x0:x1] += 1
        if tile:
            assert y1 - y0 <= tile and x1 - x0 <= tile
        assert t.ctx == (max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad)) or tile == 0
    assert (cover == 1).all()


def test_plan_has_no_thin_leftover_strip() -> None:
    sides = {t.core[1] - t.core[0] for t in plan_tiles(257, 10, 256, 4)}
    assert sides == {128, 129}


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 37), w=st.integers(1, 37), tile=st.integers(0, 20), extra=st.integers(0, 3),
       batch=st.integers(1, 5))
def test_tiled_equals_whole_fake_net(h: int, w: int, tile: int, extra: int, batch: int) -> None:
    r, s = 3, 2
    img = photo(h, w)
    infer = box_net(r, s)
    out = upscale_tiled(img, infer, s, tile=tile, pad=r + extra, batch=batch)
    assert out.dtype == np.float32 and out.shape == (h * s, w * s, 3)
    assert np.abs(out - whole(img, infer, s)).max() < 1e-5


def test_pad_below_radius_makes_seams() -> None:
    """The control: the equality above is not trivially true."""
    img = photo(40, 40)
    infer = box_net(3, 2)
    out = upscale_tiled(img, infer, 2, tile=10, pad=2)
    assert np.abs(out - whole(img, infer, 2)).max() > 1e-3


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 45), w=st.integers(1, 45), tile=st.integers(0, 24), batch=st.integers(1, 4))
def test_tiled_equals_whole_onnx(tiny, h: int, w: int, tile: int, batch: int) -> None:
    img = photo(h, w, seed=h * 100 + w)
    out = upscale_tiled(img, tiny, tiny.scale, tile=tile, pad=tiny.receptive_radius, batch=batch)
    assert np.abs(out - whole(img, tiny, tiny.scale)).max() < 1e-5


@pytest.mark.parametrize("shape", [(1, 1), (1, 57), (57, 1), (3, 200), (9, 9)])
def test_strips_and_images_smaller_than_a_tile(tiny, shape: tuple[int, int]) -> None:
    img = photo(*shape)
    out = upscale_tiled(img, tiny, 4, tile=16, pad=RADIUS, batch=3)
    assert np.abs(out - whole(img, tiny, 4)).max() < 1e-5


def test_uint8_output_is_the_rounded_whole_result_and_progress_counts_pixels(tiny) -> None:
    img = photo(30, 41)
    done: list[int] = []
    out = upscale_tiled(img, tiny, 4, tile=8, pad=RADIUS, batch=4, out=np.empty((120, 164, 3), np.uint8),
                        progress=done.append)
    ref = np.floor(whole(img, tiny, 4) * 255 + 0.5)
    assert np.abs(out.astype(int) - ref).max() <= 1  # float32 rounding at .5 boundaries only
    assert (out.astype(int) == ref).mean() > 0.999
    assert sum(done) == 30 * 41
    assert len(done) < len(plan_tiles(30, 41, 8, RADIUS))  # batched: fewer calls than tiles


def test_uint16_input_and_output(tiny) -> None:
    img = photo(12, 10, dtype=np.uint16)
    out = upscale_tiled(img, tiny, 4, tile=5, pad=RADIUS, out=np.empty((48, 40, 3), np.uint16))
    x = img.transpose(2, 0, 1)[None].astype(np.float32) / 65535
    ref = np.floor(np.clip(tiny(x)[0].transpose(1, 2, 0), 0, 1) * 65535 + 0.5)
    assert np.abs(out.astype(np.int64) - ref).max() <= 1


def test_wrong_output_shape_is_a_typed_error() -> None:
    with pytest.raises(ModelRunError, match="expected"):
        upscale_tiled(photo(8, 8), box_net(1, 2), 4, tile=0, pad=1)


def test_auto_batch() -> None:
    assert auto_batch(100 * 100, 1 << 16) == 6
    assert auto_batch(300 * 300, 1 << 16) == 1
    assert auto_batch(10, 1 << 16, limit=1) == 1


def test_rows_come_top_to_bottom_one_band_per_row_of_tiles() -> None:
    img = photo(45, 31)
    infer = box_net(2, 3)
    bands = list(upscale_rows(img, infer, 3, tile=10, pad=2, batch=2, dtype=np.uint8))
    heights = [b.shape[0] for b in bands]
    assert heights == [(y1 - y0) * 3 for y0, y1 in sorted({t.core[:2] for t in plan_tiles(45, 31, 10, 2)})]
    assert all(b.shape[1:] == (93, 3) and b.dtype == np.uint8 for b in bands)
    whole_out = upscale_tiled(img, infer, 3, tile=10, pad=2, batch=2, out=np.empty((135, 93, 3), np.uint8))
    np.testing.assert_array_equal(np.concatenate(bands), whole_out)


def test_fit_tile_is_the_largest_tile_within_the_budget() -> None:
    budget, bpp, pad = 512 << 20, 12_000, 40
    t = fit_tile(256, pad, bpp, budget)
    assert (t + 2 * pad) ** 2 * bpp <= budget < (t + 1 + 2 * pad) ** 2 * bpp
    assert fit_tile(64, pad, bpp, budget) == 64          # already fits
    assert fit_tile(0, pad, bpp, budget) == 0            # whole image: the user's explicit choice
    assert fit_tile(256, pad, bpp, None) == 256          # no budget
    assert fit_tile(256, pad, 0, budget) == 256          # no host-memory figure (e.g. CUDA)
    assert fit_tile(256, pad, bpp, 1 << 20) == 16        # always some progress

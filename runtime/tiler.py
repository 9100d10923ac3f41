"""Exact tiled inference in pure numpy; knows nothing of onnxruntime.

The image is cut into a grid of *core* regions of at most ``tile`` x ``tile`` LR
pixels. Each core is grown by ``pad`` real image pixels on every side, clipped at
the image border (never padded with made-up pixels), and that *context* region
is what the network sees. A tile at the image border therefore ends at the
border, so the network's own zero padding acts exactly as in a whole-image run,
and with ``pad`` >= the network's receptive radius every output pixel of the core
equals the whole-image output (up to float32 rounding). Only the core's
``scale``-times-larger output is kept, converted to the output dtype and put
into the band of output rows for its row of tiles; bands are yielded top to
bottom, so a caller can write each and drop it and memory is set by the tile
size, not the image size (:func:`fit_tile` picks a tile for a memory budget).
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import ModelRunError

__all__ = ["Tile", "plan_tiles", "upscale_rows", "upscale_tiled", "auto_batch", "fit_tile", "fill_rows", "Infer"]

#: ``infer(x)``: float32 NCHW (N, C, h, w) in [0, 1] -> float32 (N, C, h*scale, w*scale).
Infer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Tile:
    """One tile, in LR pixel coordinates, each box ``(y0, y1, x0, x1)`` half-open.

    ``core`` is the region whose upscaled output this tile writes; ``ctx`` is the
    region fed to the network: ``core`` grown by ``pad`` and clipped to the image.
    """

    core: tuple[int, int, int, int]
    ctx: tuple[int, int, int, int]


def _splits(length: int, tile: int) -> list[tuple[int, int]]:
    """Split ``range(length)`` into ceil(length / tile) near-equal parts (no thin last strip)."""
    n = max(1, math.ceil(length / tile))
    edges = [round(i * length / n) for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n)]


def plan_tiles(height: int, width: int, tile: int, pad: int) -> list[Tile]:
    """Tiles covering an ``height`` x ``width`` image exactly once.

    ``tile`` is the largest core side in LR pixels (0 = one tile for the whole
    image); ``pad`` the context in LR pixels on each side. Cores are near-equal,
    so no tile is a thin leftover strip.

    Raises ValueError if a size is not positive or ``tile``/``pad`` is negative.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if tile < 0 or pad < 0:
        raise ValueError(f"tile and pad must be >= 0, got tile={tile}, pad={pad}")
    if tile == 0:
        return [Tile((0, height, 0, width), (0, height, 0, width))]
    tiles = []
    for y0, y1 in _splits(height, tile):
        for x0, x1 in _splits(width, tile):
            ctx = (max(0, y0 - pad), min(height, y1 + pad), max(0, x0 - pad), min(width, x1 + pad))
            tiles.append(Tile((y0, y1, x0, x1), ctx))
    return tiles


def auto_batch(ctx_pixels: int, budget_pixels: int, limit: int | None = None) -> int:
    """How many context tiles of ``ctx_pixels`` LR pixels to run per inference call.

    As many as fit ``budget_pixels`` (at least 1), capped by ``limit`` (a model
    with a fixed batch dimension of 1 gives ``limit=1``).
    """
    n = max(1, budget_pixels // max(1, ctx_pixels))
    return min(n, limit) if limit else n


def _input_scale(dtype: np.dtype) -> float:
    """Divisor that maps the dtype's full range onto [0, 1]; float input is taken as [0, 1]."""
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise TypeError(f"unsupported image dtype {dtype}; use uint8, uint16 or float in [0, 1]")


def _to_output(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Clamp float32 ``block`` to [0, 1] in place and convert to ``dtype`` (integers rounded half up)."""
    np.clip(block, 0.0, 1.0, out=block)
    if np.issubdtype(dtype, np.floating):
        return block
    block *= np.float32(_input_scale(dtype))
    block += np.float32(0.5)
    return block.astype(dtype)


def fit_tile(tile: int, pad: int, bytes_per_pixel: int, budget: int | None) -> int:
    """The largest tile side <= ``tile`` whose context, ``(t + 2 pad)^2`` LR pixels at
    ``bytes_per_pixel`` each, fits ``budget`` bytes (at least 16, so progress is always made).

    ``tile`` 0 (whole image), ``budget`` None or ``bytes_per_pixel`` 0 mean no cap:
    ``tile`` comes back unchanged. Tiling is exact, so a smaller tile changes
    speed and memory, never the result.
    """
    if tile == 0 or budget is None or bytes_per_pixel <= 0:
        return tile
    side = math.isqrt(max(0, budget // bytes_per_pixel))
    return max(16, min(tile, side - 2 * pad))


def upscale_rows(
    img: np.ndarray,
    infer: Infer,
    scale: int,
    *,
    tile: int,
    pad: int,
    batch: int = 1,
    dtype: np.dtype | type = np.float32,
    progress: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Upscale ``img`` by ``scale`` through ``infer`` one row of tiles at a time.

    Yields, top to bottom, output row bands of shape (rows * scale, W * scale, C)
    and dtype ``dtype`` (uint8, uint16 or float) that together make the whole
    result, so a caller can write each band and drop it: memory is set by the
    tile, not the image. ``img``: (H, W, C) uint8, uint16 or float (taken as
    [0, 1]); converted to float32 [0, 1] one call at a time. ``infer``: see
    :data:`Infer`. Values are clamped to [0, 1] (integers: the dtype's full range,
    rounded). Tiles of a row whose context has the same shape are stacked,
    ``batch`` at a time, into one call. An ``infer`` with an ``upscale_region(x, box)``
    method (:meth:`runtime.session.SRModel.upscale_region`) is asked only for the
    cores' bounding box within the context. ``progress`` is called after each call
    with the number of LR pixels finished.

    Raises ValueError for bad shapes and :class:`~runtime.errors.ModelRunError`
    if ``infer`` returns the wrong shape.
    """
    if img.ndim != 3:
        raise ValueError(f"img must be (H, W, C), got shape {img.shape}")
    if batch < 1 or scale < 1:
        raise ValueError(f"batch and scale must be >= 1, got batch={batch}, scale={scale}")
    h, w, c = img.shape
    dtype = np.dtype(dtype)
    divisor = _input_scale(img.dtype)
    _input_scale(dtype)  # validates the output dtype before any work
    rows: dict[int, list[Tile]] = defaultdict(list)
    for t in plan_tiles(h, w, tile, pad):
        rows[t.core[0]].append(t)
    for row in rows.values():
        ry0, ry1 = row[0].core[:2]
        band = np.empty(((ry1 - ry0) * scale, w * scale, c), dtype)
        groups: dict[tuple[int, int], list[Tile]] = defaultdict(list)
        for t in row:
            groups[(t.ctx[1] - t.ctx[0], t.ctx[3] - t.ctx[2])].append(t)
        for (ch, cw), group in groups.items():
            for i in range(0, len(group), batch):
                chunk = group[i:i + batch]
                x = np.stack([img[t.ctx[0]:t.ctx[1], t.ctx[2]:t.ctx[3]] for t in chunk])
                x = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
                if divisor != 1.0:
                    x *= np.float32(1.0 / divisor)
                # The cores' bounding box within the context: a model that can skip the rest (a split
                # model's tail) computes only that; any other model computes all and the box is cut out.
                by0 = min(t.core[0] - t.ctx[0] for t in chunk)
                by1 = max(t.core[1] - t.ctx[0] for t in chunk)
                bx0 = min(t.core[2] - t.ctx[2] for t in chunk)
                bx1 = max(t.core[3] - t.ctx[2] for t in chunk)
                region = getattr(infer, "upscale_region", None)
                if region is not None:
                    y = np.asarray(region(x, (by0, by1, bx0, bx1)), dtype=np.float32)
                    expected = (len(chunk), c, (by1 - by0) * scale, (bx1 - bx0) * scale)
                else:
                    y = np.asarray(infer(x), dtype=np.float32)
                    expected, by0, bx0 = (len(chunk), c, ch * scale, cw * scale), 0, 0
                if y.shape != expected:
                    raise ModelRunError(f"the model returned shape {y.shape} for input {x.shape}; "
                                        f"expected {expected} (scale {scale})")
                done = 0
                for t, yt in zip(chunk, y, strict=True):
                    y0, y1, x0, x1 = t.core
                    oy, ox = (y0 - t.ctx[0] - by0) * scale, (x0 - t.ctx[2] - bx0) * scale
                    block = yt[:, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale].transpose(1, 2, 0)
                    band[:, x0 * scale:x1 * scale] = _to_output(block, dtype)
                    done += (y1 - y0) * (x1 - x0)
                if progress is not None:
                    progress(done)
        yield band


def upscale_tiled(
    img: np.ndarray,
    infer: Infer,
    scale: int,
    *,
    tile: int,
    pad: int,
    batch: int = 1,
    out: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """:func:`upscale_rows` collected into one (H*scale, W*scale, C) array ``out``.

    ``out``: an array or view of dtype uint8, uint16 or float; allocated as
    float32 when None. Returns ``out``. Raises as :func:`upscale_rows`.
    """
    if img.ndim != 3:
        raise ValueError(f"img must be (H, W, C), got shape {img.shape}")
    h, w, c = img.shape
    if out is None:
        out = np.empty((h * scale, w * scale, c), np.float32)
    if out.shape != (h * scale, w * scale, c):
        raise ValueError(f"out has shape {out.shape}, expected {(h * scale, w * scale, c)}")
    return fill_rows(out, upscale_rows(img, infer, scale, tile=tile, pad=pad, batch=batch, dtype=out.dtype,
                                       progress=progress))


def fill_rows(out: np.ndarray, bands: Iterable[np.ndarray]) -> np.ndarray:
    """Copy consecutive row ``bands`` into ``out`` from the top; returns ``out``."""
    y = 0
    for band in bands:
        out[y:y + band.shape[0]] = band
        y += band.shape[0]
    return out

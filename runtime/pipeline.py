"""Stateless upscaling of files: one file (:func:`process_one`, shared by batch and
watch mode) and a batch of files and folders (:func:`upscale_batch`).

Batch rules: folders are scanned (``recursive``, ``glob``), subfolders are
mirrored under OUT, names never collide (a later duplicate gets ``_2``...),
nothing is written outside OUT or over an input (the final rename goes through
folder descriptors opened without following symlinks, so a symlink swapped in
during the run cannot redirect a write), existing outputs are skipped unless
``overwrite``, and anything one file can cause (a hostile header or chunk, a
decoder error, too many pixels, NaN from the model, a full or read-only disk)
is reported as that file's failure with its reason while the rest go on.

Output names: two inputs that map to one output name (``b.png`` and ``b.bmp``
with ``--format png``) are ordered stably, the input already in the output's
format first, and the others get ``_2``, ``_3``... Every output written is
recorded in ``OUT/.srgan-outputs.jsonl`` (output -> input), so an existing output
that was written from *another* input is reported as a name collision (failed,
exit 1) instead of being skipped as if it were this input's.

Overlap: in a batch, each output up to :data:`WRITE_BEHIND_BYTES` is encoded and written on
a second thread while the next file is read and inferred (:class:`_WriteBehind`); results
and progress still come in input order.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from . import grids
from .colorfix import ColorFix
from .defaults import (
    DEFAULT_MAX_MEMORY,
    DEFAULT_MAX_PIXELS,
    DEFAULT_QUALITY,
    DEFAULT_TILE,
)
from .ensemble import SelfEnsemble
from .errors import (
    InputOverwriteError,
    ModelLoadError,
    ModelRunError,
    SRError,
    UsageError,
)
from .formats import FORMATS, INPUT_SUFFIXES, format_of
from .imageio import (
    TRANSIENT_ERRNOS,
    OutputWriteError,
    allocate_pixels,
    probe_size,
    read_image,
    remove_stale_temps,
    resize_lanczos,
    write_image,
    write_image_bands,
)
from .resize import imresize
from .session import Device, SRModel, load_model
from .tiler import auto_batch, fill_rows, fit_tile, upscale_rows

__all__ = [
    "OUTPUTS_NAME",
    "BatchProgress",
    "BatchReport",
    "FileResult",
    "Job",
    "NonFiniteOutputError",
    "UpscaleOptions",
    "check_model",
    "plan_jobs",
    "process_one",
    "upscale_bands",
    "upscale_batch",
    "upscale_image",
    "wrap_model",
]

log = logging.getLogger(__name__)

_BICUBIC_RADIUS = 2  # the cubic kernel reaches 2 input pixels
#: Batch record of which input each output was written from (one JSON line per output).
OUTPUTS_NAME = ".srgan-outputs.jsonl"
#: Smallest budget for one band of output rows (see :func:`_strip_rows`).
MIN_BAND_BYTES = 64 << 20
#: Outputs up to this size are encoded and written on a second thread while the next file is
#: computed (:class:`_WriteBehind`); larger ones stream on the calling thread (no extra band in memory).
WRITE_BEHIND_BYTES = 64 << 20


class NonFiniteOutputError(ModelRunError):
    """Raised if the model returns NaN or infinity for a tile: the file fails, no image is written."""

Alpha = Literal["bicubic", "model"]


@dataclass(frozen=True)
class UpscaleOptions:
    """How each file is processed. Raises :class:`~runtime.errors.UsageError` for out-of-range values.

    ``tile``: LR pixels per tile side (0 = whole image). ``alpha``: alpha channel
    through bicubic or the model. ``outscale``: final size factor relative to
    the input (None = the model's scale). ``format``: output format name (None =
    the input's). ``quality``: JPEG/WebP 1-100. ``max_pixels``: input pixel limit.
    ``max_memory``: bytes one CPU inference call may take (tiles shrink to fit; None = no cap).
    ``ensemble``: x8 geometric self-ensemble (:mod:`runtime.ensemble`; 8x the inference time).
    ``color_fix``: keep the input's broad colour and brightness (:mod:`runtime.colorfix`).
    """

    tile: int = DEFAULT_TILE
    alpha: Alpha = "bicubic"
    outscale: float | None = None
    format: str | None = None
    quality: int = DEFAULT_QUALITY
    overwrite: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_memory: int | None = DEFAULT_MAX_MEMORY
    ensemble: bool = False
    color_fix: bool = False

    def __post_init__(self) -> None:
        if self.tile < 0:
            raise UsageError(f"tile must be >= 0, got {self.tile}")
        if self.alpha not in ("bicubic", "model"):
            raise UsageError(f"alpha must be bicubic or model, got {self.alpha!r}")
        if self.outscale is not None and not 0 < self.outscale <= 64:
            raise UsageError(f"outscale must be in (0, 64], got {self.outscale}")
        if self.format is not None and self.format not in FORMATS:
            raise UsageError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if not 1 <= self.quality <= 100:
            raise UsageError(f"quality must be 1-100, got {self.quality}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise UsageError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if self.max_memory is not None and self.max_memory < 1 << 20:
            raise UsageError(f"max_memory must be at least 1 MiB, got {self.max_memory} bytes")


@dataclass(frozen=True)
class FileResult:
    """What happened to one input. ``status``: ``ok``, ``skipped`` (output existed) or ``failed``.

    ``reason``: why it failed or was skipped. ``in_size``/``out_size``: (width,
    height). ``scores``: metrics against the HR reference (see
    :func:`runtime.grids.score`), ``note`` what kept them from being computed.
    ``transient``: the failure may go away on its own (disk full, I/O or
    permission error, out of memory), so a watcher retries it later.
    """

    src: Path
    dst: Path
    status: Literal["ok", "skipped", "failed"]
    reason: str = ""
    in_size: tuple[int, int] | None = None
    out_size: tuple[int, int] | None = None
    seconds: float = 0.0
    scores: dict[str, float | str] | None = None
    note: str = ""
    transient: bool = False


@dataclass(frozen=True)
class Job:
    """One planned file: ``src`` -> ``dst``. ``rel``: ``src`` relative to its input folder (its
    name for a file input; used to find the HR reference). ``grid``: where its comparison figure
    goes. ``pixels``: input size from the header (0 if unreadable). ``error``: why it cannot be done."""

    src: Path
    dst: Path
    rel: Path
    grid: Path | None = None
    pixels: int = 0
    error: str = ""


class BatchProgress(Protocol):
    """What :func:`upscale_batch` reports while it runs (the CLI draws a progress bar)."""

    def start(self, total_output_pixels: int, files: int) -> None: ...

    def advance(self, output_pixels: int) -> None: ...

    def done(self, result: FileResult) -> None: ...


@dataclass(frozen=True)
class BatchReport:
    """All per-file results of a batch, in input order, and where the metrics went."""

    results: list[FileResult]
    model: Path
    provider: str
    seconds: float
    metrics_csv: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)
    interrupted: str = ""  # the signal that stopped the batch early ("SIGINT", "SIGTERM"), else ""

    @property
    def exit_code(self) -> int:
        """130 if stopped by SIGINT, 143 by SIGTERM (128 + signal number), else 1 if a file failed, else 0."""
        if self.interrupted:
            return {"SIGINT": 130, "SIGTERM": 143}.get(self.interrupted, 130)
        return 1 if any(r.status == "failed" for r in self.results) else 0


# ---------------------------------------------------------------- one image

def _color(pixels: np.ndarray) -> np.ndarray:
    """The colour channels of (H, W, C) ``pixels`` (gray or RGB), without alpha: a view."""
    return pixels[:, :, :1] if pixels.shape[2] in (1, 2) else pixels[:, :, :3]


def _gray(infer: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Run a 1-channel batch through an RGB ``infer``: repeat to RGB, clamp, average back to gray."""
    def run(x: np.ndarray) -> np.ndarray:
        y: np.ndarray = np.clip(infer(np.repeat(x, 3, axis=1)), 0.0, 1.0).mean(axis=1, keepdims=True, dtype=np.float32)
        return y
    return run


class _Finite:
    """``infer`` (and its ``upscale_region``, when it has one) raising :class:`NonFiniteOutputError` when
    the output holds NaN or infinity: clamping would turn NaN into black pixels written as a result."""

    def __init__(self, infer: Callable[[np.ndarray], np.ndarray]):
        self._infer = infer
        if callable(getattr(infer, "upscale_region", None)):
            self.upscale_region = self._region

    @staticmethod
    def _check(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        if not np.isfinite(y).all():
            raise NonFiniteOutputError(f"the model returned NaN or infinity for a {x.shape[2]}x{x.shape[3]} tile; "
                                       "no image is written (a broken or badly exported model?)")
        return y

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._check(self._infer(x), x)

    def _region(self, x: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        return self._check(self._infer.upscale_region(x, box), x)  # type: ignore[attr-defined]


def wrap_model(model: SRModel, *, ensemble: bool = False, color_fix: bool = False) -> SRModel:
    """``model`` behind the optional wrappers, always in this order: the x8 self-ensemble
    (:mod:`runtime.ensemble`), then the colour fix (:mod:`runtime.colorfix`, on the ensemble's mean). Each has
    the model's interface, so tiling, batching and memory caps apply unchanged."""
    wrapped: Any = model
    if ensemble:
        wrapped = SelfEnsemble(wrapped)
    if color_fix:
        wrapped = ColorFix(wrapped)
    return wrapped  # type: ignore[no-any-return]  # the same interface


def check_model(model: SRModel) -> None:
    """One small inference on a made-up image: the output must be ``model.scale`` times the input and finite.

    Raises :class:`~runtime.errors.ModelLoadError` (a setup error, exit 2) if the
    model's ``scale`` metadata is wrong or it returns NaN/infinity, so a broken
    model stops the run before any file instead of failing every file.
    """
    h, w = 12, 20
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = np.stack([0.5 + 0.4 * np.sin(xx / (2 + i) + yy / 3) for i in range(3)])[None].astype(np.float32)
    try:
        y = model(x)
    except ModelRunError as e:
        raise ModelLoadError(model.path, f"a {h}x{w} test inference failed: {e}") from None
    s = model.scale
    if tuple(y.shape) != (1, 3, h * s, w * s):
        raise ModelLoadError(model.path, f"a {h}x{w} input gave output shape {tuple(y.shape)}, not "
                                         f"{(1, 3, h * s, w * s)} for scale {s}: fix the model's 'scale' metadata")
    if not np.isfinite(y).all():
        raise ModelLoadError(model.path, "the model returns NaN or infinity on a plain test image; it is broken "
                                         "(re-export it)")


def _strip_rows(h: int, w: int, c: int, itemsize: int, scale: int, tile: int, pad: int,
                max_memory: int | None) -> int:
    """LR rows per strip so one band of output rows stays within a quarter of ``max_memory``
    (at least :data:`MIN_BAND_BYTES`); ``tile`` is the tile side actually run.

    Output bands span the image width, so a wide image (40000x1000) would otherwise hold
    ``tile * scale`` full output rows (~0.3-0.5 GB) at once. Strips repeat ``pad`` context
    rows above and below (exact, but more work), so a strip is at least ``2 * pad`` rows (at
    most 2x the work) and is used only where it is smaller than a row of tiles.
    Returns ``h`` when no strips are needed.
    """
    if tile == 0 or max_memory is None:
        return h
    budget = max(MIN_BAND_BYTES, max_memory // 4)
    row_bytes = w * scale * scale * c * itemsize
    rows = min(tile, h)
    if rows * row_bytes <= budget:
        return h
    strip = max(8, 2 * pad, budget // row_bytes - 2 * pad)
    return strip if strip + 2 * pad < rows else h


def _bicubic(scale: int) -> Callable[[np.ndarray], np.ndarray]:
    """MATLAB-bicubic x``scale`` as an NCHW float32 ``infer`` (exact when tiled with pad >= 2)."""
    def run(x: np.ndarray) -> np.ndarray:
        return np.stack([imresize(s.transpose(1, 2, 0), float(scale)).transpose(2, 0, 1) for s in x]).astype(np.float32)
    return run


def upscale_bands(pixels: np.ndarray, model: SRModel, *, tile: int = DEFAULT_TILE, alpha: Alpha = "bicubic",
                  max_memory: int | None = DEFAULT_MAX_MEMORY,
                  progress: Callable[[int], None] | None = None) -> Iterator[np.ndarray]:
    """Upscale (H, W, C) uint8/uint16 ``pixels`` (C = 1, 2, 3 or 4) by ``model.scale``, band by band.

    Yields the result as bands of output rows (same dtype), top to bottom: one
    row of tiles each. Colour goes through the model (gray is run as RGB and
    averaged back); the alpha channel of LA/RGBA through bicubic or the model
    (``alpha``). ``tile`` shrinks where one inference call would need more than
    ``max_memory`` bytes (:func:`~runtime.tiler.fit_tile`; None = no cap); tiling
    is exact, so only speed changes. ``progress`` gets LR pixels done.
    Images so wide that a row of tiles would exceed a quarter of ``max_memory`` are
    run in horizontal strips with context rows (:func:`_strip_rows`): same result.

    Raises :class:`NonFiniteOutputError` if the model returns NaN or infinity.
    """
    h, w, c = pixels.shape
    pad = max(model.receptive_radius, _BICUBIC_RADIUS)
    fitted = fit_tile(tile, model.receptive_radius, model.bytes_per_pixel, max_memory)  # the tile rows _bands runs
    strip = _strip_rows(h, w, c, pixels.dtype.itemsize, model.scale, fitted, pad, max_memory)
    if strip >= h:
        yield from _bands(pixels, model, tile=tile, alpha=alpha, max_memory=max_memory, progress=progress)
        return
    log.info("a %dx%d image: strips of %d rows keep the output bands within memory", w, h, strip)
    s = model.scale
    for y0 in range(0, h, strip):
        y1 = min(h, y0 + strip)
        cy0, cy1 = max(0, y0 - pad), min(h, y1 + pad)
        share = (y1 - y0) / (cy1 - cy0)

        def part(n: int, share: float = share) -> None:
            if progress is not None:
                progress(round(n * share))

        parts = list(_bands(pixels[cy0:cy1], model, tile=tile, alpha=alpha, max_memory=max_memory, progress=part))
        full = parts[0] if len(parts) == 1 else np.concatenate(parts)
        del parts
        piece = full[(y0 - cy0) * s:(y1 - cy0) * s]
        del full
        yield piece
        del piece


def _bands(pixels: np.ndarray, model: SRModel, *, tile: int, alpha: Alpha, max_memory: int | None,
           progress: Callable[[int], None] | None) -> Iterator[np.ndarray]:
    """:func:`upscale_bands` for one strip (or the whole image): one band per row of tiles."""
    h, w, c = pixels.shape
    s, pad = model.scale, model.receptive_radius
    fitted = fit_tile(tile, pad, model.bytes_per_pixel, max_memory)
    if fitted != tile:
        log.info("tile %d -> %d: an inference call stays within %d MiB at ~%d KiB per LR pixel (same result)",
                 tile, fitted, (max_memory or 0) // (1 << 20), model.bytes_per_pixel // 1024)
    tile = fitted
    call_pixels = model.batch_pixels
    if max_memory is not None and model.bytes_per_pixel > 0:
        call_pixels = min(call_pixels, max_memory // model.bytes_per_pixel)
    ctx_h, ctx_w = (h, w) if tile == 0 else (min(h, tile + 2 * pad), min(w, tile + 2 * pad))
    batch = auto_batch(ctx_h * ctx_w, call_pixels, model.max_batch)
    nc = _color(pixels).shape[2]
    infer = _Finite(model)
    streams = [upscale_rows(pixels[:, :, :nc], infer if nc == 3 else _gray(infer), s, tile=tile, pad=pad,
                            batch=batch, dtype=pixels.dtype, progress=progress)]
    if c > nc:  # alpha: same tile rows as the colour, so the bands line up
        a = pixels[:, :, nc:]
        streams.append(upscale_rows(a, _gray(infer), s, tile=tile, pad=pad, batch=batch, dtype=a.dtype)
                       if alpha == "model" else
                       upscale_rows(a, _bicubic(s), s, tile=tile, pad=_BICUBIC_RADIUS, dtype=a.dtype))
    for parts in zip(*streams, strict=True):
        band = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
        del parts  # held while the next band is computed, it would double the memory of wide images
        yield band
        del band


def upscale_image(pixels: np.ndarray, model: SRModel, *, tile: int = DEFAULT_TILE, alpha: Alpha = "bicubic",
                  max_memory: int | None = DEFAULT_MAX_MEMORY, out: np.ndarray | None = None,
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """:func:`upscale_bands` collected into one (H*s, W*s, C) result ``out`` (same dtype as
    ``pixels``; allocated if None). Returns it."""
    h, w, c = pixels.shape
    s = model.scale
    if out is None:
        out = np.empty((h * s, w * s, c), pixels.dtype)
    return fill_rows(out, upscale_bands(pixels, model, tile=tile, alpha=alpha, max_memory=max_memory,
                                        progress=progress))


def _compare(lr: np.ndarray, sr: np.ndarray, scale: int, hr_path: Path | None, grid: Path | None,
             lpips: grids.LpipsFn | None, root: Path | None = None,
             ) -> tuple[dict[str, float | str] | None, str]:
    """Scores against the HR file and the grid figure; returns (scores, note)."""
    lr_c, sr_c = _color(lr), _color(sr)
    bicubic = grids.bicubic_baseline(lr_c, scale)
    scores, note, hr = None, "", None
    if hr_path is None:
        note = "no HR reference found"
    else:
        try:
            hr = grids.match_reference(_color(read_image(hr_path).pixels), sr_c.shape[0], sr_c.shape[1], scale)
            scores = grids.score(sr_c, bicubic, hr, scale, lpips)
        except (SRError, ValueError) as e:
            note = f"HR {hr_path}: {e}"
    if grid is not None:
        if root is None:
            grid.parent.mkdir(parents=True, exist_ok=True)
        write_image(grid, grids.make_grid(lr_c, bicubic, sr_c, hr, scale=scale, scores=scores), root=root)
    return scores, note


def process_one(src: str | Path, dst: str | Path, model: SRModel, options: UpscaleOptions = UpscaleOptions(), *,
                hr: Path | None = None, grid: Path | None = None, compare: bool = False,
                lpips: grids.LpipsFn | None = None,
                progress: Callable[[int], None] | None = None, root: str | Path | None = None) -> FileResult:
    """Upscale the file ``src`` into ``dst`` (format from its suffix); never raises for per-file problems.

    Skips (status ``skipped``) when ``dst`` exists and ``options.overwrite`` is
    False. With ``compare``, scores against the HR file ``hr`` (when not None;
    LPIPS with the ``lpips`` scorer, else the column says how to get one)
    and writes the figure to ``grid`` (when not None). ``progress`` gets LR
    pixels done. ``root``: the output folder; the folders from it down to
    ``dst`` are made and the file is moved into place through folder
    descriptors opened without following symlinks (None: ``dst``'s folder).

    Every exception but KeyboardInterrupt/SystemExit comes back as status
    ``failed`` with the reason naming the file (``transient`` set for errors that
    may pass: disk full, I/O, permission, memory).
    """
    started = _begin(Path(src), Path(dst), model, options, hr=hr, grid=grid, compare=compare, lpips=lpips,
                     progress=progress, root=root)
    return _written(started)


def _written(started: FileResult | _Stream) -> FileResult:
    """The result of a started file, writing its stream on this thread if it has one."""
    return started.write(started.bands) if isinstance(started, _Stream) else started


@dataclass
class _Stream:
    """A file whose output goes straight to disk band by band (no scores, no final resize): ``bands``
    computes them lazily; :meth:`write` writes whatever band iterable it is given (``bands`` itself, or
    in a batch the same bands handed over from the computing thread, :class:`_WriteBehind`)."""

    src: Path
    dst: Path
    in_size: tuple[int, int]
    scale: int
    channels: int
    dtype: np.dtype
    bands: Iterator[np.ndarray]
    save: dict[str, Any]
    t0: float

    @property
    def nbytes(self) -> int:
        w, h = self.in_size
        return h * w * self.scale ** 2 * self.channels * self.dtype.itemsize

    def write(self, bands: Iterable[np.ndarray]) -> FileResult:
        w, h = self.in_size
        try:
            write_image_bands(self.dst, h * self.scale, w * self.scale, self.channels, self.dtype, bands, **self.save)
        except Exception as e:
            return _failed(self.src, self.dst, e, self.t0)
        return FileResult(self.src, self.dst, "ok", in_size=self.in_size, out_size=(w * self.scale, h * self.scale),
                          seconds=time.perf_counter() - self.t0)


def _failed(src: Path, dst: Path, e: Exception, t0: float) -> FileResult:
    reason, transient = _failure(src, e)
    log.debug("failed %s", src, exc_info=True)
    return FileResult(src, dst, "failed", reason, seconds=time.perf_counter() - t0, transient=transient)


def _begin(src: Path, dst: Path, model: SRModel, options: UpscaleOptions, *, hr: Path | None, grid: Path | None,
           compare: bool, lpips: grids.LpipsFn | None, progress: Callable[[int], None] | None,
           root: str | Path | None) -> FileResult | _Stream:
    """:func:`process_one` up to the streamed write: the finished result, or the :class:`_Stream` to write."""
    t0 = time.perf_counter()
    try:
        if dst.resolve() == src.resolve():
            raise InputOverwriteError(dst, "is the input file itself; inputs are never overwritten")
        if dst.exists() and not options.overwrite:
            return FileResult(src, dst, "skipped", "output exists (use --overwrite to replace it)")
        image = read_image(src, max_pixels=options.max_pixels)
        model = wrap_model(model, ensemble=options.ensemble, color_fix=options.color_fix)
        h, w, c = image.pixels.shape
        s = model.scale
        run: dict[str, Any] = {"tile": options.tile, "alpha": options.alpha, "max_memory": options.max_memory,
                               "progress": progress}
        save: dict[str, Any] = {"quality": options.quality, "icc_profile": image.icc_profile, "exif": image.exif,
                "root": root if root is not None else dst.parent}
        if root is None:
            dst.parent.mkdir(parents=True, exist_ok=True)
        if options.outscale is None and not compare:  # straight to the file, one band at a time
            return _Stream(src, dst, (w, h), s, c, image.pixels.dtype, upscale_bands(image.pixels, model, **run),
                           save, t0)
        fmt = format_of(dst) or "png"
        sr = allocate_pixels(h * s, w * s, c, image.pixels.dtype, fmt if options.outscale is None else None)
        upscale_image(image.pixels, model, out=sr, **run)
        scores, note = (_compare(image.pixels, sr, s, hr, grid, lpips, Path(root) if root else None)
                        if compare else (None, ""))
        if options.outscale is not None:
            sr = resize_lanczos(sr, max(1, round(h * options.outscale)), max(1, round(w * options.outscale)))
        write_image(dst, sr, **save)
    except Exception as e:
        return _failed(src, dst, e, t0)
    return FileResult(src, dst, "ok", in_size=(w, h), out_size=(sr.shape[1], sr.shape[0]),
                      seconds=time.perf_counter() - t0, scores=scores, note=note)


class _Cancelled(SRError):
    """Handed to the writer when the computing thread stops a file part way (Ctrl-C): its temp file goes."""


_END = object()


class _WriteBehind:
    """Encode and write one file's output on a second thread while the next file is read and inferred.

    The computing (calling) thread runs the model and hands each band over through a one-slot queue,
    so at most one band waits; the writer thread encodes it (PNG filter and deflate, JPEG; numpy,
    zlib and Pillow release the GIL), fsyncs and renames. Only outputs of at most
    :data:`WRITE_BEHIND_BYTES` go this way (the extra band in flight stays small); larger ones are
    streamed on the calling thread as before. Failures are the file's result either way: an
    exception while computing is raised inside the writer's band iterator, so the temporary file
    is removed exactly as when one thread does both; a writer that fails drains the remaining bands
    (the computing thread stops at the next band).
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="srgan-writer")
        #: Set by :meth:`close`: a writer still waiting for a band then gets none (a signal stopped the
        #: computing thread anywhere, even before it could hand over the end marker) and cancels its file.
        self._closing = threading.Event()

    def submit(self, stream: _Stream) -> Future[FileResult]:
        slot: queue.Queue[Any] = queue.Queue(maxsize=1)
        stop = threading.Event()
        done = self._pool.submit(self._write, stream, slot, stop)
        try:
            for band in stream.bands:
                if stop.is_set():  # the write failed: computing the rest is wasted
                    break
                slot.put(band)
        except Exception as e:  # the file's failure, reported by the writer as process_one would
            slot.put(e)
            return done
        except BaseException:
            slot.put(_Cancelled(f"{stream.src}: stopped part way; not written"))
            raise
        slot.put(_END)
        return done

    def _write(self, stream: _Stream, slot: queue.Queue[Any], stop: threading.Event) -> FileResult:
        def bands() -> Iterator[np.ndarray]:
            while True:
                try:
                    item = slot.get(timeout=0.05)  # returns as soon as a band is handed over
                except queue.Empty:
                    if self._closing.is_set():
                        raise _Cancelled(f"{stream.src}: the batch stopped before it was computed; "
                                         "not written") from None
                    continue
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item

        received = bands()
        try:
            return stream.write(received)
        finally:
            stop.set()
            with contextlib.suppress(Exception):  # bands still being handed over, up to the end marker
                for _ in received:
                    pass

    def close(self) -> None:
        """Wait for the writes handed over; a file whose bands stopped coming is cancelled (no output)."""
        self._closing.set()
        self._pool.shutdown(wait=True)


def _failure(src: Path, e: Exception) -> tuple[str, bool]:
    """(reason naming the file, transient?) for an exception while processing ``src``."""
    if isinstance(e, OutputWriteError):
        return str(e), e.transient
    if isinstance(e, NonFiniteOutputError):
        return f"{src}: {e}", False
    if isinstance(e, ModelRunError):
        return f"{src}: {e}", True  # often memory: may pass
    if isinstance(e, SRError):
        return str(e), False
    if isinstance(e, OSError):
        where = e.filename if e.filename is not None else src
        return f"{where}: {e.strerror or e}", e.errno in TRANSIENT_ERRNOS
    if isinstance(e, MemoryError):
        return f"{src}: out of memory (try a smaller --tile or --max-memory)", True
    log.error("unexpected %s on %s: %s (run with -v for the traceback)", type(e).__name__, src, e)
    return f"{src}: internal error {type(e).__name__}: {e}", False


# ---------------------------------------------------------------- batches

def _scan(folder: Path, recursive: bool, glob: str | None, exclude: Path) -> list[Path]:
    pattern = glob or "*"
    found = folder.rglob(pattern) if recursive else folder.glob(pattern)
    files = []
    for p in found:
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue  # hidden files, our own temporary files
        if glob is None and p.suffix.lower() not in INPUT_SUFFIXES:
            continue
        if p.resolve().is_relative_to(exclude):
            continue  # OUT inside an input folder: never re-read our outputs
        files.append(p)
    return sorted(files)


def _output_suffix(src: Path, fmt: str | None) -> str:
    own = format_of(src)
    if fmt is None:
        return src.suffix if own else ".png"
    return src.suffix if own == fmt else FORMATS[fmt].suffix


def _unique(path: Path, taken: set[str]) -> Path:
    """``path``, or ``stem_2.ext``, ``stem_3.ext``... : the first not in ``taken`` (case-insensitive)."""
    candidate, n = path, 1
    while str(candidate).lower() in taken:
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    if candidate != path:
        log.warning("%s would collide with another output; writing %s", path, candidate.name)
    taken.add(str(candidate).lower())
    return candidate


def plan_jobs(inputs: Sequence[str | Path], out_dir: str | Path, *, recursive: bool = False,
              glob: str | None = None, fmt: str | None = None, grid: bool = False) -> list[Job]:
    """Map input files and folders to output paths under ``out_dir``, in a stable order.

    A folder's files keep their relative paths (under the folder's name when
    several inputs are given); a file goes to ``out_dir/<name>``. Raises
    :class:`~runtime.errors.UsageError` if an input does not exist or
    ``out_dir`` is a file.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {out} exists and is not a folder")
    out_real = out.resolve()
    found: list[tuple[Path, Path, Path]] = []  # (src, path relative to its input folder, output prefix)
    for item in map(Path, inputs):
        if item.is_dir():
            prefix = Path(item.resolve().name) if len(inputs) > 1 else Path()
            found += [(p, p.relative_to(item), prefix) for p in _scan(item, recursive, glob, out_real)]
        elif item.is_file():
            found.append((item, Path(item.name), Path()))
        else:
            raise UsageError(f"input {item} does not exist")
    sources = {p.resolve() for p, _, _ in found}
    wanted = [out / prefix / rel.with_suffix(_output_suffix(src, fmt)) for src, rel, prefix in found]
    # Who gets a contested name does not depend on which other inputs exist: the input already in the
    # output's format first (b.png keeps b.png, b.bmp becomes b_2.png), then input order.
    order = sorted(range(len(found)), key=lambda i: (str(wanted[i]).lower(),
                                                     found[i][0].suffix.lower() != wanted[i].suffix.lower(), i))
    taken: set[str] = set()
    named: dict[int, Path] = {}
    for i in order:
        named[i] = _unique(wanted[i], taken)
    jobs = []
    for i, (src, rel, _prefix) in enumerate(found):
        dst = named[i]
        grid_path = _unique(out / "grids" / dst.relative_to(out).with_suffix(".png"), taken) if grid else None
        error = ""
        real = dst.resolve()
        if not real.is_relative_to(out_real):
            error = f"{dst} resolves to {real}, outside the output folder (a symlink?); not written"
        elif real in sources:
            error = f"{dst} is an input file; inputs are never overwritten (choose another -o)"
        try:
            w, h = probe_size(src)
        except (SRError, OSError):
            w = h = 0  # the reason is reported when the file is processed
        jobs.append(Job(src, dst, rel, grid_path, w * h, error))
    return jobs


def _find_hr(hr_dir: Path, rel: Path) -> Path | None:
    """The HR reference for an input at ``rel``: same relative folder and stem under ``hr_dir``."""
    base = hr_dir / rel.parent
    for suffix in dict.fromkeys((rel.suffix, *sorted(INPUT_SUFFIXES))):
        for candidate in (base / (rel.stem + suffix), base / (rel.stem + suffix.upper())):
            if candidate.is_file():
                return candidate
    return None


def upscale_batch(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    model: str | Path | SRModel,
    device: Device = "auto",
    threads: int = 0,
    options: UpscaleOptions = UpscaleOptions(),
    recursive: bool = False,
    glob: str | None = None,
    hr_dir: str | Path | None = None,
    grid: bool = False,
    metrics_csv: str | Path | None = None,
    progress: BatchProgress | None = None,
) -> BatchReport:
    """Upscale files and folders into ``out_dir`` with ``model``: a loaded :class:`SRModel` (used as it
    is; ``device`` and ``threads`` then do not apply), or a registry name or path.

    The model session is built once. With ``hr_dir``, each result is scored
    against the HR image of the same relative path and a CSV (``metrics_csv``,
    default ``out_dir/metrics.csv``) gets one row per image plus a mean row;
    ``grid`` writes comparison figures under ``out_dir/grids``.

    Raises :class:`~runtime.errors.UsageError` (no images, bad paths or option
    combinations), :class:`~runtime.errors.ModelError` and
    :class:`~runtime.errors.DeviceError` before any file is processed; per-file
    problems are in the results.
    """
    from .registry import resolve_model

    t0 = time.perf_counter()
    if metrics_csv is not None and hr_dir is None:
        raise UsageError("--metrics needs HR references: add --hr DIR")
    hr = Path(hr_dir) if hr_dir is not None else None
    if hr is not None and not hr.is_dir():
        raise UsageError(f"HR folder {hr} does not exist")
    jobs = plan_jobs(inputs, out_dir, recursive=recursive, glob=glob, fmt=options.format, grid=grid)
    if not jobs:
        raise UsageError(f"no images found in {', '.join(map(str, inputs))}"
                         + ("" if recursive else " (add --recursive for subfolders)"))
    sr_model = model if isinstance(model, SRModel) else load_model(resolve_model(model), device=device,
                                                                     threads=threads)
    check_model(sr_model)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output folder {out}: {e.strerror}") from None
    remove_stale_temps(out)
    outputs = _Outputs(out)
    scorer = None
    if hr is not None:
        from .lpips import available_lpips

        found = available_lpips()
        scorer = found.distance if found is not None else None
    s2 = sr_model.scale ** 2
    if progress is not None:
        progress.start(sum(j.pixels for j in jobs) * s2, len(jobs))

    results: list[FileResult] = []
    inflight: deque[tuple[Job, Future[FileResult], list[int]]] = deque()  # in input order

    def finish(block: bool) -> None:
        while inflight and (block or inflight[0][1].done()):
            job, done, advanced = inflight.popleft()
            result = done.result()
            if result.status == "ok":
                outputs.record(*outputs.ids(job))
            results.append(result)
            if progress is not None:
                progress.advance(max(0, job.pixels * s2 - advanced[0]))
                progress.done(result)

    interrupted = ""
    behind = _WriteBehind()
    try:
        for job in jobs:
            advanced = [0]

            def tick(lr_pixels: int, advanced: list[int] = advanced) -> None:
                advanced[0] += lr_pixels * s2
                if progress is not None:
                    progress.advance(lr_pixels * s2)

            try:
                started = _start_job(job, sr_model, options, outputs, hr=hr, compare=hr is not None or grid,
                                     scorer=scorer, progress=tick)
                if isinstance(started, _Stream) and started.nbytes <= WRITE_BEHIND_BYTES:
                    done = behind.submit(started)
                else:
                    done = Future()
                    done.set_result(_written(started))
                inflight.append((job, done, advanced))
                finish(block=False)
            except KeyboardInterrupt as e:  # SIGINT (or SIGTERM turned into it by the CLI): stop, report
                interrupted = str(e) or "SIGINT"
                break
        try:
            finish(block=True)
        except KeyboardInterrupt as e:  # while the last writes finish: they still do, and are reported
            interrupted = interrupted or str(e) or "SIGINT"
            finish(block=True)
    finally:
        behind.close()
    outputs.close()
    if interrupted:
        log.warning("%s: stopped after %d of %d files; the rest were not started", interrupted, len(results), len(jobs))

    csv_path = None
    if hr is not None:
        csv_path = Path(metrics_csv) if metrics_csv is not None else Path(out_dir) / "metrics.csv"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        rows = [(str(j.rel), r.scores, r.note or r.reason) for j, r in zip(jobs, results, strict=False)
                if r.status != "skipped"]
        grids.write_metrics_csv(csv_path, rows)
    counts = {k: sum(r.status == k for r in results) for k in ("ok", "skipped", "failed")}
    if interrupted:
        counts["not done"] = len(jobs) - len(results)
    return BatchReport(results, sr_model.path, sr_model.provider, time.perf_counter() - t0, csv_path, counts,
                       interrupted)


def _start_job(job: Job, model: SRModel, options: UpscaleOptions, outputs: _Outputs, *, hr: Path | None,
               compare: bool, scorer: grids.LpipsFn | None, progress: Callable[[int], None]) -> FileResult | _Stream:
    """One planned job of a batch, with the output-name provenance check, up to its streamed write (the
    caller records the output's provenance once it is written)."""
    if job.error:
        return FileResult(job.src, job.dst, "failed", job.error)
    rel, src_id = outputs.ids(job)
    writer = outputs.writer_of(rel)
    if not options.overwrite and writer not in (None, src_id) and job.dst.exists():
        return FileResult(job.src, job.dst, "failed",
                          f"{job.dst}: name collision: this output was written from {writer}, not from {job.src}; "
                          "use another -o, rename one input, or --overwrite to replace it")
    return _begin(job.src, job.dst, model, options, compare=compare, hr=_find_hr(hr, job.rel) if hr else None,
                  grid=job.grid, lpips=scorer, progress=progress, root=outputs.root)


class _Outputs:
    """``OUT/.srgan-outputs.jsonl``: which input each output of a batch was written from.

    Append-only JSON lines ``{"dst": <relative to OUT>, "src": <absolute input path>}``,
    the last line per output wins; unreadable lines (a torn tail after a kill) are skipped.
    Best effort: if it cannot be written, the batch goes on (logged) without provenance.
    """

    def __init__(self, root: Path):
        self.root = root
        self.path = root / OUTPUTS_NAME
        self.writers: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in self.path.read_bytes().split(b"\n"):
                try:
                    d = json.loads(line)
                    self.writers[str(d["dst"])] = str(d["src"])
                except (ValueError, KeyError, TypeError):
                    continue
        self._fd: int | None = None

    def ids(self, job: Job) -> tuple[str, str]:
        """(output path relative to OUT, absolute input path): how the record names ``job``'s pair."""
        return job.dst.relative_to(self.root).as_posix(), str(job.src.resolve())

    def writer_of(self, rel: str) -> str | None:
        return self.writers.get(rel)

    def record(self, rel: str, src: str) -> None:
        self.writers[rel] = src
        line = (json.dumps({"dst": rel, "src": src}, ensure_ascii=False) + "\n").encode()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            os.write(self._fd, b"\n" + line)  # a leading newline ends any torn line before it
        except OSError as e:
            log.warning("%s: cannot record that %s came from %s (%s)", self.path, rel, src, e.strerror)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

"""Stateless upscaling of files: one file (:func:`process_one`, shared by batch and
watch mode) and a batch of files and folders (:func:`upscale_batch`).

Batch rules: folders are scanned (``recursive``, ``glob``), subfolders are
mirrored under OUT, names never collide (a later duplicate gets ``_2``...),
nothing is written outside OUT or over an input, existing outputs are skipped
unless ``overwrite``, and one bad file is reported with its reason while the
rest go on.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from . import grids
from .defaults import DEFAULT_MAX_MEMORY, DEFAULT_MAX_PIXELS, DEFAULT_QUALITY, DEFAULT_TILE
from .ensemble import SelfEnsemble
from .errors import InputOverwriteError, SRError, UsageError
from .formats import FORMATS, INPUT_SUFFIXES, format_of
from .imageio import allocate_pixels, probe_size, read_image, resize_lanczos, write_image, write_image_bands
from .resize import imresize
from .session import Device, SRModel, load_model
from .tiler import auto_batch, fill_rows, fit_tile, upscale_rows

__all__ = [
    "UpscaleOptions", "FileResult", "Job", "BatchReport", "BatchProgress", "plan_jobs", "upscale_bands", "upscale_image",
    "process_one", "upscale_batch",
]

log = logging.getLogger(__name__)

_BICUBIC_RADIUS = 2  # the cubic kernel reaches 2 input pixels

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

    @property
    def exit_code(self) -> int:
        """0 if no file failed, else 1."""
        return 1 if any(r.status == "failed" for r in self.results) else 0


# ---------------------------------------------------------------- one image

def _color(pixels: np.ndarray) -> np.ndarray:
    """The colour channels of (H, W, C) ``pixels`` (gray or RGB), without alpha: a view."""
    return pixels[:, :, :1] if pixels.shape[2] in (1, 2) else pixels[:, :, :3]


def _gray(infer: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Run a 1-channel batch through an RGB ``infer``: repeat to RGB, clamp, average back to gray."""
    def run(x: np.ndarray) -> np.ndarray:
        return np.clip(infer(np.repeat(x, 3, axis=1)), 0.0, 1.0).mean(axis=1, keepdims=True, dtype=np.float32)
    return run


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
    """
    h, w, c = pixels.shape
    s, pad = model.scale, model.receptive_radius
    fitted = fit_tile(tile, pad, model.bytes_per_pixel, max_memory)
    if fitted != tile:
        log.info("tile %d -> %d: an inference call stays within %d MiB at ~%d KiB per LR pixel (same result)",
                 tile, fitted, max_memory // (1 << 20), model.bytes_per_pixel // 1024)
    tile = fitted
    call_pixels = model.batch_pixels
    if max_memory is not None and model.bytes_per_pixel > 0:
        call_pixels = min(call_pixels, max_memory // model.bytes_per_pixel)
    ctx_h, ctx_w = (h, w) if tile == 0 else (min(h, tile + 2 * pad), min(w, tile + 2 * pad))
    batch = auto_batch(ctx_h * ctx_w, call_pixels, model.max_batch)
    nc = _color(pixels).shape[2]
    streams = [upscale_rows(pixels[:, :, :nc], model if nc == 3 else _gray(model), s, tile=tile, pad=pad,
                            batch=batch, dtype=pixels.dtype, progress=progress)]
    if c > nc:  # alpha: same tile rows as the colour, so the bands line up
        a = pixels[:, :, nc:]
        streams.append(upscale_rows(a, _gray(model), s, tile=tile, pad=pad, batch=batch, dtype=a.dtype)
                       if alpha == "model" else
                       upscale_rows(a, _bicubic(s), s, tile=tile, pad=_BICUBIC_RADIUS, dtype=a.dtype))
    for parts in zip(*streams, strict=True):
        yield parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)


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
             lpips: grids.LpipsFn | None,
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
        grid.parent.mkdir(parents=True, exist_ok=True)
        write_image(grid, grids.make_grid(lr_c, bicubic, sr_c, hr, scale=scale, scores=scores))
    return scores, note


def process_one(src: str | Path, dst: str | Path, model: SRModel, options: UpscaleOptions = UpscaleOptions(), *,
                hr: Path | None = None, grid: Path | None = None, compare: bool = False,
                lpips: grids.LpipsFn | None = None,
                progress: Callable[[int], None] | None = None) -> FileResult:
    """Upscale the file ``src`` into ``dst`` (format from its suffix); never raises for per-file problems.

    Skips (status ``skipped``) when ``dst`` exists and ``options.overwrite`` is
    False. With ``compare``, scores against the HR file ``hr`` (when not None;
    LPIPS with the ``lpips`` scorer, else the column says how to get one)
    and writes the figure to ``grid`` (when not None). ``progress`` gets LR
    pixels done. Errors from the file itself (unreadable, too large, output
    unwritable...) come back as status ``failed`` with the reason.
    """
    src, dst = Path(src), Path(dst)
    t0 = time.perf_counter()
    try:
        if dst.resolve() == src.resolve():
            raise InputOverwriteError(dst, "is the input file itself; inputs are never overwritten")
        if dst.exists() and not options.overwrite:
            return FileResult(src, dst, "skipped", "output exists (use --overwrite to replace it)")
        image = read_image(src, max_pixels=options.max_pixels)
        if options.ensemble:
            model = SelfEnsemble(model)
        h, w, c = image.pixels.shape
        s = model.scale
        run = {"tile": options.tile, "alpha": options.alpha, "max_memory": options.max_memory, "progress": progress}
        save = {"quality": options.quality, "icc_profile": image.icc_profile, "exif": image.exif}
        dst.parent.mkdir(parents=True, exist_ok=True)
        scores, note = None, ""
        if options.outscale is None and not compare:  # straight to the file, one band at a time
            write_image_bands(dst, h * s, w * s, c, image.pixels.dtype, upscale_bands(image.pixels, model, **run),
                              **save)
            out_size = (w * s, h * s)
        else:
            fmt = format_of(dst) or "png"
            sr = allocate_pixels(h * s, w * s, c, image.pixels.dtype, fmt if options.outscale is None else None)
            upscale_image(image.pixels, model, out=sr, **run)
            scores, note = _compare(image.pixels, sr, s, hr, grid, lpips) if compare else (None, "")
            if options.outscale is not None:
                sr = resize_lanczos(sr, max(1, round(h * options.outscale)), max(1, round(w * options.outscale)))
            write_image(dst, sr, **save)
            out_size = (sr.shape[1], sr.shape[0])
    except (SRError, OSError, MemoryError) as e:
        log.debug("failed %s", src, exc_info=True)
        reason = str(e) if isinstance(e, SRError) else f"{type(e).__name__}: {e}"
        return FileResult(src, dst, "failed", reason, seconds=time.perf_counter() - t0)
    return FileResult(src, dst, "ok", in_size=(w, h), out_size=out_size,
                      seconds=time.perf_counter() - t0, scores=scores, note=note)


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
    taken: set[str] = set()
    jobs = []
    for src, rel, prefix in found:
        dst = _unique(out / prefix / rel.with_suffix(_output_suffix(src, fmt)), taken)
        grid_path = _unique(out / "grids" / dst.relative_to(out).with_suffix(".png"), taken) if grid else None
        error = ""
        real = dst.resolve()
        if not real.is_relative_to(out_real):
            error = f"{dst} resolves to {real}, outside the output folder (a symlink?); not written"
        elif real in sources:
            error = f"{dst} is an input file; inputs are never overwritten (choose another -o)"
        try:
            w, h = probe_size(src)
        except SRError:
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
    model: str | Path,
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
    """Upscale files and folders into ``out_dir`` with the model ``model`` (registry name or path).

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
    sr_model = load_model(resolve_model(model), device=device, threads=threads)
    scorer = None
    if hr is not None:
        from .lpips import available_lpips

        found = available_lpips()
        scorer = found.distance if found is not None else None
    s2 = sr_model.scale ** 2
    if progress is not None:
        progress.start(sum(j.pixels for j in jobs) * s2, len(jobs))

    results: list[FileResult] = []
    for job in jobs:
        advanced = 0

        def tick(lr_pixels: int) -> None:
            nonlocal advanced
            advanced += lr_pixels * s2
            if progress is not None:
                progress.advance(lr_pixels * s2)

        if job.error:
            result = FileResult(job.src, job.dst, "failed", job.error)
        else:
            try:
                result = process_one(job.src, job.dst, sr_model, options, compare=hr is not None or grid,
                                     hr=_find_hr(hr, job.rel) if hr else None, grid=job.grid,
                                     lpips=scorer, progress=tick)
            except Exception as e:  # a bug must not lose the rest of the batch; it is logged in full
                log.exception("unexpected error on %s", job.src)
                result = FileResult(job.src, job.dst, "failed", f"internal error {type(e).__name__}: {e}")
        if progress is not None:
            progress.advance(max(0, job.pixels * s2 - advanced))
            progress.done(result)
        results.append(result)

    csv_path = None
    if hr is not None:
        csv_path = Path(metrics_csv) if metrics_csv is not None else Path(out_dir) / "metrics.csv"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        rows = [(str(j.rel), r.scores, r.note or r.reason) for j, r in zip(jobs, results, strict=True) if r.status != "skipped"]
        grids.write_metrics_csv(csv_path, rows)
    counts = {k: sum(r.status == k for r in results) for k in ("ok", "skipped", "failed")}
    return BatchReport(results, sr_model.path, sr_model.provider, time.perf_counter() - t0, csv_path, counts)

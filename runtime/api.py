"""The Python API: load a model once, upscale images (PIL or numpy) and files, evaluate on benchmarks.

>>> from srgan.runtime import load, upscale
>>> model = load("srgan", device="cpu")          # a registry name or a path to an .onnx file
>>> big = upscale(image, model)                   # PIL image in -> PIL image out (numpy -> numpy)

Each function here is what one ``srgan`` command does, minus the printing: the CLI is
a thin layer over :func:`load`, :func:`upscale_files` and :func:`evaluate`. Nothing
here imports torch except :func:`evaluate` of a ``.pt`` checkpoint.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from .defaults import DEFAULT_MAX_MEMORY, DEFAULT_TILE
from .errors import UsageError
from .registry import DEFAULT_MODEL, resolve_model
from .session import SRModel, load_model

if TYPE_CHECKING:
    from PIL import Image

    from .evaluation import EvalModel, EvalReport
    from .pipeline import BatchProgress, BatchReport

__all__ = ["ModelLike", "evaluate", "load", "upscale", "upscale_files"]

#: A loaded model, or what :func:`load` takes (a registry name or a path); None = the default model.
ModelLike = SRModel | str | Path | None


def load(name_or_path: str | Path = DEFAULT_MODEL, *, engine: str = "auto", device: str = "auto",
         precision: str = "auto", threads: int = 0, denoise: float | None = None) -> SRModel:
    """Load an SR model once (the one session factory, :func:`runtime.session.load_model`); reuse it.

    ``name_or_path``: a registry name (``srgan``, ``srresnet``, ``srcnn``; see
    :data:`runtime.registry.MODELS`) or a path to an ``.onnx`` file. ``device``:
    ``auto``, ``cpu`` or ``cuda``. ``threads``: CPU threads, 0 = all cores.
    ``engine`` (``auto``, ``onnxruntime``, ``openvino``) and ``precision`` (``auto``,
    ``fp32``, ``bf16``, ``fp16``): see :mod:`runtime.engines`; an explicit choice that
    cannot be honoured raises, nothing falls back silently. ``denoise`` (0..1, ``real`` only): the
    weight blend of ``real`` (1) and its clean-trained partner ``srgan`` (0), see :mod:`runtime.blend`.

    Raises :class:`~runtime.errors.ModelNotFoundError` (unknown name, missing file;
    the message says how to get it), :class:`~runtime.errors.ModelLoadError`,
    :class:`~runtime.errors.DeviceError` and :class:`~runtime.errors.EngineError`.
    """
    return load_model(resolve_model(name_or_path, denoise=denoise), device=device, threads=threads,  # type: ignore[arg-type]
                      engine=engine, precision=precision)


@functools.lru_cache(maxsize=4)
def _cached(name_or_path: str) -> SRModel:
    return load(name_or_path)


def _model(model: ModelLike) -> SRModel:
    """``model`` itself when loaded; else loaded once per process and name (cached) with defaults."""
    if isinstance(model, SRModel):
        return model
    return _cached(str(resolve_model(DEFAULT_MODEL if model is None else model)))


# ---------------------------------------------------------------- in-memory images

def _pil_to_array(image: Image.Image) -> tuple[np.ndarray, str]:
    """(H, W, C) uint8/uint16 pixels of a PIL image and the mode the result should have."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(image).reshape(image.height, image.width, -1), mode
    if mode == "1":
        return np.asarray(image.convert("L"))[:, :, None], "L"
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)[:, :, None], "I;16"
    if mode in ("P", "PA"):
        out = "RGBA" if mode == "PA" or "transparency" in image.info else "RGB"
        return np.asarray(image.convert(out)), out
    if mode in ("CMYK", "YCbCr", "RGBX", "RGBa", "La", "LAB", "HSV"):
        out = "RGBA" if mode == "RGBa" else "LA" if mode == "La" else "RGB"
        return np.asarray(image.convert(out)).reshape(image.height, image.width, -1), out
    raise UsageError(f"PIL mode {mode!r} is not supported (1, L, LA, I;16, P, PA, RGB, RGBA, CMYK); "
                     "convert the image first, e.g. image.convert('RGB')")


def _array_to_pil(pixels: np.ndarray, mode: str) -> Image.Image:
    from PIL import Image

    if mode == "I;16":
        return Image.fromarray(np.ascontiguousarray(pixels[:, :, 0]))  # uint16 2-D -> I;16
    return Image.fromarray(np.ascontiguousarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels), mode=mode)


@overload
def upscale(image: np.ndarray, model: ModelLike = None, *, tile: int = ..., alpha: str = ...,
            outscale: float | None = ..., max_memory: int | None = ..., ensemble: bool = ...,
            color_fix: bool = ...) -> np.ndarray: ...
@overload
def upscale(image: Image.Image, model: ModelLike = None, *, tile: int = ..., alpha: str = ...,
            outscale: float | None = ..., max_memory: int | None = ..., ensemble: bool = ...,
            color_fix: bool = ...) -> Image.Image: ...


def upscale(image: np.ndarray | Image.Image, model: ModelLike = None, *, tile: int = DEFAULT_TILE,
            alpha: str = "bicubic", outscale: float | None = None, max_memory: int | None = DEFAULT_MAX_MEMORY,
            ensemble: bool = False, color_fix: bool = False) -> np.ndarray | Image.Image:
    """Upscale one in-memory image by the model's scale (or to ``outscale`` x its size).

    ``image``: a PIL image (modes 1, L, LA, I;16, P, PA, RGB, RGBA, CMYK) -> a PIL
    image of the same mode (palette -> RGB(A), 1 -> L, CMYK -> RGB, as files are
    read), ICC profile kept; or a numpy array (H, W) or (H, W, C), C = 1-4, dtype
    uint8, uint16 (full range) or float ([0, 1]) -> an array of the same dtype and
    layout, (H*s, W*s[, C]). Alpha (LA, RGBA, C = 2 or 4) goes through bicubic or
    the model (``alpha``); gray through the model as RGB, averaged back.
    ``model``: a loaded model (:func:`load`), a registry name or path (loaded once
    and cached), or None for the default model. Options as ``srgan upscale``:
    ``tile`` (LR pixels, 0 = whole image; tiling is exact), ``max_memory`` (bytes per
    CPU inference call, None = no cap), ``ensemble`` (x8 self-ensemble), ``color_fix`` (keep the input's
    broad colour and brightness, :mod:`runtime.colorfix`).
    Raises :class:`~runtime.errors.UsageError` for a bad option or image layout, and
    as :func:`load`; :class:`~runtime.errors.ModelRunError` if inference fails.
    """
    from .imageio import resize_lanczos
    from .pipeline import UpscaleOptions, upscale_image, wrap_model

    opts = UpscaleOptions(tile=tile, alpha=alpha, outscale=outscale, max_memory=max_memory,  # type: ignore[arg-type]
                          ensemble=ensemble, color_fix=color_fix)
    sr_model = _model(model)
    net = wrap_model(sr_model, ensemble=ensemble, color_fix=color_fix)
    flat = isinstance(image, np.ndarray) and image.ndim == 2
    if isinstance(image, np.ndarray):
        pixels, mode = image, None
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or min(pixels.shape[:2]) < 1:
            raise UsageError(f"expected an (H, W) or (H, W, C) array with C = 1-4, got shape {image.shape}")
        if not (pixels.dtype in (np.uint8, np.uint16) or np.issubdtype(pixels.dtype, np.floating)):
            raise UsageError(f"unsupported dtype {pixels.dtype}; use uint8, uint16 or float in [0, 1]")
    else:
        pixels, mode = _pil_to_array(image)
    sr = upscale_image(pixels, net, tile=opts.tile, alpha=opts.alpha, max_memory=opts.max_memory)
    if opts.outscale is not None:
        h, w = pixels.shape[:2]
        size = max(1, round(h * opts.outscale)), max(1, round(w * opts.outscale))
        if np.issubdtype(sr.dtype, np.floating):
            sr = _resize_float(sr, *size)
        else:
            sr = resize_lanczos(sr, *size)
    if isinstance(image, np.ndarray) or mode is None:
        return sr[:, :, 0] if flat else sr
    out = _array_to_pil(sr, mode)
    icc = image.info.get("icc_profile")
    if icc:
        out.info["icc_profile"] = icc
    return out


def _resize_float(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Lanczos resize of float (H, W, C) ``pixels`` plane by plane, same dtype, clamped to [0, 1]."""
    from PIL import Image

    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[:, :, i], dtype=np.float32), "F")
                         .resize((width, height), Image.Resampling.LANCZOS)) for i in range(pixels.shape[2])]
    out: np.ndarray = np.clip(np.stack(planes, axis=2), 0.0, 1.0).astype(pixels.dtype)
    return out


# ---------------------------------------------------------------- files

def upscale_files(inputs: str | Path | Sequence[str | Path], out: str | Path, model: ModelLike = None, *,
                  recursive: bool = False, glob: str | None = None, hr_dir: str | Path | None = None,
                  grid: bool = False, metrics_csv: str | Path | None = None,
                  progress: BatchProgress | None = None, **options: Any) -> BatchReport:
    """Upscale image files and folders into the folder ``out``; what ``srgan upscale`` does.

    ``inputs``: a file or folder, or a list of them (folders are scanned, subfolders
    mirrored with ``recursive``). ``model`` as :func:`upscale` (a loaded one is used
    as it is). ``options``: the fields of :class:`runtime.pipeline.UpscaleOptions`
    (``tile``, ``alpha``, ``outscale``, ``format``, ``quality``, ``overwrite``,
    ``max_pixels``, ``max_memory``, ``ensemble``, ``color_fix``). ``hr_dir``/``grid``/``metrics_csv``
    score against HR references and draw comparison figures.

    Returns a :class:`runtime.pipeline.BatchReport` (one result per file; a bad file
    is ``failed`` with its reason and the rest go on; ``exit_code`` 1 if any failed).
    Raises :class:`~runtime.errors.UsageError` (unknown option, no images, bad paths)
    and as :func:`load` before any file is processed.
    """
    from .pipeline import UpscaleOptions, upscale_batch

    known = {f.name for f in fields(UpscaleOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    return upscale_batch(items, out, model=_model(model), options=UpscaleOptions(**options), recursive=recursive,
                         glob=glob, hr_dir=hr_dir, grid=grid, metrics_csv=metrics_csv, progress=progress)


# ---------------------------------------------------------------- evaluation

def evaluate(model: ModelLike | Any, datasets: str | Path | Sequence[str | Path] | None = None,
             out: str | Path | None = None, *, lpips: bool = True, tile: int = 0, ensemble: bool = False,
             color_fix: bool = False,
             device: str = "auto", threads: int = 0, use_ema: bool = True, grids_per_set: int = 5,
             progress: Callable[[str], None] | None = None) -> EvalReport:
    """PSNR / SSIM (Y, border = scale) and LPIPS of ``model`` and of bicubic on benchmark folders.

    ``model``: a loaded model (anything with the :class:`runtime.evaluation.EvalModel`
    interface), a registry name, an ``.onnx`` path (torch-free), or a trainer
    checkpoint ``.pt`` (needs the ``train`` extra: torch). ``datasets``: folders
    with ``HR/`` (+ ``LR_bicubic_x4/``) or of plain images; None = Set5, Set14 and
    BSD100 under :func:`runtime.paths.data_dir`. ``lpips``: score LPIPS with the
    shipped ONNX LPIPS model when it is there (else the column says how to get it).
    ``out``: folder for CSVs, ``summary.txt``, grids and patches (None = nothing written).

    Returns a :class:`runtime.evaluation.EvalReport` (``.table()`` for text,
    ``.to_dict()`` for JSON). Raises :class:`~runtime.errors.UsageError` (no
    datasets), :class:`~runtime.extras.MissingExtraError` for a ``.pt`` without
    torch, and as :func:`load`.
    """
    from . import evaluation as ev
    from .pipeline import wrap_model

    sets = ([datasets] if isinstance(datasets, (str, Path)) else list(datasets)) if datasets is not None \
        else ev.default_sets()
    if not sets:
        from .paths import data_dir

        raise UsageError(f"no datasets given and none of {', '.join(ev.DEFAULT_SETS)} under {data_dir()} "
                         "(set SRGAN_DATA_DIR or pass folders)")
    net: EvalModel
    if isinstance(model, (str, Path)) and Path(model).suffix == ".pt":
        from .extras import require_extra

        require_extra("train", f"evaluating the checkpoint {model}", ("torch",))
        from srgan.trainer.evaluate import load_checkpoint_for_eval

        net, description = load_checkpoint_for_eval(Path(model), device=device, use_ema=use_ema)
    elif model is None or isinstance(model, (str, Path)):
        loaded = load(DEFAULT_MODEL if model is None else model, device=device, threads=threads)
        net, description = loaded, f"{loaded.path.name} ({loaded.provider})"
    else:
        net = model
        path = getattr(model, "path", None)
        description = f"{Path(path).name if path else model} ({getattr(model, 'provider', 'loaded model')})"
    net = wrap_model(net, ensemble=ensemble, color_fix=color_fix)  # type: ignore[arg-type]  # same interface
    if ensemble:
        description += ", x8 self-ensemble"
    if color_fix:
        description += ", colour fix"
    scorer = None
    if lpips:
        from .lpips import available_lpips

        found = available_lpips()
        scorer = found.distance if found is not None else None
    return ev.evaluate(net, sets, out, description=description, lpips=scorer, grids_per_set=grids_per_set,
                       tile=tile, progress=progress)

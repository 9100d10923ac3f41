"""The one place onnxruntime is used: load an SR model once, run it many times.

The contract (DESIGN.md): one input, float32 NCHW RGB, dynamic H and W; one
output H*scale x W*scale. ``metadata_props`` give ``scale``,
``receptive_radius`` (LR pixels), ``input_range`` (``0-1`` or ``0-255``) and
``color_order``. A model without them still runs: the scale is probed with one
small inference and the tile pad falls back to :data:`DEFAULT_PAD`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import DeviceError, ModelLoadError, ModelNotFoundError, ModelRunError

__all__ = ["SRModel", "load_model", "release_freed_memory", "DEFAULT_PAD", "Device"]

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]

#: Tile context (LR pixels) for a model without ``receptive_radius`` metadata.
#: Large enough that seams are invisible for common SR nets, but not proven exact.
DEFAULT_PAD = 32

#: LR context pixels per inference call when batching tiles: CPU memory for
#: activations stays around a few hundred MB; GPUs take more at once.
_BATCH_PIXELS = {"CPUExecutionProvider": 1 << 16, "CUDAExecutionProvider": 1 << 20}

#: Host memory per LR pixel of an inference call for a model without ``memory_bytes_per_pixel``
#: metadata, times scale^2: 1 KiB x 16 at x4, about what SRResNet-16 measures (export records it).
_DEFAULT_BYTES_PER_PIXEL_PER_SCALE2 = 1024

_PROBE_HW = (24, 32)
_RANGES = {"0-1": 1.0, "0-255": 255.0}


@dataclass(eq=False)
class SRModel:
    """A loaded SR model; call it on float32 NCHW RGB in [0, 1].

    Attributes: ``scale`` (int), ``receptive_radius`` (LR pixels; the tiler's pad),
    ``radius_known`` (False when ``receptive_radius`` is the conservative default),
    ``input_range`` (``"0-1"`` or ``"0-255"``), ``provider`` (the onnxruntime
    execution provider in use), ``max_batch`` (None = any batch size, else the
    model's fixed batch), ``batch_pixels`` (LR pixels per call the tiler aims
    for), ``bytes_per_pixel`` (host memory an inference call takes per LR pixel:
    from ``memory_bytes_per_pixel`` metadata, else an estimate; 0 on CUDA, where
    activations live on the GPU), ``metadata`` (all ``metadata_props``).
    """

    path: Path
    scale: int
    receptive_radius: int
    radius_known: bool
    input_range: str
    provider: str
    max_batch: int | None
    metadata: dict[str, str]
    batch_pixels: int
    bytes_per_pixel: int
    _session: Any = field(repr=False)
    _input: str = field(repr=False)
    _input_dtype: type = field(repr=False)
    _bgr: bool = field(repr=False)
    _run_options: Any = field(repr=False, default=None)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the model: ``x`` float32 (N, 3, h, w) RGB in [0, 1] -> float32 (N, 3, h', w').

        The output is in [0, 1] units but not clamped. Raises
        :class:`~runtime.errors.ModelRunError` if onnxruntime fails (e.g. out of memory).
        """
        factor = _RANGES[self.input_range]
        feed = x[:, ::-1] if self._bgr else x
        feed = np.ascontiguousarray(feed * factor if factor != 1.0 else feed, dtype=self._input_dtype)
        try:
            (y,) = self._session.run(None, {self._input: feed}, self._run_options)[:1]
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise ModelRunError(f"{self.path}: inference on a {tuple(x.shape)} input failed: {e}. "
                                "If memory ran out, use a smaller --tile.") from e
        y = y.astype(np.float32, copy=False)
        if factor != 1.0:
            y = y * np.float32(1.0 / factor)
        return np.ascontiguousarray(y[:, ::-1]) if self._bgr else y


def release_freed_memory() -> bool:
    """Make the C heap hand blocks of 1 MiB and more back to the OS when they are freed (glibc only).

    glibc raises its mmap threshold after large frees (up to 32 MiB), after which
    band buffers, tile outputs and encoder copies come from the heap, whose holes
    are never returned: over the rows of a 4000x3000 image the peak RSS grew from
    ~600 MiB to 957-1087 MiB (benchmarks/RESULTS.md). A fixed 1 MiB threshold
    keeps the peak at one row's working set, with no measurable speed cost.
    It changes the whole process, so the CLI calls it, not the library.
    Returns False where there is no glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 20))


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if not has_cuda:
            raise DeviceError(
                f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDA provider "
                f"(it has {', '.join(available)}). Install the GPU build: "
                "pip uninstall -y onnxruntime && pip install onnxruntime-gpu, or use --device cpu.")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if has_cuda else ["CPUExecutionProvider"]
    raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")


def _meta_int(meta: dict[str, str], key: str, path: Path) -> int | None:
    if key not in meta:
        return None
    try:
        value = int(meta[key])
    except ValueError:
        raise ModelLoadError(path, f"metadata {key}={meta[key]!r} is not an integer") from None
    if value < (1 if key == "scale" else 0):
        raise ModelLoadError(path, f"metadata {key}={value} is out of range")
    return value


def load_model(path: str | Path, device: Device = "auto", threads: int = 0, *,
               input_range: str | None = None) -> SRModel:
    """Build the onnxruntime session for the SR model at ``path`` (once per run).

    ``device``: ``auto`` (CUDA when onnxruntime-gpu sees a GPU, else CPU), ``cpu``
    or ``cuda``. ``threads``: intra-op threads, 0 = onnxruntime's default (one
    per physical core). ``input_range`` overrides the model's metadata.

    Raises :class:`ModelNotFoundError` if the file is missing,
    :class:`ModelLoadError` if it is not a usable SR model,
    :class:`DeviceError` if ``cuda`` was asked for and is not what runs.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(path, "model file not found")
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    providers = _providers(device)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own untyped errors
        raise ModelLoadError(path, f"onnxruntime cannot load it: {e}") from e
    used = sess.get_providers()[0]
    if device == "cuda" and used != "CUDAExecutionProvider":
        raise DeviceError(f"--device cuda: onnxruntime fell back to {used} for {path} "
                          "(CUDA or cuDNN libraries missing or mismatched); fix the CUDA install or use --device cpu.")
    log.info("model %s runs on %s", path.name, used)

    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise ModelLoadError(path, f"expected one input and an output, found {len(inputs)} inputs "
                                   f"and {len(outputs)} outputs")
    inp = inputs[0]
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    if inp.type not in dtypes:
        raise ModelLoadError(path, f"input {inp.name!r} has type {inp.type}; expected float32 or float16")
    shape = list(inp.shape)
    if len(shape) != 4:
        raise ModelLoadError(path, f"input {inp.name!r} has shape {shape}; expected NCHW")
    if isinstance(shape[1], int) and shape[1] != 3:
        raise ModelLoadError(path, f"input {inp.name!r} has {shape[1]} channels; expected 3 (RGB)")
    if isinstance(shape[2], int) or isinstance(shape[3], int):
        raise ModelLoadError(path, f"input {inp.name!r} has a fixed size {shape[2:]}; "
                                   "re-export it with dynamic H and W axes")
    max_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    if max_batch not in (None, 1):
        raise ModelLoadError(path, f"input {inp.name!r} has a fixed batch of {max_batch}; expected 1 or dynamic")

    meta = dict(sess.get_modelmeta().custom_metadata_map)
    rng = input_range or meta.get("input_range", "0-1")
    if rng not in _RANGES:
        raise ModelLoadError(path, f"input_range {rng!r} is not one of {sorted(_RANGES)}")
    order = meta.get("color_order", "RGB").upper()
    if order not in ("RGB", "BGR"):
        raise ModelLoadError(path, f"metadata color_order={order!r}; expected RGB or BGR")
    radius = _meta_int(meta, "receptive_radius", path)
    model = SRModel(
        path=path, scale=_meta_int(meta, "scale", path) or 0,
        receptive_radius=DEFAULT_PAD if radius is None else radius, radius_known=radius is not None, input_range=rng, provider=used, max_batch=max_batch, metadata=meta,
        batch_pixels=_BATCH_PIXELS.get(used, 1 << 16), bytes_per_pixel=0, _session=sess, _input=inp.name,
        _input_dtype=dtypes[inp.type], _bgr=order == "BGR",
    )
    if model.scale == 0:
        model.scale = _probe_scale(model)
        log.warning("%s has no 'scale' metadata; probed scale x%d", path.name, model.scale)
    if used == "CPUExecutionProvider":
        model.bytes_per_pixel = (_meta_int(meta, "memory_bytes_per_pixel", path)
                                 or _DEFAULT_BYTES_PER_PIXEL_PER_SCALE2 * model.scale ** 2)
        # Tiles of several shapes (edge tiles are smaller) fragment onnxruntime's arena until it holds
        # ~2x one call's memory (measured: 909 vs 508 MiB for SRResNet-16 at 209 px); giving the arena's
        # free chunks back after each call keeps the peak at one call's, at no measurable speed cost.
        model._run_options = ort.RunOptions()
        model._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    if radius is None:
        log.warning("%s has no 'receptive_radius' metadata; tiles use a %d px pad, which is not "
                    "proven exact (use --tile 0 for a whole-image run)", path.name, DEFAULT_PAD)
    return model


def _probe_scale(model: SRModel) -> int:
    """Find the integer scale by running one small input (different H and W)."""
    h, w = _PROBE_HW
    y = model(np.full((1, 3, h, w), 0.5, np.float32))
    if y.ndim != 4 or y.shape[2] < h or y.shape[2] % h or y.shape[3] % w or y.shape[2] // h != y.shape[3] // w:
        raise ModelLoadError(model.path, f"a {h}x{w} input gave output shape {tuple(y.shape)}; "
                                         "not an integer-scale SR model")
    return y.shape[2] // h

"""Load an SR model once (through :func:`runtime.engines.open_session`), run it many times.

The contract (DESIGN.md): one input, float32 NCHW RGB, dynamic H and W; one
output H*scale x W*scale. ``metadata_props`` give ``scale``,
``receptive_radius`` (LR pixels), ``input_range`` (``0-1`` or ``0-255``) and
``color_order``. A model without them still runs: the scale is probed with one
small inference and the tile pad falls back to :data:`DEFAULT_PAD`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .engines import Session, open_session
from .errors import ModelLoadError, ModelRunError

__all__ = [
    "DEFAULT_PAD",
    "MEMORY_BY_ENGINE_KEY",
    "MEMORY_KEY",
    "Device",
    "SRModel",
    "load_model",
    "memory_per_pixel",
    "release_freed_memory",
]

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]

#: Tile context (LR pixels) for a model without ``receptive_radius`` metadata.
#: Large enough that seams are invisible for common SR nets, but not proven exact.
DEFAULT_PAD = 32

#: LR context pixels per inference call when batching tiles: CPU memory for
#: activations stays around a few hundred MB; GPUs take more at once.
_BATCH_PIXELS = {"cpu": 1 << 16, "cuda": 1 << 20}

#: Host memory per LR pixel of an inference call for a model without memory metadata for its
#: engine and precision, times scale^2: 1 KiB x 16 at x4, about what SRResNet-16 measures on
#: onnxruntime fp32 (the largest of the engines; export records each).
_DEFAULT_BYTES_PER_PIXEL_PER_SCALE2 = 1024
#: Metadata: onnxruntime fp32 bytes per LR pixel (an int), and per ``engine/precision`` (JSON object).
MEMORY_KEY = "memory_bytes_per_pixel"
MEMORY_BY_ENGINE_KEY = "memory_bytes_per_pixel_by_engine"

_PROBE_HW = (24, 32)
_RANGES = {"0-1": 1.0, "0-255": 255.0}


@dataclass(eq=False)
class SRModel:
    """A loaded SR model; call it on float32 NCHW RGB in [0, 1].

    Attributes: ``scale`` (int), ``receptive_radius`` (LR pixels; the tiler's pad),
    ``radius_known`` (False when ``receptive_radius`` is the conservative default),
    ``input_range`` (``"0-1"`` or ``"0-255"``), ``engine`` (``onnxruntime`` /
    ``openvino``), ``precision`` (``fp32`` / ``bf16`` / ``fp16``: what the engine
    computes in), ``provider`` (where it runs, e.g. ``CPUExecutionProvider``,
    ``OpenVINO CPU``), ``max_batch`` (None = any batch size, else the model's fixed
    batch), ``batch_pixels`` (LR pixels per call the tiler aims for),
    ``bytes_per_pixel`` (host memory an inference call takes per LR pixel: from the
    metadata for this engine and precision, else an estimate; 0 on CUDA, where
    activations live on the GPU), ``metadata`` (all ``metadata_props``).
    """

    path: Path
    scale: int
    receptive_radius: int
    radius_known: bool
    input_range: str
    engine: str
    precision: str
    provider: str
    max_batch: int | None
    metadata: dict[str, str]
    batch_pixels: int
    bytes_per_pixel: int
    _session: Session = field(repr=False)
    _input: str = field(repr=False)
    _input_dtype: type = field(repr=False)
    _bgr: bool = field(repr=False)

    @property
    def runs_on(self) -> str:
        """One line for logs and the CLI: ``openvino bf16 on OpenVINO CPU``."""
        return f"{self.engine} {self.precision} on {self.provider}"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the model: ``x`` float32 (N, 3, h, w) RGB in [0, 1] -> float32 (N, 3, h', w').

        The output is in [0, 1] units but not clamped. Raises
        :class:`~runtime.errors.ModelRunError` if the engine fails (e.g. out of memory).
        """
        return self.upscale_region(x, (0, x.shape[2], 0, x.shape[3]))

    def upscale_region(self, x: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The output for the LR ``box`` (y0, y1, x0, x1) of ``x`` only, computed with all of ``x`` as context:
        equal to ``self(x)[:, :, y0*s:y1*s, x0*s:x1*s]``, cheaper where the engine can skip the rest (a split
        model runs its tail on ``box`` only; :mod:`runtime.tiler` asks for each tile's core). Raises as
        :meth:`__call__`."""
        factor = _RANGES[self.input_range]
        feed = x[:, ::-1] if self._bgr else x
        feed = np.ascontiguousarray(feed * factor if factor != 1.0 else feed, dtype=self._input_dtype)
        y0, y1, x0, x1 = box
        whole = box == (0, x.shape[2], 0, x.shape[3])
        try:
            if self._session.regional:
                y = self._session.run_region(feed, box)
            else:
                y = self._session.run({self._input: feed})[0]
                if not whole and self.scale:
                    s = self.scale
                    y = y[:, :, y0 * s:y1 * s, x0 * s:x1 * s]
        except Exception as e:  # the engines raise their own untyped errors
            raise ModelRunError(f"{self.path}: {self.engine} inference on a {tuple(x.shape)} input failed: {e}. "
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


def memory_per_pixel(meta: dict[str, str], engine: str, precision: str, path: Path) -> int | None:
    """Recorded host bytes per LR pixel of one inference call for ``engine``/``precision``, or None.

    From :data:`MEMORY_BY_ENGINE_KEY` (JSON ``{"openvino/bf16": n, ...}``), else for onnxruntime fp32
    the older :data:`MEMORY_KEY`. Raises ModelLoadError for unreadable values.
    """
    if MEMORY_BY_ENGINE_KEY in meta:
        try:
            table = json.loads(meta[MEMORY_BY_ENGINE_KEY])
            value = table.get(f"{engine}/{precision}")
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{value!r} is not a positive integer")
        except (ValueError, AttributeError) as e:
            raise ModelLoadError(path, f"metadata {MEMORY_BY_ENGINE_KEY} is unreadable: {e}") from None
        if value is not None:
            return int(value)
    if engine == "onnxruntime" and precision == "fp32":
        return _meta_int(meta, MEMORY_KEY, path)
    return None


def load_model(path: str | Path, device: Device = "auto", threads: int = 0, *, engine: str = "auto",
               precision: str = "auto", input_range: str | None = None) -> SRModel:
    """Build the session for the SR model at ``path`` (once per run).

    ``device``: ``auto`` (CUDA when onnxruntime-gpu sees a GPU, else CPU), ``cpu``
    or ``cuda``. ``engine`` / ``precision``: see :func:`runtime.engines.open_session`
    (``auto``: OpenVINO on the CPU, bf16 where the CPU has it and the model's recorded
    quality gate allows it). ``threads``: intra-op threads, 0 = the engine's default
    (one per core). ``input_range`` overrides the model's metadata.

    Raises :class:`ModelNotFoundError` if the file is missing,
    :class:`ModelLoadError` if it is not a usable SR model,
    :class:`DeviceError` if ``cuda`` was asked for and is not what runs,
    :class:`EngineError` if an explicit engine or precision cannot be used.
    """
    path = Path(path)
    sess = open_session(path, engine=engine, precision=precision, device=device, threads=threads, split=True)
    inputs, outputs = sess.inputs, sess.outputs
    if len(inputs) != 1 or not outputs:
        raise ModelLoadError(path, f"expected one input and an output, found {len(inputs)} inputs "
                                   f"and {len(outputs)} outputs")
    inp = inputs[0]
    if inp.dtype is None:
        raise ModelLoadError(path, f"input {inp.name!r} is not float32 or float16")
    shape = list(inp.shape)
    if len(shape) != 4:
        raise ModelLoadError(path, f"input {inp.name!r} has shape {shape}; expected NCHW")
    if shape[1] is not None and shape[1] != 3:
        raise ModelLoadError(path, f"input {inp.name!r} has {shape[1]} channels; expected 3 (RGB)")
    if shape[2] is not None or shape[3] is not None:
        raise ModelLoadError(path, f"input {inp.name!r} has a fixed size {shape[2:]}; "
                                   "re-export it with dynamic H and W axes")
    max_batch = shape[0]
    if max_batch not in (None, 1):
        raise ModelLoadError(path, f"input {inp.name!r} has a fixed batch of {max_batch}; expected 1 or dynamic")

    meta = sess.metadata
    rng = input_range or meta.get("input_range", "0-1")
    if rng not in _RANGES:
        raise ModelLoadError(path, f"input_range {rng!r} is not one of {sorted(_RANGES)}")
    order = meta.get("color_order", "RGB").upper()
    if order not in ("RGB", "BGR"):
        raise ModelLoadError(path, f"metadata color_order={order!r}; expected RGB or BGR")
    radius = _meta_int(meta, "receptive_radius", path)
    model = SRModel(
        path=path, scale=_meta_int(meta, "scale", path) or 0,
        receptive_radius=DEFAULT_PAD if radius is None else radius, radius_known=radius is not None,
        input_range=rng, engine=sess.engine, precision=sess.precision, provider=sess.provider,
        max_batch=max_batch, metadata=meta, batch_pixels=_BATCH_PIXELS[sess.device], bytes_per_pixel=0,
        _session=sess, _input=inp.name, _input_dtype=inp.dtype, _bgr=order == "BGR",
    )
    if model.scale == 0:
        model.scale = _probe_scale(model)
        log.warning("%s has no 'scale' metadata; probed scale x%d", path.name, model.scale)
    if sess.device == "cpu":
        model.bytes_per_pixel = (memory_per_pixel(meta, sess.engine, sess.precision, path)
                                 or _DEFAULT_BYTES_PER_PIXEL_PER_SCALE2 * model.scale ** 2)
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
    return int(y.shape[2] // h)

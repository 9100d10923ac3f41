"""Inference engines behind one session interface, and the one factory every caller uses.

Two engines read the same ONNX file:

- ``onnxruntime`` (CPU, CUDA): runs the graph in its own precision (fp32, or
  fp16 for an fp16 graph); the parity reference.
- ``openvino`` (CPU): compiles the ONNX file directly; ``fp32``, or ``bf16``
  (``INFERENCE_PRECISION_HINT``) where the CPU has AVX-512 BF16 or AMX. Before compiling
  it moves an SR net's last conv in front of its pixel shuffle (:func:`runtime.rewrite.phase_tail`:
  the same function, ~1.4x faster for SRResNet).

:func:`open_session` resolves ``engine`` / ``precision`` (``auto`` or a name),
builds the session and returns a :class:`Session`. ``auto`` engine: onnxruntime
when it sees a CUDA GPU (or ``device="cuda"``), else openvino when it imports,
else onnxruntime. ``auto`` precision: ``bf16`` where the engine and CPU support
it *and* the model's recorded quality gate (:func:`bf16_gate`) allows it, else
the graph's own precision. An explicit choice that cannot be honoured raises
:class:`~runtime.errors.EngineError`; nothing falls back silently.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import DeviceError, EngineError, ModelLoadError, ModelNotFoundError
from .rewrite import phase_tail
from .split import Split, read_split, run_split

__all__ = [
    "ENGINES",
    "ENGINE_CHOICES",
    "GATE_KEY",
    "GATE_MAX_LPIPS_LOSS",
    "GATE_MAX_PSNR_LOSS_DB",
    "PRECISION_CHOICES",
    "Session",
    "TensorInfo",
    "bf16_gate",
    "cpu_supports",
    "open_session",
    "resolve_engine",
]

log = logging.getLogger(__name__)

Engine = Literal["auto", "onnxruntime", "openvino"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

#: Metadata key holding the measured quality loss of bf16 vs fp32 (JSON, see :func:`bf16_gate`).
GATE_KEY = "precision_loss_bf16"
#: ``auto`` precision uses bf16 only when it loses at most this much mean PSNR-Y (dB) ...
GATE_MAX_PSNR_LOSS_DB = 0.01
#: ... and at most this much mean LPIPS (higher LPIPS = worse).
GATE_MAX_LPIPS_LOSS = 0.002

_ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_OV_CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16"}
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: ``name``, numpy ``dtype`` (None if not float) and ``shape``
    (ints for fixed axes, None for dynamic ones)."""

    name: str
    dtype: type | None
    shape: tuple[int | None, ...]


@dataclass(eq=False)
class Session:
    """A built model: ``run(feeds)`` takes {input name: array} and returns the outputs in graph order.

    ``engine`` (``onnxruntime`` / ``openvino``), ``precision`` (``fp32`` / ``bf16`` / ``fp16``),
    ``device`` (``cpu`` / ``cuda``), ``provider`` (a label, e.g. ``CPUExecutionProvider``),
    ``metadata`` (the ONNX ``metadata_props``). Engine errors propagate untyped from ``run``;
    callers wrap them (see :class:`~runtime.session.SRModel`).
    """

    engine: str
    precision: str
    device: str
    provider: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    metadata: dict[str, str]

    @property
    def regional(self) -> bool:
        """True when :meth:`run_region` can skip work outside the box (a split SR model)."""
        return False

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def run_region(self, x: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The single output for the LR ``box`` (y0, y1, x0, x1) of the single input ``x``; only where
        :attr:`regional`. Raises TypeError otherwise."""
        raise TypeError(f"{self.engine} runs the graph whole: no run_region")


# ---------------------------------------------------------------- onnxruntime

@dataclass(eq=False)
class _OrtSession(Session):
    _session: Any = field(repr=False)
    _run_options: Any = field(repr=False)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return list(self._session.run(None, dict(feeds), self._run_options))


def _ort_info(args: list[Any]) -> list[TensorInfo]:
    return [TensorInfo(a.name, _NP_TYPES.get(a.type), tuple(d if isinstance(d, int) and d > 0 else None
                                                            for d in a.shape)) for a in args]


def _ort_cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _open_ort(path: Path, device: str, threads: int, precision: str,
              choose: Callable[[dict[str, str], tuple[str, ...]], str], split: bool) -> _OrtSession:
    del choose, split  # onnxruntime runs the graph whole, in its own precision
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise DeviceError(
            f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDA provider "
            f"(it has {', '.join(available)}). Install the GPU build: "
            "pip uninstall -y onnxruntime && pip install onnxruntime-gpu, or use --device cpu.")
    providers = [_ORT_PROVIDERS[device]] + (["CPUExecutionProvider"] if device == "cuda" else [])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own untyped errors
        raise ModelLoadError(path, f"onnxruntime cannot load it: {e}") from e
    used = sess.get_providers()[0]
    if device == "cuda" and used != "CUDAExecutionProvider":
        raise DeviceError(f"--device cuda: onnxruntime fell back to {used} for {path} "
                          "(CUDA or cuDNN libraries missing or mismatched); fix the CUDA install or use --device cpu.")
    inputs = _ort_info(sess.get_inputs())
    own = "fp16" if inputs and inputs[0].dtype is np.float16 else "fp32"
    if precision not in ("auto", own):
        fix = {"bf16": "use --engine openvino for bf16 on the CPU",
               "fp16": "use the model's fp16 variant (cli.py export --variants fp16)",
               "fp32": "use the fp32 model"}[precision]
        raise EngineError(f"--engine onnxruntime runs {path.name} in its graph's own precision ({own}), not "
                          f"{precision}; {fix}, or --precision auto")
    run_options = None
    if used == "CPUExecutionProvider":
        # Tiles of several shapes (edge tiles are smaller) fragment onnxruntime's arena until it holds
        # ~2x one call's memory (measured: 909 vs 508 MiB for SRResNet-16 at 209 px); giving the arena's
        # free chunks back after each call keeps the peak at one call's, at no measurable speed cost.
        run_options = ort.RunOptions()
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return _OrtSession("onnxruntime", own, "cuda" if used == "CUDAExecutionProvider" else "cpu", used, inputs,
                       _ort_info(sess.get_outputs()), dict(sess.get_modelmeta().custom_metadata_map), sess,
                       run_options)


# ---------------------------------------------------------------- openvino

@dataclass(eq=False)
class _OvSession(Session):
    _request: Any = field(repr=False)
    #: (Split, body request, tail request, scale) for a split SR model, else None.
    _split: Any = field(repr=False, default=None)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if self._split is not None:
            (x,) = feeds.values()
            return [self.run_region(x, (0, x.shape[2], 0, x.shape[3]))]
        return _infer(self._request, *feeds.values())

    @property
    def regional(self) -> bool:
        """True when :meth:`run_region` can skip work outside the box (a split SR model)."""
        return self._split is not None

    def run_region(self, x: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The single output for the LR ``box`` of the single input ``x``; a split model runs its body
        on all of ``x`` and its tail on ``box`` only (:func:`runtime.split.run_split`)."""
        if self._split is None:
            raise TypeError("run_region needs a split SR model")
        split, body, tail, scale = self._split
        # The features stay in the body request's buffer (share_outputs): run_split is done with them
        # before the body runs again.
        return run_split(lambda a: _infer(body, a, share_outputs=True)[0], lambda a: _infer(tail, a)[0], x,
                         scale, split, box=box)


def _infer(request: Any, *arrays: np.ndarray, share_outputs: bool = False) -> list[np.ndarray]:
    # share_inputs: no copy of the (contiguous) input; outputs are copied out of the request's buffers
    # unless ``share_outputs`` (then they are views, valid until the request runs again).
    result = request.infer([np.ascontiguousarray(a) for a in arrays], share_inputs=True, share_outputs=share_outputs)
    return [result[i] for i in range(len(result))]


def _import_openvino() -> Any:
    """``import openvino``, without its model converter (``openvino.tools.ovc``).

    ``openvino/__init__`` imports the converter inside ``try/except ImportError`` only to offer
    ``openvino.convert_model``; the converter's import (its CLI parser, and its telemetry set-up)
    is ~0.1-0.2 s of every CLI run, and the runtime never converts (the CPU plugin reads ONNX
    itself). A ``None`` in ``sys.modules`` makes that one import fail fast, as the package
    allows; the entry is removed afterwards, so ``import openvino.tools.ovc`` still works.
    Raises ImportError when openvino is not installed.
    """
    import sys

    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    blocked = "openvino.tools.ovc" not in sys.modules
    if blocked:
        sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]
    try:
        import openvino
    finally:
        if blocked:
            del sys.modules["openvino.tools.ovc"]
    return openvino


def _ov_core() -> Any:
    return _import_openvino().Core()


def cpu_supports(precision: str) -> bool:
    """Whether OpenVINO's CPU plugin runs ``precision`` natively here (bf16: AVX-512 BF16 or AMX).

    False when openvino does not import."""
    try:
        caps = _ov_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except ImportError:
        return False
    return _OV_CAPABILITY[precision] in caps


def _ov_info(ports: list[Any]) -> list[TensorInfo]:
    ov = _import_openvino()

    types = {ov.Type.f32: np.float32, ov.Type.f16: np.float16}
    out = []
    for p in ports:
        shape = p.get_partial_shape()
        dims = tuple(d.get_length() if d.is_static else None for d in shape) if shape.rank.is_static else ()
        out.append(TensorInfo(p.get_any_name(), types.get(p.get_element_type()), dims))
    return out


def _ov_metadata(model: Any) -> dict[str, str]:
    """The ONNX ``metadata_props`` as OpenVINO's ONNX reader keeps them (rt_info ``framework``)."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    return {str(k): v.astype(str) for k, v in dict(info["framework"]).items()}


def _split_models(model: Any, split: Split) -> tuple[Any, Any] | None:
    """(body, tail) OpenVINO models cut at ``split.tensor``, or None if the graph has no such tensor.

    The body shares ``model``'s nodes (it only reads them); the tail is cut from a copy, whose
    features input replaces the cut tensor. ``model`` is left as it is."""
    ov = _import_openvino()

    def find(model: Any) -> Any:
        return next((o for op in model.get_ordered_ops() for o in op.outputs() if split.tensor in o.get_names()),
                    None)

    cut = find(model)
    if cut is None:
        return None
    body = ov.Model([cut], model.get_parameters(), "body")
    rest = model.clone()
    cut = find(rest)
    features = ov.opset13.parameter(cut.get_partial_shape(), cut.get_element_type(), name="features")
    for target in list(cut.get_target_inputs()):
        target.replace_source_output(features.output(0))
    return body, ov.Model(rest.get_results(), [features], "tail")


def _open_ov(path: Path, device: str, threads: int, precision: str,
             choose: Callable[[dict[str, str], tuple[str, ...]], str], split: bool) -> _OvSession:
    if device == "cuda":
        raise EngineError("--engine openvino runs on the CPU only here; use --engine onnxruntime for --device cuda")
    try:
        core = _ov_core()
    except ImportError:
        raise EngineError("--engine openvino: the openvino package does not import; "
                          "pip install openvino, or use --engine onnxruntime") from None
    try:
        model = core.read_model(str(path))
    except Exception as e:  # openvino raises its own untyped errors
        raise ModelLoadError(path, f"openvino cannot read it: {e}") from e
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    supported = tuple(p for p, cap in _OV_CAPABILITY.items() if cap in caps)
    metadata = _ov_metadata(model)
    chosen = choose(metadata, supported) if precision == "auto" else precision
    if chosen not in supported:
        raise EngineError(f"--precision {chosen}: this CPU's OpenVINO plugin supports "
                          f"{', '.join(supported)} only (bf16 needs AVX-512 BF16 or AMX); use --precision fp32")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _OV_PRECISION[chosen], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    cut = read_split(metadata) if split and metadata.get("scale", "").isdigit() else None
    parts = _split_models(model, cut) if cut is not None else None
    phase_tail(parts[1] if parts is not None else model)  # same function, cheaper last conv (runtime.rewrite)
    try:  # a split model runs as body + tail only: the whole graph is not compiled
        halves = None if parts is None or cut is None else \
            (cut, *(core.compile_model(m, "CPU", config).create_infer_request() for m in parts),
             int(metadata["scale"]))
        request = core.compile_model(model, "CPU", config).create_infer_request() if halves is None else None
    except Exception as e:  # openvino raises its own untyped errors
        raise ModelLoadError(path, f"openvino cannot compile it: {e}") from e
    if cut is not None and parts is None:
        log.warning("%s: metadata names the split tensor %r, which the graph lacks; running it whole",
                    path.name, cut.tensor)
    return _OvSession("openvino", chosen, "cpu", "OpenVINO CPU", _ov_info(model.inputs), _ov_info(model.outputs),
                      metadata, request, halves)


# ---------------------------------------------------------------- choice and gate

def _openvino_imports() -> bool:
    try:
        _import_openvino()
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class _EngineSpec:
    """How to tell whether an engine is usable here, and how to open a session with it."""

    available: Callable[[], bool]
    open: Callable[[Path, str, int, str, Callable[[dict[str, str], tuple[str, ...]], str], bool], Session]


#: The engines by name (the CLI's --engine choices are these plus ``auto``).
ENGINES: dict[str, _EngineSpec] = {
    "onnxruntime": _EngineSpec(lambda: True, _open_ort),
    "openvino": _EngineSpec(_openvino_imports, _open_ov),
}
ENGINE_CHOICES = ("auto", *ENGINES)
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


def resolve_engine(engine: str, device: str) -> tuple[str, str]:
    """(engine, device) for a request: ``auto`` engine = onnxruntime for CUDA (``device`` cuda, or auto
    with a CUDA provider present), else openvino when it imports, else onnxruntime; ``auto`` device =
    cuda for onnxruntime with a CUDA provider, else cpu. Raises EngineError for an unknown or
    unusable engine, ValueError for an unknown device."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if engine == "auto":
        cuda = device == "cuda" or (device == "auto" and _ort_cuda_available())
        engine = "onnxruntime" if cuda or not ENGINES["openvino"].available() else "openvino"
    if engine not in ENGINES:
        raise EngineError(f"engine must be one of {', '.join(ENGINE_CHOICES)}, got {engine!r}")
    if not ENGINES[engine].available():
        raise EngineError(f"--engine {engine}: the {engine} package does not import; pip install {engine}")
    if device == "auto":
        device = "cuda" if engine == "onnxruntime" and _ort_cuda_available() else "cpu"
    return engine, device


def bf16_gate(metadata: Mapping[str, str]) -> tuple[bool, str]:
    """Whether ``auto`` precision may use bf16 for a model, and why.

    ``metadata[GATE_KEY]`` is JSON with ``psnr_y_loss_db`` and ``lpips_loss`` (fp32 minus bf16
    PSNR-Y, bf16 minus fp32 LPIPS: positive = bf16 is worse), written by :mod:`runtime.precision`.
    bf16 is allowed when both are within :data:`GATE_MAX_PSNR_LOSS_DB` and :data:`GATE_MAX_LPIPS_LOSS`;
    a model without the record is refused (its loss was never measured).
    """
    if GATE_KEY not in metadata:
        return False, f"no {GATE_KEY} metadata (bf16 quality never measured; cli.py eval MODEL --record)"
    try:
        rec = json.loads(metadata[GATE_KEY])
        psnr, lp = float(rec["psnr_y_loss_db"]), float(rec["lpips_loss"])
    except (ValueError, KeyError, TypeError) as e:
        return False, f"unreadable {GATE_KEY} metadata ({e})"
    if psnr > GATE_MAX_PSNR_LOSS_DB or lp > GATE_MAX_LPIPS_LOSS or not (np.isfinite(psnr) and np.isfinite(lp)):
        return False, (f"bf16 loses {psnr:.4f} dB PSNR-Y and {lp:.4f} LPIPS (limits {GATE_MAX_PSNR_LOSS_DB} dB, "
                       f"{GATE_MAX_LPIPS_LOSS})")
    return True, f"bf16 loses {psnr:.4f} dB PSNR-Y and {lp:.4f} LPIPS (within the limits)"


def _auto_precision(path: Path, gated: bool) -> Callable[[dict[str, str], tuple[str, ...]], str]:
    def choose(metadata: dict[str, str], supported: tuple[str, ...]) -> str:
        if not gated or "bf16" not in supported:
            return "fp32"
        ok, why = bf16_gate(metadata)
        if not ok:
            log.info("%s: fp32, not bf16: %s", path.name, why)
        return "bf16" if ok else "fp32"
    return choose


def open_session(path: str | Path, *, engine: str = "auto", precision: str = "auto", device: str = "auto",
                 threads: int = 0, gated: bool = True, split: bool = False) -> Session:
    """Build the inference session for the ONNX file at ``path``: the one place sessions are made.

    ``engine``: ``auto`` / ``onnxruntime`` / ``openvino`` (:func:`resolve_engine`). ``precision``:
    ``auto`` / ``fp32`` / ``bf16`` / ``fp16``; ``auto`` picks bf16 only where supported and, when
    ``gated``, the model's metadata passes :func:`bf16_gate` (non-SR models such as LPIPS pass
    ``gated=False`` and get fp32). ``threads``: intra-op threads, 0 = the engine's default.
    ``split``: an SR model with a recorded body/tail cut (:mod:`runtime.split`) runs as body +
    tail sub-tiles on openvino (same function, a fraction of the memory per pixel).

    Raises :class:`ModelNotFoundError` (no file), :class:`ModelLoadError` (the engine cannot load it),
    :class:`DeviceError` (CUDA asked for and absent), :class:`EngineError` (an engine or precision
    that cannot be honoured), ValueError (bad ``device``/``threads``/``precision`` value).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(path, "model file not found")
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if precision not in PRECISION_CHOICES:
        raise EngineError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    engine, device = resolve_engine(engine, device)
    session = ENGINES[engine].open(path, device, threads, precision, _auto_precision(path, gated), split)
    log.info("%s runs on %s %s (%s)", path.name, session.engine, session.precision, session.provider)
    return session

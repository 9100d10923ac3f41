"""The SR model session (both engines): metadata, probing, input range, colour order, batch, devices, errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tiny_models import RADIUS

from srgan.runtime.errors import DeviceError, ModelLoadError, ModelNotFoundError
from srgan.runtime.session import DEFAULT_PAD, load_model

X = np.random.default_rng(3).random((2, 3, 11, 7), dtype=np.float32)
ENGINES = pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])


def test_reads_metadata(tiny, tiny_path: Path) -> None:
    assert (tiny.scale, tiny.receptive_radius, tiny.radius_known, tiny.input_range) == (4, RADIUS, True, "0-1")
    assert (tiny.engine, tiny.precision, tiny.provider) == ("openvino", "fp32", "OpenVINO CPU")
    assert load_model(tiny_path, engine="onnxruntime").provider == "CPUExecutionProvider"
    assert tiny.metadata["arch"] == "tiny" and tiny.max_batch is None
    y = tiny(X)
    assert y.dtype == np.float32 and y.shape == (2, 3, 44, 28)


@ENGINES
def test_without_metadata_probes_scale_and_uses_conservative_pad(model_dir: Path, tiny, caplog, engine: str) -> None:
    m = load_model(model_dir / "tiny_nometa.onnx", device="cpu", engine=engine)
    assert (m.scale, m.receptive_radius, m.radius_known) == (4, DEFAULT_PAD, False)
    assert "receptive_radius" in caplog.text
    np.testing.assert_allclose(m(X), tiny(X), atol=1e-6)


@ENGINES
def test_input_range_0_255_is_honoured(model_dir: Path, tiny, engine: str) -> None:
    m = load_model(model_dir / "tiny_255.onnx", device="cpu", engine=engine)
    assert m.input_range == "0-255"
    np.testing.assert_allclose(m(X), tiny(X), atol=1e-5)
    wrong = load_model(model_dir / "tiny_255.onnx", device="cpu", input_range="0-1", engine=engine)
    assert np.abs(wrong(X) - tiny(X)).max() > 0.1  # the control: the range matters


@ENGINES
def test_bgr_models_get_rgb_in_and_out(model_dir: Path, tiny, engine: str) -> None:
    m = load_model(model_dir / "tiny_bgr.onnx", device="cpu", engine=engine)
    np.testing.assert_allclose(m(X), tiny(X), atol=1e-6)


@ENGINES
def test_fixed_batch_of_one(model_dir: Path, tiny, engine: str) -> None:
    m = load_model(model_dir / "tiny_b1.onnx", device="cpu", engine=engine)
    assert m.max_batch == 1
    np.testing.assert_allclose(m(X[:1]), tiny(X[:1]), atol=1e-6)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="nope.onnx"):
        load_model(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="bad.onnx: openvino cannot read it"):
        load_model(bad)


@ENGINES
def test_two_input_model_is_rejected(tmp_path: Path, engine: str) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, "H", "W"]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3, "H", "W"])])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelLoadError, match="one input"):
        load_model(path, engine=engine)


def test_cuda_without_cuda_provider_is_an_error(tiny_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(DeviceError, match="--device cuda"):
        load_model(tiny_path, device="cuda")
    assert load_model(tiny_path, device="auto", engine="onnxruntime").provider == "CPUExecutionProvider"
    assert load_model(tiny_path, device="auto").provider == "OpenVINO CPU"


@pytest.mark.gpu
def test_cuda_runs_on_cuda(tiny_path: Path, tiny) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA provider in this onnxruntime")
    m = load_model(tiny_path, device="cuda")
    assert m.provider == "CUDAExecutionProvider"
    np.testing.assert_allclose(m(X), tiny(X), atol=1e-4)


def test_memory_per_pixel_from_metadata_else_an_estimate(tiny, tiny_path: Path, tmp_path: Path) -> None:
    import json

    import onnx

    assert tiny.bytes_per_pixel == 1024 * 16  # no memory_bytes_per_pixel metadata: 1 KiB x scale^2
    proto = onnx.load(str(tiny_path))
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                        "memory_bytes_per_pixel": "5000"})
    onnx.save(proto, str(tmp_path / "m.onnx"))
    assert load_model(tmp_path / "m.onnx", device="cpu", engine="onnxruntime").bytes_per_pixel == 5000
    assert load_model(tmp_path / "m.onnx", device="cpu", engine="openvino").bytes_per_pixel == 1024 * 16
    by_engine = {"openvino/fp32": 3000, "onnxruntime/fp32": 6000}
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                        "memory_bytes_per_pixel_by_engine": json.dumps(by_engine)})
    onnx.save(proto, str(tmp_path / "m2.onnx"))
    assert load_model(tmp_path / "m2.onnx", device="cpu", engine="openvino").bytes_per_pixel == 3000
    assert load_model(tmp_path / "m2.onnx", device="cpu", engine="onnxruntime").bytes_per_pixel == 6000


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the peak RSS")
def test_calls_of_several_shapes_peak_at_one_calls_memory() -> None:
    """Edge tiles are smaller than inner ones; onnxruntime's arena would fragment over such shapes and hold
    ~1.75x one call's memory (243 vs 139 MiB here). The session gives the free chunks back after each call."""
    import re

    from conftest import ROOT

    def kib(key: str) -> int:
        return int(re.search(key + r":\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))

    model = load_model(ROOT / "models" / "srresnet_x4.onnx", device="cpu", threads=1, engine="onnxruntime")
    base = kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    model(np.full((1, 3, 112, 112), 0.5, np.float32))
    one = kib("VmHWM") - base
    for h, w in [(92, 112), (112, 92), (92, 92), (112, 112), (112, 100), (100, 112)]:
        model(np.full((1, 3, h, w), 0.5, np.float32))
    assert kib("VmHWM") - base < 1.1 * one, (one, kib("VmHWM") - base)


FRAGMENT = """
import re, sys
import numpy as np
sys.path.insert(0, {root!r})
from srgan.runtime.session import release_freed_memory
if sys.argv[1] == "release":
    assert release_freed_memory()
rss = lambda: int(re.search(r"VmRSS:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) // 1024
x = np.ones(20 << 20, np.uint8); del x     # a large free: glibc raises its mmap threshold
base, keep = rss(), []
for i in range(40):                        # growing temporaries with small survivors above them
    t = np.ones((2 << 20) + i * (256 << 10), np.uint8)
    keep.append(np.ones(4096, np.uint8))
    del t
print(rss() - base)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or sys.platform != "linux", reason="glibc and /proc")
def test_release_freed_memory_stops_heap_growth(tmp_path: Path) -> None:
    from conftest import ROOT

    def retained(mode: str) -> int:
        code = FRAGMENT.format(root=str(ROOT))
        return int(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                  check=True).stdout.split()[-1])

    assert retained("default") >= 8  # MiB the heap keeps (the control: the pattern does fragment)
    assert retained("release") <= 1

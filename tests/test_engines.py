"""Engines (onnxruntime, OpenVINO): selection, errors, the one session factory, the bf16 gate, tiling."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ROOT, photo
from onnx import TensorProto, helper, numpy_helper

from srgan.runtime.engines import GATE_KEY, bf16_gate, cpu_supports, open_session, resolve_engine
from srgan.runtime.errors import EngineError, ModelLoadError
from srgan.runtime.precision import measure_bf16_loss, record_bf16_loss
from srgan.runtime.session import load_model
from srgan.runtime.tiler import upscale_tiled

X = np.random.default_rng(5).random((2, 3, 13, 9), dtype=np.float32)
needs_bf16 = pytest.mark.skipif(not cpu_supports("bf16"), reason="this CPU has no AVX-512 BF16 / AMX")


def _with_meta(src: Path, dst: Path, extra: dict[str, str]) -> Path:
    proto = onnx.load(str(src))
    helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **extra})
    onnx.save(proto, str(dst))
    return dst


def build_lossy_sr(path: Path, scale: int = 4, big: float = 1000.0) -> Path:
    """An x4 nearest-neighbour net that computes x as (big+1)x - big x: exact in fp32, while bf16
    (8 significant bits) rounds the ~1000-sized intermediates by whole units, i.e. destroys the image."""
    eye = np.eye(3, dtype=np.float32)[:, :, None, None]
    skip = np.zeros((3 * scale * scale, 3, 1, 1), np.float32)
    for ch in range(3):
        skip[ch * scale * scale:(ch + 1) * scale * scale, ch] = 1.0
    inits = [numpy_helper.from_array((big + 1) * eye, "wa"), numpy_helper.from_array(big * eye, "wb"),
             numpy_helper.from_array(skip, "skip")]
    nodes = [helper.make_node("Conv", ["lr", "wa"], ["a"]), helper.make_node("Conv", ["lr", "wb"], ["b"]),
             helper.make_node("Sub", ["a", "b"], ["x"]), helper.make_node("Conv", ["x", "skip"], ["y"]),
             helper.make_node("DepthToSpace", ["y"], ["sr"], blocksize=scale, mode="CRD")]
    graph = helper.make_graph(
        nodes, "lossy", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, "H4", "W4"])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(proto, {"scale": str(scale), "receptive_radius": "0", "input_range": "0-1"})
    onnx.save(proto, str(path))
    return path


# ---------------------------------------------------------------- selection and errors

def test_auto_is_openvino_on_cpu_and_both_engines_agree_in_fp32(tiny_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("auto picks onnxruntime CUDA on this machine")
    assert resolve_engine("auto", "auto") == ("openvino", "cpu")
    assert resolve_engine("auto", "cuda")[0] == "onnxruntime"
    auto = load_model(tiny_path, device="cpu", threads=1)
    ref = load_model(tiny_path, device="cpu", threads=1, engine="onnxruntime")
    assert (auto.engine, auto.precision, ref.engine, ref.precision) == ("openvino", "fp32", "onnxruntime", "fp32")
    assert auto.runs_on == "openvino fp32 on OpenVINO CPU"  # no gate record in the tiny model: fp32
    np.testing.assert_allclose(auto(X), ref(X), atol=1e-5)


def test_explicit_choices_that_cannot_be_honoured_are_errors(tiny_path: Path) -> None:
    with pytest.raises(EngineError, match="graph's own precision"):
        load_model(tiny_path, engine="onnxruntime", precision="bf16")
    with pytest.raises(EngineError, match="CPU only"):
        load_model(tiny_path, engine="openvino", device="cuda")
    with pytest.raises(EngineError, match="engine must be one of"):
        load_model(tiny_path, engine="tensorflow")
    with pytest.raises(EngineError, match="precision must be one of"):
        load_model(tiny_path, precision="int4")
    if not cpu_supports("fp16"):
        with pytest.raises(EngineError, match="supports fp32"):
            load_model(tiny_path, engine="openvino", precision="fp16")
    if not cpu_supports("bf16"):
        with pytest.raises(EngineError, match="bf16 needs"):
            load_model(tiny_path, engine="openvino", precision="bf16")


def test_broken_file_is_a_load_error_for_both_engines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    for engine in ("onnxruntime", "openvino"):
        with pytest.raises(ModelLoadError, match=f"bad.onnx: {engine} cannot"):
            load_model(bad, engine=engine)


@needs_bf16
def test_explicit_bf16_runs_and_differs_from_fp32_only_by_rounding(tiny_path: Path) -> None:
    fp32 = load_model(tiny_path, engine="openvino", precision="fp32", threads=1)
    bf16 = load_model(tiny_path, engine="openvino", precision="bf16", threads=1)
    assert bf16.precision == "bf16"
    d = np.abs(bf16(X) - fp32(X))
    assert 0 < d.max() < 0.02  # bf16 really ran (not fp32), and only rounding separates them


def test_one_session_factory() -> None:
    """Only runtime/engines.py builds onnxruntime InferenceSessions or OpenVINO compiled models for
    inference; onnxruntime sessions elsewhere only optimise or inspect graphs (export, FLOP counting)."""
    allowed = {"runtime/engines.py", "export/onnx_export.py", "runtime/bench.py"}
    offenders = []
    for part in ("runtime", "export", "trainer"):
        for f in sorted((ROOT / part).glob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in ("InferenceSession", "compile_model"):
                    if rel not in allowed or node.attr == "compile_model" and rel != "runtime/engines.py":
                        offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []
    lp = ROOT / "models" / "lpips_alex.onnx"
    if lp.is_file():
        from srgan.runtime.lpips import load_lpips

        assert load_lpips(lp)._session.engine == "onnxruntime"


def test_open_session_reads_metadata_the_same_through_both_engines(tiny_path: Path) -> None:
    a = open_session(tiny_path, engine="onnxruntime", device="cpu")
    b = open_session(tiny_path, engine="openvino", device="cpu")
    assert a.metadata == b.metadata and a.metadata["scale"] == "4"
    assert [i.name for i in a.inputs] == [i.name for i in b.inputs] == ["lr"]
    assert a.inputs[0].shape == b.inputs[0].shape == (None, 3, None, None)


# ---------------------------------------------------------------- the bf16 gate

def test_gate_reads_the_record() -> None:
    ok = {GATE_KEY: json.dumps({"psnr_y_loss_db": 0.004, "lpips_loss": 0.0001})}
    assert bf16_gate(ok)[0]
    assert not bf16_gate({GATE_KEY: json.dumps({"psnr_y_loss_db": 0.02, "lpips_loss": 0.0})})[0]
    assert not bf16_gate({GATE_KEY: json.dumps({"psnr_y_loss_db": 0.0, "lpips_loss": 0.003})})[0]
    assert not bf16_gate({GATE_KEY: json.dumps({"psnr_y_loss_db": 0.0, "lpips_loss": float("nan")})})[0]
    assert not bf16_gate({})[0] and "never measured" in bf16_gate({})[1]


@needs_bf16
def test_gate_refuses_a_model_that_loses_quality_in_bf16(tmp_path: Path, tiny_path: Path, shared: Path) -> None:
    set5 = [shared / "data" / "Set5"]
    lossy = build_lossy_sr(tmp_path / "lossy.onnx")
    loss = measure_bf16_loss(lossy, set5)
    assert loss["psnr_y_loss_db"] > 1.0 and not loss["allowed"], loss
    record_bf16_loss(lossy, loss)
    assert load_model(lossy).precision == "fp32"  # auto: refused by the gate
    assert load_model(lossy, precision="bf16").precision == "bf16"  # an explicit choice is the user's

    good = _with_meta(tiny_path, tmp_path / "good.onnx", {})
    loss = measure_bf16_loss(good, set5, lpips=lambda a, b: float(np.abs(a.astype(float) - b).mean() / 255))
    assert abs(loss["psnr_y_loss_db"]) <= 0.01 and loss["allowed"], loss
    record_bf16_loss(good, loss)
    assert load_model(good).precision == "bf16"  # the control: a model that keeps quality gets bf16


# ---------------------------------------------------------------- tiling

@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_fp32_tiled_equals_whole(engine: str, tiny_path: Path) -> None:
    m = load_model(tiny_path, engine=engine, precision="fp32", threads=1)
    img = photo(37, 53)
    whole = upscale_tiled(img, m, m.scale, tile=0, pad=m.receptive_radius)
    for tile in (8, 13, 20):
        tiled = upscale_tiled(img, m, m.scale, tile=tile, pad=m.receptive_radius)
        assert np.abs(tiled - whole).max() < 1e-5, (engine, tile)


#: bf16 tiled vs whole, SRResNet on Set14 crops: at most this many 8-bit levels apart anywhere, and this many
#: on average. Measured 0 and 0 at tiles 24-96 (benchmarks/bench_bf16_tiles.py, RESULTS.md): each output
#: value is accumulated in the same order whatever the tile, so only a rounding flip is allowed for.
BF16_TILE_MAX_LEVELS = 1
BF16_TILE_MEAN_LEVELS = 0.001


@needs_bf16
def test_bf16_tiled_stays_within_a_bound_of_whole(shared: Path) -> None:
    from srgan.runtime.imageio import read_image

    m = load_model(ROOT / "models" / "srresnet_x4.onnx", engine="openvino", precision="bf16", threads=2)
    img = read_image(shared / "data" / "Set14" / "LR_bicubic_x4" / "baboon.png").pixels[:72, :96, :3]
    whole = upscale_tiled(img, m, m.scale, tile=0, pad=m.receptive_radius, out=np.empty((288, 384, 3), np.uint8))
    for tile in (24, 48):
        tiled = upscale_tiled(img, m, m.scale, tile=tile, pad=m.receptive_radius,
                              out=np.empty_like(whole))
        d = np.abs(tiled.astype(int) - whole)
        assert d.max() <= BF16_TILE_MAX_LEVELS and d.mean() <= BF16_TILE_MEAN_LEVELS, (tile, d.max(), d.mean())


# ---------------------------------------------------------------- the CLI

def _cli(*args: object):
    from typer.testing import CliRunner

    from srgan import cli

    return CliRunner().invoke(cli.app, [str(a) for a in args])


def test_cli_says_which_engine_and_refuses_what_cannot_run(tiny_path: Path, tmp_path: Path) -> None:
    from srgan.runtime.imageio import read_image, write_image

    src = tmp_path / "in" / "a.png"
    src.parent.mkdir()
    write_image(src, photo(20, 24))
    r = _cli("upscale", src.parent, "-o", tmp_path / "ort", "-m", tiny_path, "--engine", "onnxruntime",
             "--precision", "fp32")
    assert r.exit_code == 0, r.output
    assert "tiny_x4.onnx: onnxruntime fp32 on CPUExecutionProvider" in r.output
    r = _cli("upscale", src.parent, "-o", tmp_path / "ov", "-m", tiny_path, "--engine", "openvino")
    assert r.exit_code == 0 and "tiny_x4.onnx: openvino fp32 on OpenVINO CPU" in r.output, r.output
    a, b = read_image(tmp_path / "ort" / "a.png").pixels, read_image(tmp_path / "ov" / "a.png").pixels
    assert np.abs(a.astype(int) - b).max() <= 1  # the same model through both engines

    r = _cli("upscale", src.parent, "-o", tmp_path / "bad", "-m", tiny_path, "--engine", "onnxruntime",
             "--precision", "bf16")
    assert r.exit_code == 2 and "graph's own precision" in r.output
    assert not (tmp_path / "bad" / "a.png").exists()
    r = _cli("upscale", src.parent, "-o", tmp_path / "bad", "-m", tiny_path, "--engine", "tensorflow")
    assert r.exit_code == 2


# ---------------------------------------------------------------- body/tail split

def test_find_split_cuts_srresnet_before_its_upsampling_tail() -> None:
    from srgan.runtime.split import find_split

    cut = find_split(onnx.load(str(ROOT / "models" / "srresnet_x4.onnx")))
    assert cut is not None and cut.channels == 64 and 3 <= cut.tail_radius <= 5  # conv3 LR, conv3 2x, conv9 4x


def _split_copy(src: Path, dst: Path) -> Path:
    from srgan.runtime.split import SPLIT_KEY, find_split

    cut = find_split(onnx.load(str(src)))
    assert cut is not None
    return _with_meta(src, dst, {SPLIT_KEY: json.dumps(cut.__dict__)})


def test_split_model_equals_whole_model_in_fp32_also_tiled(tmp_path: Path) -> None:
    """SRResNet cut into body + tail sub-tiles computes the same as the whole graph, and tiles of it equal
    the whole image (the tail is asked for each core only)."""
    src = ROOT / "models" / "srresnet_x4.onnx"
    split_path = _split_copy(src, tmp_path / "split.onnx")
    whole = load_model(src, engine="onnxruntime", threads=2)
    split = load_model(split_path, engine="openvino", precision="fp32", threads=2)
    assert split._session._split is not None
    x = np.random.default_rng(1).random((1, 3, 30, 41), dtype=np.float32)
    np.testing.assert_allclose(split(x), whole(x), atol=2e-5)
    np.testing.assert_allclose(split.upscale_region(x, (3, 20, 5, 33)), whole(x)[:, :, 12:80, 20:132], atol=2e-5)
    img = photo(30, 41)
    ref = upscale_tiled(img, split, 4, tile=0, pad=split.receptive_radius)
    tiled = upscale_tiled(img, split, 4, tile=13, pad=split.receptive_radius)
    assert np.abs(tiled - ref).max() < 1e-5


def test_engine_matmul_peaks_are_measured() -> None:
    from srgan.runtime.bench import engine_matmul_gflops

    pairs = [("onnxruntime", "fp32"), ("openvino", "fp32")] + ([("openvino", "bf16")] if cpu_supports("bf16") else [])
    for engine, precision in pairs:
        assert 0.1 < engine_matmul_gflops(engine, precision, 1, n=256, runs=3) < 1e5
    with pytest.raises(EngineError):
        engine_matmul_gflops("onnxruntime", "bf16", 1, n=64)


# ---------------------------------------------------------------- the phase-tail rewrite

def _shuffle_then_conv(path: Path, *, s: int, mode: str, k: int, out: int = 3, channels: int = 5,
                       stride: int = 1) -> Path:
    """lr -> Conv1x1(3 -> s*s*C) -> DepthToSpace(s, mode) -> PRelu(C slopes) -> Conv(k x k, C -> out) + bias."""
    rng = np.random.default_rng(k + s)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (s * s * channels, 3, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.uniform(-0.5, 0.5, (channels, 1, 1)).astype(np.float32), "slope"),
             numpy_helper.from_array(rng.normal(0, 0.2, (out, channels, k, k)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.1, out).astype(np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["lr", "w1"], ["a"]),
             helper.make_node("DepthToSpace", ["a"], ["b"], blocksize=s, mode=mode),
             helper.make_node("PRelu", ["b", "slope"], ["c"]),
             helper.make_node("Conv", ["c", "w2", "b2"], ["sr"], pads=[k // 2] * 4, strides=[stride] * 2)]
    graph = helper.make_graph(nodes, "tail", [helper.make_tensor_value_info("lr", TensorProto.FLOAT,
                                                                            ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize(("s", "mode", "k"), [(2, "CRD", 9), (2, "DCR", 9), (2, "CRD", 3), (3, "CRD", 5),
                                              (2, "CRD", 1)])
def test_phase_tail_rewrite_keeps_the_function(tmp_path: Path, s: int, mode: str, k: int) -> None:
    """The last conv moved before the pixel shuffle computes the same image (fp32, vs onnxruntime on the
    original graph), at the border too, for either DepthToSpace order, several block sizes and kernels."""
    import onnxruntime as ort
    import openvino as ov

    from srgan.runtime.rewrite import phase_tail

    path = _shuffle_then_conv(tmp_path / "m.onnx", s=s, mode=mode, k=k)
    x = np.random.default_rng(2).random((1, 3, 11, 7), dtype=np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]
    core = ov.Core()
    model = core.read_model(str(path))
    assert phase_tail(model)
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    assert [tuple(op.get_output_partial_shape(0)[1:2].to_shape()) for op in convs][-1] == (3 * s * s,)
    got = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request().infer([x])[0]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_phase_tail_leaves_other_graphs_alone(tmp_path: Path) -> None:
    import openvino as ov

    from srgan.runtime.rewrite import phase_tail

    core = ov.Core()
    for path in (_shuffle_then_conv(tmp_path / "stride.onnx", s=2, mode="CRD", k=3, stride=2),
                 _shuffle_then_conv(tmp_path / "wide.onnx", s=2, mode="CRD", k=3, out=16),
                 ROOT / "models" / "fast_psnr_x4.onnx", ROOT / "models" / "srcnn_x4.onnx"):
        assert not phase_tail(core.read_model(str(path))), path.name


def test_openvino_session_skips_the_converter_import_but_leaves_it_importable() -> None:
    """The runtime imports openvino without its model converter (openvino.tools.ovc: ~0.1-0.2 s and a
    telemetry set-up per CLI run), and a caller can still import the converter afterwards."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from srgan.runtime.engines import open_session\n"
            f"s = open_session({str(ROOT / 'models' / 'srcnn_x4.onnx')!r}, engine='openvino', precision='fp32', "
            "threads=1)\n"
            "print(s.engine, 'openvino.tools.ovc' in sys.modules)\n"
            "import openvino.tools.ovc\n"
            "print(callable(openvino.tools.ovc.convert_model))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["openvino", "False", "True"], out.stderr

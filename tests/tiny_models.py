"""Tiny real ONNX SR models built with onnx.helper, for tests (no torch, no downloads).

The net is conv3x3(3->hidden) -> ReLU -> conv3x3(hidden->3*s*s), plus a 1x1
"nearest" skip, then DepthToSpace(s): a nearest-neighbour upscale plus a small
learned-looking residual. Its receptive radius is 2 LR pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RADIUS = 2


def build_tiny_sr(path: Path, *, scale: int = 4, hidden: int = 8, seed: int = 0, metadata: bool = True,
                  input_range: str = "0-1", fixed_batch: bool = False, color_order: str = "RGB") -> Path:
    """Write the model to ``path`` and return it. ``input_range='0-255'`` wraps the same net
    so it takes and returns 0-255 values (same function of the image as the 0-1 model)."""
    rng = np.random.default_rng(seed)
    c = 3 * scale * scale
    w1 = rng.normal(0, 0.3, (hidden, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.05, hidden).astype(np.float32)
    w2 = rng.normal(0, 0.01, (c, hidden, 3, 3)).astype(np.float32)
    b2 = np.zeros(c, np.float32)
    skip = np.zeros((c, 3, 1, 1), np.float32)
    for ch in range(3):
        skip[ch * scale * scale:(ch + 1) * scale * scale, ch] = 1.0
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (skip, "skip"))]
    nodes = []
    x = "lr"
    if input_range == "0-255":
        inits.append(numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"))
        inits.append(numpy_helper.from_array(np.array(255, np.float32), "k255"))
        nodes.append(helper.make_node("Mul", ["lr", "inv255"], ["x01"]))
        x = "x01"
    if color_order == "BGR":  # the net is the RGB one; flip channels in and out
        inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), "flip"))
        nodes.append(helper.make_node("Gather", [x, "flip"], ["xrgb"], axis=1))
        x = "xrgb"
    nodes += [
        helper.make_node("Conv", [x, "w1", "b1"], ["h1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["r"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", [x, "skip"], ["k"]),
        helper.make_node("Add", ["r", "k"], ["y"]),
        helper.make_node("DepthToSpace", ["y"], ["d"], blocksize=scale, mode="CRD"),
    ]
    out = "d"
    if color_order == "BGR":
        nodes.append(helper.make_node("Gather", [out, "flip"], ["dbgr"], axis=1))
        out = "dbgr"
    if input_range == "0-255":
        nodes.append(helper.make_node("Mul", [out, "k255"], ["sr"]))
    else:
        nodes.append(helper.make_node("Identity", [out], ["sr"]))
    n = 1 if fixed_batch else "N"
    graph = helper.make_graph(
        nodes, "tiny_sr",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, [n, 3, "H", "W"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, [n, 3, "HS", "WS"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, {"scale": str(scale), "receptive_radius": str(RADIUS),
                                       "input_range": input_range, "color_order": color_order, "arch": "tiny"})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path

"""Graph rewrites the openvino engine applies when it loads a model: the same function, cheaper kernels.

:func:`phase_tail`: an SR network that ends ``DepthToSpace(s) -> PReLU -> Conv(k x k, C -> O)``
with few output channels (SRResNet's 9x9 conv from 64 features to RGB at full resolution) spends
a third of its bf16 time in that last conv, because a 3-channel output fills 3 of the 16 lanes of
an AVX-512 register. The conv is moved in front of the pixel shuffle: on the s x s phases of
the shuffled image it is a ``(2R+1) x (2R+1)`` conv, ``R = ceil(k // 2 / s)``, from ``s*s*C`` to
``s*s*O`` channels at the lower resolution, followed by the shuffle; the PReLU moves with it (one
slope per channel, repeated over the phases). Every output value is the same sum of the same
products (the new kernel holds the old taps, and zeros where a phase's window does not reach), so
the output equals the original graph up to float summation order; zero padding at the border maps
to zero padding, since the shuffled image is exactly ``s`` times the phase grid. Measured on
``srresnet_x4`` (128 x 128 LR, 2 threads, AMD EPYC Zen 4): OpenVINO bf16 0.297 -> 0.214 s, fp32
0.622 -> 0.393 s (RESULTS.md).

The rewrite touches nothing else: a graph without that exact ending, or with anything unexpected
(strides, dilations, asymmetric pads, non-constant weights, a PReLU slope that is not per
channel), is left as it is.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

__all__ = ["phase_kernel", "phase_tail"]

log = logging.getLogger(__name__)

#: Rewrite only convs with fewer output channels than this (an AVX-512 register holds 16 fp32 lanes).
_MAX_OUT_CHANNELS = 16


def _channel(c: int, i: int, j: int, channels: int, s: int, mode: str) -> int:
    """Input channel of DepthToSpace(s) feeding output channel ``c`` at sub-pixel (i, j)."""
    return c * s * s + i * s + j if mode == "depth_first" else (i * s + j) * channels + c


def phase_kernel(weight: np.ndarray, s: int, mode: str = "depth_first") -> np.ndarray:
    """The conv kernel on the phase grid equal to ``weight`` (O, C, k, k; k odd, 'same' padding) on
    the image shuffled by DepthToSpace(``s``, ``mode``) from the phase grid.

    Returns (s*s*O, s*s*C, 2R+1, 2R+1), R = ceil((k // 2) / s); output channel
    ``o*s*s + p*s + q`` is output channel ``o`` at sub-pixel (p, q) (depth_first order)."""
    out_ch, channels, k, _ = weight.shape
    r = k // 2
    big_r = math.ceil(r / s)
    size = 2 * big_r + 1
    new = np.zeros((out_ch * s * s, channels * s * s, size, size), weight.dtype)
    for p in range(s):
        for q in range(s):
            for i in range(s):
                for j in range(s):
                    ins = [_channel(c, i, j, channels, s, mode) for c in range(channels)]
                    for a in range(-big_r, big_r + 1):
                        for b in range(-big_r, big_r + 1):
                            dy, dx = s * a + i - p, s * b + j - q
                            if abs(dy) <= r and abs(dx) <= r:
                                rows = [o * s * s + p * s + q for o in range(out_ch)]
                                new[np.ix_(rows, ins, [a + big_r], [b + big_r])] = \
                                    weight[:, :, dy + r, dx + r][:, :, None, None]
    return new


def _const(node: Any) -> np.ndarray | None:
    return np.array(node.get_data()) if node.get_type_name() == "Constant" else None


def _source(port: Any) -> Any:
    return port.get_source_output().get_node()


def phase_tail(model: Any) -> bool:
    """Rewrite ``model`` (an ``openvino.Model``) in place as described in the module docstring.

    Returns True when the pattern was found and rewritten, False when the model is left as it is."""
    import openvino as ov
    from openvino import passes

    manager = passes.Manager()
    manager.register_pass(passes.ConstantFolding())  # ONNX biases arrive behind a shape subgraph
    manager.run_passes(model)
    results = model.get_results()
    if len(results) != 1:
        return False
    result = results[0]
    node = _source(result.input(0))
    bias = None
    if node.get_type_name() == "Add":
        bias = _const(_source(node.input(1)))
        node = _source(node.input(0))
    if node.get_type_name() != "Convolution":
        return False
    conv = node
    weight = _const(_source(conv.input(1)))
    prelu = _source(conv.input(0))
    if weight is None or weight.ndim != 4 or prelu.get_type_name() != "PRelu":
        return False
    out_ch, channels, k, k2 = weight.shape
    attrs = conv.get_attributes()
    if (k != k2 or k % 2 == 0 or out_ch >= _MAX_OUT_CHANNELS or list(attrs["strides"]) != [1, 1]
            or list(attrs["dilations"]) != [1, 1] or list(attrs["pads_begin"]) != [k // 2] * 2
            or list(attrs["pads_end"]) != [k // 2] * 2):
        return False
    if bias is not None and bias.size != out_ch:
        return False
    slope = _const(_source(prelu.input(1)))
    d2s = _source(prelu.input(0))
    if slope is None or slope.size not in (1, channels) or d2s.get_type_name() != "DepthToSpace":
        return False
    d2s_attrs = d2s.get_attributes()
    s, mode = int(d2s_attrs["block_size"]), str(d2s_attrs["mode"])
    if mode not in ("depth_first", "blocks_first"):
        return False
    features = d2s.input(0).get_source_output()

    opset = ov.opset13
    slopes = slope.reshape(-1).astype(np.float32)
    if slopes.size == channels:  # one slope per phase-grid channel, in DepthToSpace's channel order
        per = np.empty(channels * s * s, np.float32)
        for c in range(channels):
            for i in range(s):
                for j in range(s):
                    per[_channel(c, i, j, channels, s, mode)] = slopes[c]
        slopes = per
    act = opset.prelu(features, opset.constant(slopes.reshape(1, -1, 1, 1)))
    kernel = phase_kernel(weight.astype(np.float32), s, mode)
    pad = kernel.shape[-1] // 2
    out = opset.convolution(act, opset.constant(kernel), [1, 1], [pad, pad], [pad, pad], [1, 1])
    if bias is not None:
        out = opset.add(out, opset.constant(np.repeat(bias.reshape(-1).astype(np.float32), s * s)
                                            .reshape(1, -1, 1, 1)))
    out = opset.depth_to_space(out, "depth_first", s)
    names = result.input(0).get_source_output().get_names()
    result.input(0).replace_source_output(out.output(0))
    out.output(0).get_tensor().set_names(names)
    model.validate_nodes_and_infer_types()
    log.debug("phase_tail: %dx%d conv %d->%d moved before DepthToSpace(%d)", k, k, channels, out_ch, s)
    return True

"""Body/tail split of an SR network, so one inference call costs little memory per pixel.

An SR net spends most of its memory in the upsampling *tail* (64 channels at 2x and 4x
resolution: ~8 KiB per LR pixel in fp32) and most of its receptive radius in the
low-resolution *body* (SRResNet: 37 of 40 LR px). Cutting the graph at the last
low-resolution tensor that everything downstream depends on gives a body that is cheap
per pixel and a tail whose receptive radius is a few pixels. One call then runs the
body on the whole input and the tail on sub-tiles of the body's features, each grown
by the tail's radius and clipped at the border (as :mod:`runtime.tiler` does for
images), so the result equals the whole network on the input (fp32: up to float
rounding) while memory is the body's plus one tail sub-tile's. The tiler can then use
much larger tiles within the same ``--max-memory``, and larger tiles repeat less of
the body's 37-px context.

:func:`find_split` (needs the ``onnx`` package; run when a model's engine facts are
recorded) finds the cut and proves the tail local; the runtime reads the result from
the metadata key :data:`SPLIT_KEY` and needs nothing but OpenVINO.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SPLIT_KEY", "TAIL_TILE", "Split", "find_split", "read_split", "run_split"]

#: Metadata key: JSON ``{"tensor": name, "tail_radius": LR px, "channels": n}``.
SPLIT_KEY = "split_body_tail"
#: Tail sub-tile side in LR pixels: ~0.1-0.25 GiB per call at x4, and (166/160)^2 = 1.08x repeated work.
TAIL_TILE = 160
#: Tails with a larger receptive radius than this are not worth splitting off.
_MAX_TAIL_RADIUS = 8
#: Ops a tail may hold: each output pixel depends on a bounded neighbourhood (Conv: stride 1).
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "PRelu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Identity",
                "Elu", "HardSigmoid", "Neg", "Abs"}


@dataclass(frozen=True)
class Split:
    """Where to cut: the ONNX tensor ``tensor`` (the body's output, ``channels`` wide, at LR resolution),
    and ``tail_radius``: LR pixels of features the tail needs around each output pixel's LR position."""

    tensor: str
    tail_radius: int
    channels: int


def read_split(metadata: Mapping[str, str]) -> Split | None:
    """The recorded split, or None when there is none (or it is unreadable: then the model runs whole)."""
    try:
        d = json.loads(metadata[SPLIT_KEY])
        return Split(str(d["tensor"]), int(d["tail_radius"]), int(d["channels"]))
    except (KeyError, ValueError, TypeError):
        return None


def find_split(proto: Any) -> Split | None:
    """The best body/tail cut of an ONNX SR graph (``onnx.ModelProto``), or None.

    A cut is a tensor at input resolution that is, after its node, the only live value
    (so the tail needs nothing else from the body), with a tail of local ops only (Conv
    with stride 1, DepthToSpace, element-wise) whose radius is at most 8 LR px. Among
    cuts, the one with the fewest channels wins (then the latest). The tail radius is a
    proven upper bound: each Conv at resolution factor f adds ceil(half-kernel x dilation / f)
    LR px along the longest path, plus 1 for the final rounding to LR positions.
    """
    g = proto.graph
    consts = {i.name: i for i in g.initializer}
    consts.update({n.output[0]: None for n in g.node if n.op_type == "Constant"})
    nodes = [n for n in g.node if n.op_type != "Constant"]
    if len(g.input) - sum(i.name in consts for i in g.input) != 1 or len(g.output) != 1:
        return None
    source, sink = next(i.name for i in g.input if i.name not in consts), g.output[0].name
    last_use = {source: -1}
    for idx, n in enumerate(nodes):
        for t in n.input:
            if t and t not in consts:
                last_use[t] = idx
    factor, channels = {source: 1}, {source: 3}
    best: tuple[int, int, Split] | None = None
    produced = [source]
    for idx, n in enumerate(nodes):
        _shapes(n, consts, factor, channels)
        produced += [t for t in n.output if t]
        live = [t for t in produced if last_use.get(t, -1) > idx or t == sink]
        if len(live) != 1 or factor.get(live[0]) != 1 or live[0] == sink:
            continue
        radius = _tail_radius(nodes[idx + 1:], live[0], sink, consts, factor, channels)
        if radius is None or radius > _MAX_TAIL_RADIUS:
            continue
        key = (channels[live[0]], -idx)
        if best is None or key < best[:2]:
            best = (*key, Split(live[0], radius, channels[live[0]]))
    return None if best is None else best[2]


def _attr(node: Any, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else a.i
    return default


def _shapes(node: Any, consts: dict[str, Any], factor: dict[str, int], channels: dict[str, int]) -> bool:
    """Propagate resolution factor and channel count through a local op; False for any other op."""
    data = [t for t in node.input if t and t not in consts]
    if not data or any(t not in factor for t in data):
        return False
    f, c = max(factor[t] for t in data), channels[data[0]]
    if node.op_type == "Conv":
        w = consts.get(node.input[1])
        if w is None or any(s != 1 for s in _attr(node, "strides", [1, 1])):
            return False
        c = int(w.dims[0])
    elif node.op_type == "DepthToSpace":
        b = int(_attr(node, "blocksize", 1))
        f, c = f * b, c // (b * b)
    elif node.op_type not in _ELEMENTWISE:
        return False
    factor[node.output[0]], channels[node.output[0]] = f, c
    return True


def _tail_radius(tail: list[Any], cut: str, sink: str, consts: dict[str, Any], factor: dict[str, int],
                 channels: dict[str, int]) -> int | None:
    """Receptive radius (LR px) of the ``tail`` nodes from the tensor ``cut``; None if a node is not local
    or reads a body tensor other than ``cut``."""
    reach: dict[str, float] = {cut: 0.0}
    f2, c2 = dict(factor), dict(channels)
    for n in tail:
        data = [t for t in n.input if t and t not in consts]
        if any(t not in reach for t in data) or not _shapes(n, consts, f2, c2):
            return None
        r = max(reach[t] for t in data)
        if n.op_type == "Conv":
            w = consts[n.input[1]]
            dil = _attr(n, "dilations", [1, 1])
            half = max((int(k) - 1) // 2 * int(d) for k, d in zip(w.dims[2:], dil, strict=False))
            r += math.ceil(half / f2[data[0]])
        reach[n.output[0]] = r
    return int(math.ceil(reach[sink])) + 1 if sink in reach else None


def run_split(body: Any, tail: Any, x: np.ndarray, scale: int, split: Split, tile: int = TAIL_TILE, *,
              box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The whole network on ``x`` (N, 3, h, w): ``body(x)`` once, then ``tail`` on sub-tiles of the features.

    ``body``/``tail``: callables array -> array (float32 NCHW). ``box``: (y0, y1, x0, x1), the LR region
    whose output is wanted (default all of ``x``); tail sub-tiles cover it, taking their context from
    the features around it. Returns float32 (N, 3, (y1-y0)*scale, (x1-x0)*scale).
    """
    from .tiler import plan_tiles

    feats = body(x)
    n, _, h, w = feats.shape
    by0, by1, bx0, bx1 = (0, h, 0, w) if box is None else box
    if not (0 <= by0 < by1 <= h and 0 <= bx0 < bx1 <= w):
        raise ValueError(f"box {box} is not inside the {h}x{w} input")
    r = split.tail_radius
    out: np.ndarray | None = None
    for t in plan_tiles(by1 - by0, bx1 - bx0, tile, 0):
        y0, y1, x0, x1 = (t.core[0] + by0, t.core[1] + by0, t.core[2] + bx0, t.core[3] + bx0)
        cy0, cy1, cx0, cx1 = max(0, y0 - r), min(h, y1 + r), max(0, x0 - r), min(w, x1 + r)
        y = tail(np.ascontiguousarray(feats[:, :, cy0:cy1, cx0:cx1]))
        if out is None:
            out = np.empty((n, y.shape[1], (by1 - by0) * scale, (bx1 - bx0) * scale), np.float32)
        oy, ox = (y0 - cy0) * scale, (x0 - cx0) * scale
        out[:, :, (y0 - by0) * scale:(y1 - by0) * scale, (x0 - bx0) * scale:(x1 - bx0) * scale] = \
            y[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    if out is None:  # plan_tiles always returns at least one tile
        raise ValueError("no tiles planned")
    return out

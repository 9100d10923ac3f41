"""Self-describing, atomically written checkpoints.

A checkpoint is a plain dict loadable with ``torch.load(weights_only=True)``:
format version, arch and hyperparameters, G (and EMA of G) state, D state,
optimizer and scheduler states, step, phase, the resolved config, and RNG
states. A generator-only file (what ships in git to continue training) has the
same layout with the training-only entries absent. ``load_checkpoint`` also takes one of this
toolkit's ONNX exports (``models/NAME.onnx``) and rebuilds that layout from its weights, so a
shipped model whose ``.pt`` is not in git can still be fine-tuned (``cli.py train --init``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from srgan.runtime.errors import SRGANError
from srgan.runtime.files import file_sha256
from srgan.runtime.imageio import atomic_write

from .models import build_generator

__all__ = ["FORMAT_VERSION", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "checkpoint_from_onnx", "generator_weights", "generator_from_checkpoint", "average_generators",
           "file_sha256", "lineage"]

FORMAT_VERSION = 1


class CheckpointError(SRGANError):
    """Raised if a checkpoint file is missing, unreadable, or not one of ours."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (:func:`srgan.runtime.imageio.atomic_write`: temp file in
    the same folder, fsync, rename). A crash at any point leaves either the old file or the new one,
    never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        torch.save(state, fh)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only), or rebuild a generator file from one of our ONNX
    exports (:func:`checkpoint_from_onnx`). Raises CheckpointError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix.lower() == ".onnx":
        return checkpoint_from_onnx(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION or "arch" not in state:
        raise CheckpointError(
            f"{path} is not a checkpoint of this trainer (format_version {FORMAT_VERSION} with 'arch' expected)"
        )
    return state


def checkpoint_from_onnx(path: Path, tolerance: float = 1e-4) -> dict[str, Any]:
    """The generator-file layout of one of this toolkit's ONNX exports: its ``arch`` and ``hparams``
    metadata rebuild the network and its initializers fill it. The exporter keeps parameter names
    except where it folds a tensor into a constant (PReLU slopes become ``val_N``); those are
    filled in the order the graph first uses them, matched by size. The result is proven, not
    assumed: the rebuilt network and the ONNX graph (the runtime's onnxruntime fp32 CPU session) must
    agree within ``tolerance`` on a seeded input, else CheckpointError. ``g_ema`` is None (the export holds the
    weights it was made from, usually an EMA); ``step`` is the card's ``train_steps``;
    ``from_onnx`` records the file, its sha256 and the measured difference."""
    import json

    import numpy as np
    import onnx
    from onnx import numpy_helper

    from srgan.runtime.engines import open_session

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several types for a bad file
        raise CheckpointError(f"cannot read ONNX file {path}: {exc}") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if "arch" not in meta or "hparams" not in meta:
        raise CheckpointError(f"{path} has no 'arch'/'hparams' metadata: only ONNX files exported by this "
                              "toolkit (cli.py export, models/NAME.onnx) can be turned back into a generator")
    arch, hparams = meta["arch"], json.loads(meta["hparams"])
    model = build_generator(arch, **hparams).eval()
    own = model.state_dict()
    arrays = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    weights = {k: torch.from_numpy(arrays.pop(k).copy()) for k in list(own)
               if k in arrays and arrays[k].shape == tuple(own[k].shape)}
    unnamed = iter(dict.fromkeys(n for node in proto.graph.node for n in node.input if n in arrays))
    for key in [k for k in own if k not in weights]:
        name = next((n for n in unnamed if arrays[n].size == own[key].numel()), None)
        if name is None:
            raise CheckpointError(f"{path}: no tensor of the graph fits {arch} parameter {key!r} "
                                  f"({tuple(own[key].shape)}): BatchNorm is folded into the convolutions on "
                                  f"export, and a network of another version of {arch} does not fit; --init its "
                                  ".pt checkpoint")
        weights[key] = torch.from_numpy(arrays[name].reshape(own[key].shape).astype(np.float32))
    model.load_state_dict(weights)
    x = torch.rand(1, int(hparams.get("in_channels", 3)), 12, 12, generator=torch.Generator().manual_seed(0))
    session = open_session(path, engine="onnxruntime", precision="fp32", device="cpu", threads=1, gated=False)
    expected = session.run({session.inputs[0].name: x.numpy()})[0]
    with torch.no_grad():
        err = float(np.abs(model(x).numpy() - expected).max())
    if not err <= tolerance:
        raise CheckpointError(f"{path}: the {arch} rebuilt from its weights differs from the ONNX graph by {err:.2e} "
                              f"(> {tolerance:g}); it cannot be used to continue training")
    return {"format_version": FORMAT_VERSION, "arch": arch, "hparams": hparams, "g": weights, "g_ema": None,
            "step": int(meta.get("train_steps") or 0),
            "initialised_from": json.loads(meta["initialised_from"]) if "initialised_from" in meta else None,
            "from_onnx": {"path": str(path), "sha256": file_sha256(path), "max_abs_diff": err}}


def lineage(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """What a run started with ``--init path`` records of its parent (``state``, as :func:`load_checkpoint` read
    it): the file, its sha256, its arch and step, and the parent's own parent, so a model card can say how many
    steps a fine-tune stands on."""
    entry = {"file": Path(path).as_posix(), "sha256": file_sha256(Path(path)), "arch": state.get("arch"),
             "step": state.get("step")}
    if state.get("initialised_from"):
        entry["initialised_from"] = state["initialised_from"]
    return entry


def generator_weights(state: dict[str, Any], use_ema: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """The generator weights a checkpoint stands for: its EMA of G when present and ``use_ema``,
    else the raw G. Returns (state dict, ``"ema"`` or ``"g"``)."""
    return (state["g_ema"], "ema") if use_ema and state.get("g_ema") else (state["g"], "g")


def generator_from_checkpoint(path: Path, use_ema: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the generator stored in a checkpoint, in eval mode, on the CPU.

    Uses the EMA weights when present and ``use_ema``. Returns (model, state)
    where state is the loaded dict (for metadata: step, config, ...).
    """
    state = load_checkpoint(path)
    model = build_generator(state["arch"], **state["hparams"])
    model.load_state_dict(generator_weights(state, use_ema)[0])
    return model.eval(), state


def average_generators(paths: list[Path], out: Path, use_ema: bool = True) -> dict[str, Any]:
    """Average the generator weights of several checkpoints into one generator file (a "model soup").

    The checkpoints must share arch and hyperparameters; they should come from runs fine-tuned
    from one common model (weights of unrelated runs do not average into a working network).
    Each contributes its EMA weights when present and ``use_ema``, else its raw G. Floating
    tensors are averaged in float64; other buffers (BatchNorm counters) are taken from the
    first. The result is written to ``out`` in the generator-file layout (metadata of the
    first, ``step`` the largest) with ``averaged_from`` recording each source's path, sha256,
    step and weights. Returns the written state. Raises CheckpointError naming the file that
    does not fit.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise CheckpointError("averaging needs at least two checkpoints")
    states = [load_checkpoint(p) for p in paths]
    first = states[0]
    sources, weights = [], []
    for path, state in zip(paths, states):
        if state["arch"] != first["arch"] or state.get("hparams") != first.get("hparams"):
            raise CheckpointError(
                f"{path} is a {state['arch']} {state.get('hparams')}, but {paths[0]} is a {first['arch']} "
                f"{first.get('hparams')}: only checkpoints of one architecture can be averaged")
        g, kind = generator_weights(state, use_ema)
        weights.append(g)
        sources.append({"path": str(path), "sha256": file_sha256(path), "step": state.get("step"), "weights": kind})
    avg = {}
    for key, ref in weights[0].items():
        if ref.is_floating_point():
            total = ref.double()
            for w in weights[1:]:
                total = total + w[key].double()
            avg[key] = (total / len(weights)).to(ref.dtype)
        else:
            avg[key] = ref.clone()
    keep = ("format_version", "arch", "hparams", "phase", "warmup_steps", "config", "content_loss", "train_images")
    result = {k: first.get(k) for k in keep} | {
        "g": avg, "g_ema": None, "step": max(s.get("step") or 0 for s in states), "averaged_from": sources}
    save_checkpoint(result, out)
    return result

"""Model cards (JSON + Markdown) next to an exported model, rebuilt from the files beside it.

The card is derived, never hand-edited: :func:`write_model_card` reads the ONNX
metadata and ``NAME.parity.json``, so any code that learns new numbers (e.g.
``cli.py eval``) calls :func:`record_quality` and the ONNX metadata and the card
are updated together.

Quality format (``quality`` argument, ``quality`` metadata key, card):
``{set: {"model": {metric: value}, "bicubic": {metric: value}}}`` with the metric
names of ``runtime.grids.METRIC_COLUMNS`` (``psnr_y``, ``ssim_y``, ``psnr_rgb``,
``lpips``, ``lattice``, ``color_shift``), means over the set's images.
"""
from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srgan.runtime.files import file_sha256

from ._io import atomic_write_bytes, sidecar, write_json
from .errors import ExportError
from .onnx_meta import read_metadata

__all__ = ["PHASE2_KEYS", "card_paths", "build_card", "write_model_card", "record_quality", "quality_from_csv",
           "render_markdown"]

#: The phase-2 loss weights and learning rate an export records from its run's config (those present).
PHASE2_KEYS = ("pixel", "content", "lpips", "gt_usm", "lattice", "lowfreq", "chroma", "artifact", "edge", "distill",
               "lr_g")

log = logging.getLogger(__name__)

_NOT_MEASURED = "not measured yet: run `cli.py eval MODEL` on Set5/Set14/BSD100, then record_quality()"


def card_paths(model_path: Path) -> tuple[Path, Path]:
    """(``NAME.card.json``, ``NAME.md``) next to ``NAME.onnx``."""
    return sidecar(model_path, ".card.json"), sidecar(model_path, ".md")


def _float(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def quality_from_csv(paths: Path | Sequence[Path]) -> dict[str, dict[str, dict[str, float]]]:
    """Read mean metrics per set from ``cli.py eval`` CSVs.

    Accepts ``summary.csv`` (a ``set`` column, one row per set; trainer.evaluate)
    and per-set CSVs (a ``file`` column with a ``mean`` row; the set name is the
    file name, ``Set5.csv`` -> ``Set5``). ``bicubic_*`` columns go to "bicubic",
    the other metric columns to "model"; non-numeric cells (e.g. "unavailable:
    ...") are skipped. Raises ExportError if a file is unreadable or neither layout.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(path)
        try:
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                rows, columns = list(reader), reader.fieldnames or []
        except OSError as exc:
            raise ExportError(f"cannot read metrics CSV {path}: {exc}") from None
        if "set" in columns:
            named = [(r["set"], r) for r in rows]
        elif "file" in columns and any(r["file"] == "mean" for r in rows):
            named = [(path.stem, r) for r in rows if r["file"] == "mean"]
        else:
            raise ExportError(f"{path} is not a cli.py eval CSV (expected a 'set' column, or a 'file' column "
                              "with a 'mean' row)")
        for name, row in named:
            entry = out.setdefault(name, {"model": {}, "bicubic": {}})
            for key, text in row.items():
                value = _float(text)
                if key in ("set", "images", "file", "note") or value is None:
                    continue
                who, metric = ("bicubic", key[len("bicubic_"):]) if key.startswith("bicubic_") else ("model", key)
                entry[who][metric] = value
    return out


def _parity_summary(fp32: dict[str, Any]) -> dict[str, Any] | str:
    if not fp32:
        return "no parity report found"
    keys = ("passed", "max_abs", "threshold", "provider", "real_images", "rows")
    return {k: fp32.get(k) for k in keys}


def build_card(model_path: Path) -> dict[str, Any]:
    """The card as a dict, from the ONNX metadata and ``NAME.parity.json`` (when present)."""
    model_path = Path(model_path)
    meta = read_metadata(model_path)
    parity_path = sidecar(model_path, ".parity.json")
    parity = json.loads(parity_path.read_text()) if parity_path.is_file() else {}
    training = json.loads(meta.get("training", "{}"))
    quality = json.loads(meta["quality"]) if "quality" in meta else None
    variants = [{
        "name": v["name"], "file": v["path"], "psnr": v["psnr"], "latency_ms": v["latency_ms"],
        "latency_input": v["latency_input"], "max_abs_vs_torch": v["parity"]["max_abs"],
        "default_ok": v["default_ok"], "verdict": v["verdict"],
    } for v in parity.get("variants", [])]
    fp32 = parity.get("fp32", {})
    return {
        "name": model_path.stem,
        "file": model_path.name,
        "sha256": file_sha256(model_path),
        "bytes": model_path.stat().st_size,
        "task": f"x{meta.get('scale')} single-image super-resolution",
        "arch": meta.get("arch"),
        "hparams": json.loads(meta.get("hparams", "{}")),
        "contract": {
            "input": "lr: float32 NCHW RGB in [0,1], dynamic N, H, W",
            "output": f"sr: float32 NCHW RGB, H*{meta.get('scale')} x W*{meta.get('scale')}, linear (clamp to [0,1])",
            "receptive_radius_lr_px": int(meta.get("receptive_radius", -1)),
            "opset": int(meta.get("opset", -1)),
            "memory_bytes_per_lr_pixel": int(meta["memory_bytes_per_pixel"])
            if "memory_bytes_per_pixel" in meta else None,
            "memory_bytes_per_lr_pixel_by_engine": json.loads(meta["memory_bytes_per_pixel_by_engine"])
            if "memory_bytes_per_pixel_by_engine" in meta else None,
        },
        "training": {
            "trained_on": meta.get("trained_on"), "preset": training.get("preset"),
            "steps": meta.get("train_steps"), "phase": training.get("phase"),
            "warmup_steps": training.get("warmup_steps"), "train_images": training.get("train_images"),
            "pixel_loss": training.get("pixel_loss"), "adversarial_weight": training.get("adv"),
            "content_loss": training.get("content_loss"), "weights": meta.get("weights"),
            "checkpoint_sha256": meta.get("checkpoint_sha256"),
            "averaged_from": json.loads(meta["averaged_from"]) if "averaged_from" in meta else None,
            "initialised_from": json.loads(meta["initialised_from"]) if "initialised_from" in meta else None,
            "distilled_from": json.loads(meta["distilled_from"]) if "distilled_from" in meta else None,
            "degradation": training.get("degradation"), "degradation_params": training.get("degradation_params"),
            "phase2_weights": {k: training[k] for k in PHASE2_KEYS if k in training} or None,
        },
        "quality": quality if quality else _NOT_MEASURED,
        "precision_loss_bf16": json.loads(meta["precision_loss_bf16"]) if "precision_loss_bf16" in meta else None,
        "parity": _parity_summary(fp32),
        "receptive_radius_check": parity.get("receptive_radius"),
        "variants": variants,
        "default_file": model_path.name,
    }


def _fmt(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _ancestry(parent: dict[str, Any]) -> str:
    """``file`` (step N, sha256 ...), itself fine-tuned from ... : the chain of ``--init`` parents, nearest first."""
    text = f"`{parent.get('file')}` ({parent.get('arch')}, step {parent.get('step')}, " \
           f"sha256 `{str(parent.get('sha256'))[:16]}...`)"
    if parent.get("initialised_from"):
        text += ", itself fine-tuned from " + _ancestry(parent["initialised_from"])
    return text


def render_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown (headline facts, metrics table, parity, variants)."""
    t, c = card["training"], card["contract"]
    lines = [
        f"# {card['name']}", "",
        f"{card['task']} ({card['arch']}, {card['hparams']}). File `{card['file']}`, "
        f"{card['bytes'] / 1e6:.1f} MB, sha256 `{card['sha256'][:16]}...`.", "",
        "## Contract", "",
        f"- Input {c['input']}; output {c['output']}.",
        f"- Receptive radius {c['receptive_radius_lr_px']} LR px (the tiler's minimum pad); ONNX opset {c['opset']}.",
        f"- CPU inference memory, measured: {_fmt(c.get('memory_bytes_per_lr_pixel'))} bytes per LR pixel of a call "
        "(sizes tiles for `--max-memory`).",
        *([f"- CPU inference memory per engine/precision, measured: {c['memory_bytes_per_lr_pixel_by_engine']} "
           "bytes per LR pixel."] if c.get("memory_bytes_per_lr_pixel_by_engine") else []),
        "", "## Training", "",
        f"- Data: {t['trained_on']}.",
        f"- Preset `{t['preset']}`, {t['steps']} steps (phase {t['phase']}, warm-up {t['warmup_steps']} steps), "
        f"pixel loss {t['pixel_loss']}, adversarial weight {t['adversarial_weight']}, "
        f"content loss {t['content_loss']}.",
        *([f"- Phase-2 loss weights and learning rate: {t['phase2_weights']}."] if t.get("phase2_weights") else []),
        *([f"- LR made per sample by the degradation model `{t['degradation']}` (trainer/degradations.py; "
           "every parameter range is in the card's JSON, `training.degradation_params`)."]
          if t.get("degradation_params") else []),
        f"- Weights: {t['weights']}; checkpoint sha256 `{t['checkpoint_sha256']}`.",
        *([f"- Fine-tuned from {_ancestry(t['initialised_from'])}."] if t.get("initialised_from") else []),
        *([f"- Distilled from (held to its output) {_ancestry(t['distilled_from'])}."]
          if t.get("distilled_from") else []),
        *([f"- Weight average of {len(t['averaged_from'])} checkpoints: " + "; ".join(
            f"`{a['file']}` (step {a['step']}, {a['weights']}, sha256 `{a['sha256'][:16]}...`)"
            for a in t["averaged_from"]) + "."] if t.get("averaged_from") else []),
        "", "## Quality (Y channel, border = scale; LPIPS AlexNet v0.1)", "",
    ]
    q = card["quality"]
    if isinstance(q, dict):
        metrics = sorted({m for s in q.values() for part in s.values() for m in part})
        lines.append("| set | " + " | ".join(f"{m} model | {m} bicubic" for m in metrics) + " |")
        lines.append("|---" * (1 + 2 * len(metrics)) + "|")
        for name, s in q.items():
            cells = [f"{_fmt(s.get('model', {}).get(m, '-'))} | {_fmt(s.get('bicubic', {}).get(m, '-'))}"
                     for m in metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    else:
        lines.append(q)
    g = card.get("precision_loss_bf16")
    lines += ["", "## bf16 (OpenVINO CPU) vs fp32: the precision gate", ""]
    if g:
        verdict = "uses bf16 (within 0.01 dB and 0.002 LPIPS)" if g["allowed"] else "keeps fp32 (over the limits)"
        lines.append(f"On {g['sets']} ({g['images']} images): PSNR-Y {g['psnr_y_fp32']} dB fp32, "
                     f"{g['psnr_y_bf16']} dB bf16 (loss {g['psnr_y_loss_db']:+.4f} dB); LPIPS loss "
                     f"{g['lpips_loss']:+.5f}. `--precision auto` {verdict}.")
    else:
        lines.append("Not measured (`cli.py eval MODEL -o DIR --record`); `--precision auto` keeps fp32.")
    lines += ["", "## Parity (torch vs onnxruntime, fp32)", ""]
    p = card["parity"]
    if isinstance(p, dict):
        lines.append(f"{'PASS' if p['passed'] else 'FAIL'}: max abs {p['max_abs']:.2e} < {p['threshold']:g} on "
                     f"{p['provider']}; real images: {p['real_images']}.")
        lines += ["", "| input | shape | max abs | mean abs | PSNR dB |", "|---|---|---|---|---|"]
        for r in p["rows"]:
            lines.append(f"| {r['name']} | {'x'.join(map(str, r['shape']))} | {r['max_abs']:.2e} | "
                         f"{r['mean_abs']:.2e} | {r['psnr_db']:.1f} |")
    else:
        lines.append(p)
    rr = card.get("receptive_radius_check")
    if rr:
        lines += ["", f"Receptive radius: derived {rr['derived']}, measured {rr['measured']} LR px."]
    lines += ["", "## Variants", ""]
    if card["variants"]:
        lines += ["| variant | file | Y-PSNR loss vs fp32 (dB) | latency ms fp32 / variant | verdict |",
                  "|---|---|---|---|---|"]
        for v in card["variants"]:
            loss = ", ".join(f"{s} {d['loss_db']:+.3f}" for s, d in v["psnr"].items()) or "not measured"
            lat = " / ".join(f"{x:.0f}" for x in v["latency_ms"].values())
            lines.append(f"| {v['name']} | `{v['file']}` | {loss} | {lat} (input {v['latency_input']}) | "
                         f"{v['verdict']} |")
    else:
        lines.append("None built (cli.py export --variants fp16,int8).")
    lines += ["", f"Default file: `{card['default_file']}`.", ""]
    return "\n".join(lines)


def write_model_card(model_path: Path) -> tuple[Path, Path]:
    """(Re)write ``NAME.card.json`` and ``NAME.md`` next to ``model_path``; returns both paths."""
    card = build_card(model_path)
    json_path, md_path = card_paths(model_path)
    write_json(json_path, card)
    atomic_write_bytes(md_path, render_markdown(card).encode("utf-8"))
    return json_path, md_path


def record_quality(model_path: Path, quality: dict[str, Any]) -> tuple[Path, Path]:
    """Store measured ``quality`` in the model's metadata (and its variants') and rewrite the card.

    Only ``metadata_props`` change; the graph and weights are untouched.
    """
    import onnx

    model_path = Path(model_path)
    parity_path = sidecar(model_path, ".parity.json")
    files = [model_path]
    if parity_path.is_file():
        files += [model_path.with_name(v["path"]) for v in json.loads(parity_path.read_text()).get("variants", [])]
    for f in files:
        proto = onnx.load(str(f))
        entries = [p for p in proto.metadata_props if p.key == "quality"]
        entry = entries[0] if entries else proto.metadata_props.add()
        entry.key, entry.value = "quality", json.dumps(quality, sort_keys=True)
        atomic_write_bytes(f, proto.SerializeToString())
    log.info("recorded quality for %s", model_path)
    return write_model_card(model_path)

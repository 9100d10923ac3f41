"""Torch-vs-onnxruntime agreement of an exported model, as numbers and a JSON report."""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .errors import ParityError

if TYPE_CHECKING:
    from srgan.runtime.engines import Session

__all__ = [
    "FP32_MAX_ABS",
    "ParityReport",
    "ParityRow",
    "agreement",
    "measure_parity",
    "ort_session",
    "parity_inputs",
    "read_rgb",
]

log = logging.getLogger(__name__)

#: fp32 ONNX vs torch: largest allowed absolute difference of any output value (outputs in [0, 1] units).
FP32_MAX_ABS = 1e-4

_RANDOM_SIZES = ((1, 32, 48), (2, 23, 37))  # (batch, h, w): even and odd, batch 1 and 2


@dataclass(frozen=True)
class ParityRow:
    """Agreement on one input: ``name``, input ``shape`` (N, C, H, W), max/mean absolute
    difference of the raw (unclamped) outputs, and their PSNR in dB with peak 1.0."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    psnr_db: float


@dataclass
class ParityReport:
    """All rows for one ONNX file; ``passed`` is max_abs < ``threshold`` on every row."""

    model: str
    threshold: float
    provider: str
    rows: list[ParityRow] = field(default_factory=list)
    real_images: str = "none"

    @property
    def max_abs(self) -> float:
        return max((r.max_abs for r in self.rows), default=0.0)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and self.max_abs < self.threshold

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(max_abs=self.max_abs, passed=self.passed)
        return d

    def table(self) -> str:
        """Plain-text table, one line per row, for the CLI."""
        lines = [f"{'input':<28} {'shape':<18} {'max abs':>10} {'mean abs':>10} {'PSNR dB':>8}"]
        for r in self.rows:
            lines.append(f"{r.name:<28} {'x'.join(map(str, r.shape)):<18} {r.max_abs:>10.2e} "
                         f"{r.mean_abs:>10.2e} {r.psnr_db:>8.2f}")
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{verdict}: max abs {self.max_abs:.2e} (threshold {self.threshold:.0e}) on {self.provider}")
        return "\n".join(lines)

    def check(self) -> None:
        """Raise ParityError (carrying this report) unless every row is under the threshold."""
        if not self.passed:
            worst = max(self.rows, key=lambda r: r.max_abs) if self.rows else None
            where = f" on {worst.name} {worst.shape}" if worst else " (no inputs were compared)"
            raise ParityError(
                f"{self.model}: onnxruntime differs from torch by {self.max_abs:.3g}{where}, above the "
                f"{self.threshold:g} limit. The exported graph does not compute what the checkpoint does; "
                "do not ship it (re-export, or report the exporter bug).", report=self)


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(max abs, mean abs, PSNR dB with peak 1.0) between two float arrays of equal shape.

    This measures how closely two implementations agree; it is not the SR quality
    metric (that is ``runtime.metrics``: Y channel, border cropped).
    """
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    mse = float(np.mean(d * d))
    return float(d.max()), float(d.mean()), (math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse))


def read_rgb(path: Path) -> np.ndarray:
    """Read an 8-bit image file as (H, W, 3) uint8 RGB (gray repeated, alpha dropped).

    Raises runtime.errors.ImageReadError for an unreadable file, ValueError for 16-bit.
    """
    from srgan.runtime.imageio import read_image

    px = read_image(path).pixels
    if px.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit image, got {px.dtype}")
    return np.repeat(px[:, :, :1], 3, axis=2) if px.shape[2] in (1, 2) else px[:, :, :3]


def parity_inputs(real_images: list[Path] | None = None, *, channels: int = 3, seed: int = 0
                  ) -> list[tuple[str, np.ndarray]]:
    """Inputs for a parity check: named float32 (N, C, H, W) arrays in [0, 1].

    Random uniform inputs at two sizes (batch 1 at 32x48, batch 2 at 23x37, so
    dynamic batch, even and odd sizes are all exercised), then each of
    ``real_images`` (files, read as RGB) whole.
    """
    rng = np.random.default_rng(seed)
    out = [(f"random {h}x{w}", rng.random((n, channels, h, w), dtype=np.float32)) for n, h, w in _RANDOM_SIZES]
    for p in real_images or []:
        img = read_rgb(p).astype(np.float32) / 255.0
        out.append((Path(p).name, np.ascontiguousarray(img.transpose(2, 0, 1)[None])))
    return out


def ort_session(path: Path, device: str = "cpu", threads: int = 0) -> Session:
    """The onnxruntime fp32 session (full graph optimisation, as the runtime uses): the parity reference,
    built by the runtime's one session factory."""
    from srgan.runtime.engines import open_session

    return open_session(path, engine="onnxruntime", precision="fp32", device=device, threads=threads, gated=False)


@torch.no_grad()
def measure_parity(model: nn.Module, onnx_path: Path, inputs: list[tuple[str, np.ndarray]], *,
                   threshold: float = FP32_MAX_ABS, device: str = "cpu",
                   real_images: str = "none") -> ParityReport:
    """Run ``model`` (torch, fp32, eval) and the ONNX file on the same inputs and compare.

    ``inputs``: from :func:`parity_inputs`. The ONNX input is fed as float32 to the
    graph's single input. Returns a ParityReport; call ``.check()`` to enforce it.
    """
    sess = ort_session(onnx_path, device)
    in_name = sess.inputs[0].name
    report = ParityReport(model=str(onnx_path), threshold=threshold, provider=sess.provider,
                          real_images=real_images)
    model = model.eval().float()
    for name, x in inputs:
        ref = model(torch.from_numpy(x)).numpy()
        got = sess.run({in_name: x})[0]
        if got.shape != ref.shape:
            raise ParityError(f"{onnx_path}: output shape {got.shape} for input {name} {x.shape}, torch gives "
                              f"{ref.shape}; the dynamic axes are broken", report=report)
        report.rows.append(ParityRow(name, tuple(x.shape), *agreement(got, ref)))
        log.debug("parity %s: %s", name, report.rows[-1])
    return report

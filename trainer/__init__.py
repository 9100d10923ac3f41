"""PyTorch trainer: SRResNet/SRGAN/SRCNN models, losses, data, the two-phase loop, evaluation.

Heavy modules are imported by the code that needs them; nothing runs at import.
"""
from __future__ import annotations

__all__ = ["models", "span", "config", "data", "losses", "pretrained", "checkpoint", "train", "run", "evaluate",
           "div2k"]

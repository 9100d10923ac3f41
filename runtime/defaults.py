"""Defaults shared by the library and the CLI (stdlib only, so ``--help`` stays fast)."""
from __future__ import annotations

#: ``--tile``: tile side in LR pixels (0 = whole image).
DEFAULT_TILE = 256
#: ``--max-pixels``: input pixels (a 40 MP input makes a 640 MP x4 output).
DEFAULT_MAX_PIXELS = 40_000_000
#: ``--quality`` for JPEG and WebP.
DEFAULT_QUALITY = 95
#: ``--max-memory``: bytes one inference call may take on the CPU; larger tiles are split to fit.
DEFAULT_MAX_MEMORY = 448 << 20

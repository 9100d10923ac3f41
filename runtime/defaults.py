"""Defaults shared by the library and the CLI (stdlib only, so ``--help`` stays fast)."""
from __future__ import annotations

#: ``--tile``: tile side in LR pixels (0 = whole image); ``--max-memory`` shrinks it to what one call of the
#: engine in use may take (openvino bf16 with a split model keeps ~480 px; onnxruntime fp32 ~85 px).
DEFAULT_TILE = 512
#: ``--max-pixels``: input pixels (a 40 MP input makes a 640 MP x4 output).
DEFAULT_MAX_PIXELS = 40_000_000
#: ``--quality`` for JPEG and WebP.
DEFAULT_QUALITY = 95
#: ``--max-memory``: bytes one inference call may take on the CPU; larger tiles are split to fit.
DEFAULT_MAX_MEMORY = 448 << 20

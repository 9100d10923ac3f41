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
#: zlib level of PNG outputs: 4 writes an upscaled photo ~3x faster than zlib's default 6 for ~4 % more bytes
#: (Set14 x4 outputs, Paeth-filtered: level 6 1.56 s / 3,865 KiB, 4 0.45 s / 4,019 KiB, 1 0.27 s / 4,251 KiB).
DEFAULT_PNG_LEVEL = 4

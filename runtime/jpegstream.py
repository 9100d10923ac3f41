"""Write a baseline JPEG of a huge image band by band, so the whole image is never in memory.

Pillow can only encode a whole image, so each band of rows is encoded as its own JPEG with
identical settings (baseline, standard Huffman tables, fixed quality and subsampling) and a
restart marker after every MCU row, and the bands are stitched into one file:

* header (SOI, APP segments, DQT, SOF0, DHT, DRI, SOS) from the first band, SOF0 height patched
  to the total height;
* from each band, only the entropy-coded scan between its SOS header and its EOI;
* RST7 (FF D7) between two bands, one EOI at the end.

Why the result is byte-identical to encoding the whole image in one go: colour conversion,
4:2:0 box downsampling (no smoothing) and the DCT only see pixels of their own MCU row, and a
restart marker resets the DC predictors and byte-aligns the bit stream (padding with 1-bits,
as libjpeg also does before EOI), so every MCU row is coded independently of the others.
Every band but the last is a multiple of 128 rows: 8k MCU rows of 16 px (4:2:0) or 16k of
8 px (gray), so its own RST0..RST7 cycle restarts where the global one does, and the global
marker after MCU row 8k-1 is RST((8k-1) mod 8) = RST7. Only the last band is padded at its
bottom edge, exactly as the whole image is.
"""
from __future__ import annotations

import io
from collections.abc import Iterable
from typing import IO, Any

import numpy as np
from PIL import Image

BAND_ROWS = 128
ENCODE_ROWS = 2 * BAND_ROWS
_SOI, _EOI, _RST7 = b"\xff\xd8", b"\xff\xd9", b"\xff\xd7"
_SOF0, _DHT, _SOS, _DQT, _DRI = 0xC0, 0xC4, 0xDA, 0xDB, 0xDD
_TABLES = (_SOF0, _DHT, _SOS, _DQT, _DRI)  # must match between bands for the stitch to hold


def _split(jpeg: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Marker segments from SOI up to and including SOS, and the entropy-coded scan up to EOI."""
    if not (jpeg.startswith(_SOI) and jpeg.endswith(_EOI)):
        raise RuntimeError("Pillow did not produce a complete JPEG for a band")
    segments: list[tuple[int, bytes]] = []
    pos = len(_SOI)
    while not segments or segments[-1][0] != _SOS:
        if jpeg[pos] != 0xFF:
            raise RuntimeError(f"malformed JPEG band: no marker at byte {pos}")
        end = pos + 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        segments.append((jpeg[pos + 1], jpeg[pos:end]))
        pos = end
    return segments, jpeg[pos : -len(_EOI)]


def _with_height(sof: bytes, height: int) -> bytes:
    """SOF0 segment (FF C0, length, precision, height, width, ...) with its height replaced."""
    return sof[:5] + height.to_bytes(2, "big") + sof[7:]


def write_jpeg_bands(
    fh: IO[bytes],
    height: int,
    width: int,
    channels: int,
    bands: Iterable[np.ndarray],
    *,
    quality: int = 95,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Write a baseline JPEG (4:2:0 for RGB) of `height` x `width` from (rows, width, channels)
    uint8 bands of any heights; the same bytes Pillow writes for the whole image with
    quality, subsampling 4:2:0, restart_marker_rows=1. On error, fh holds a partial file."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (RGB), not {channels}")
    if not (0 < height <= 65535 and 0 < width <= 65535):
        raise ValueError(f"JPEG size must be 1..65535 each way, not {width}x{height}")
    options: dict[str, Any] = {"format": "JPEG", "quality": quality, "optimize": False,
                                  "progressive": False, "restart_marker_rows": 1}
    if channels == 3:
        options["subsampling"] = "4:2:0"
    first_tables: list[tuple[int, bytes]] = []

    def emit(rows: np.ndarray) -> None:
        extra: dict[str, Any] = {} if first_tables else {
            k: v for k, v in (("icc_profile", icc_profile), ("exif", exif)) if v is not None}
        buf = io.BytesIO()
        Image.fromarray(rows[:, :, 0] if channels == 1 else rows).save(buf, **options, **extra)
        segments, scan = _split(buf.getvalue())
        segments = [(m, _with_height(s, height) if m == _SOF0 else s) for m, s in segments]
        tables = [(m, s) for m, s in segments if m in _TABLES]
        if not first_tables:
            first_tables.extend(tables)
            fh.write(_SOI + b"".join(s for _, s in segments))
        elif tables != first_tables:
            raise RuntimeError("a band's DQT/DHT/SOF0/DRI/SOS differ from the first band's: cannot stitch")
        else:
            fh.write(_RST7)
        fh.write(scan)

    pending: list[np.ndarray] = []  # buffered rows, fewer than BAND_ROWS between encodes
    held = written = 0
    for band in bands:
        if band.dtype != np.uint8 or band.ndim != 3 or band.shape[1:] != (width, channels):
            raise ValueError(f"band must be uint8 (rows, {width}, {channels}), not {band.dtype} {band.shape}")
        if written + held + len(band) > height:
            raise ValueError(f"bands hold more than the declared height {height}")
        if len(band):
            pending.append(band)
            held += len(band)
        del band  # pending owns it; an encoded band must not outlive its encode
        if held < BAND_ROWS:
            continue
        rows = pending[0] if len(pending) == 1 else np.concatenate(pending)
        done = 0
        while held - done >= BAND_ROWS:  # at most ENCODE_ROWS per encode: Pillow copies what it encodes
            n = min(held - done - (held - done) % BAND_ROWS, ENCODE_ROWS)
            emit(rows[done:done + n])
            done += n
        written += done
        held -= done
        pending = [rows[done:].copy()] if held else []  # the few leftover rows, not the whole band
        del rows
    if written + held != height:
        raise ValueError(f"bands hold {written + held} rows, not the declared height {height}")
    if held:
        emit(np.concatenate(pending))
    fh.write(_EOI)

"""Generated inputs for the chaos tests: good files of every mode, bit depth and orientation, and
bad ones (decompression bombs in pixels and in ancillary chunks, lying headers, truncated files,
seeded mutations). Everything is made here from numpy and Pillow, nothing is downloaded."""
from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from conftest import photo
from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode(img: np.ndarray | Image.Image, fmt: str, **kwargs: object) -> bytes:
    im = img if isinstance(img, Image.Image) else Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _with_orientation(img: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "PNG", exif=exif.tobytes())


def good_files() -> dict[str, bytes]:
    """name -> bytes of valid images: every mode and bit depth we read, every EXIF orientation."""
    rgb, gray = photo(12, 16, seed=1), photo(12, 16, 1, seed=2)
    rgba, la = photo(12, 16, 4, seed=3), photo(12, 16, 2, seed=4)
    files = {
        "rgb8.png": encode(rgb, "PNG"),
        "gray8.png": encode(gray, "PNG"),
        "rgba8.png": encode(rgba, "PNG"),
        "la8.png": encode(Image.fromarray(la, "LA"), "PNG"),
        "gray16.png": encode(Image.fromarray(photo(12, 16, 1, np.uint16, seed=5)[:, :, 0]), "PNG"),
        "palette.png": encode(Image.fromarray(rgb).convert("P"), "PNG"),
        "bilevel.png": encode(Image.fromarray(gray[:, :, 0]).convert("1"), "PNG"),
        "rgb-jpeg.jpg": encode(rgb, "JPEG", quality=90),
        "gray-jpeg.jpg": encode(gray, "JPEG"),
        "cmyk-jpeg.jpg": encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "rgb-webp.webp": encode(rgb, "WEBP", lossless=True),
        "rgba-webp.webp": encode(rgba, "WEBP", lossless=True),
        "rgb-tiff.tif": encode(rgb, "TIFF"),
        "rgb-bmp.bmp": encode(rgb, "BMP"),
    }
    for o in range(1, 9):
        files[f"orient{o}.png"] = _with_orientation(photo(10, 14, seed=10 + o), o)
    return files


def bad_files() -> dict[str, bytes]:
    """name -> bytes of files that must fail (each for its own reason) without stopping anything."""
    small = encode(photo(8, 8, seed=20), "PNG")
    ihdr_end = 8 + 25
    text_bomb = _png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * (16 << 20)))
    icc_bomb = _png_chunk(b"iCCP", b"ICC\x00\x00" + zlib.compress(b"\x00" * (16 << 20)))
    # pixel bomb: a valid 1-bit 20000x20000 PNG of zeros, ~50 KB on disk, 400 MP decoded
    comp = zlib.compressobj(9)
    row = bytes(2501)  # filter byte + 20000 bits
    raw = b"".join(comp.compress(row * 1000) for _ in range(20)) + comp.flush()
    bomb_ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0))
    pixel_bomb = b"\x89PNG\r\n\x1a\n" + bomb_ihdr + _png_chunk(b"IDAT", raw) + _png_chunk(b"IEND", b"")
    lie = bytearray(encode(photo(16, 16, seed=21), "JPEG"))
    sof = lie.find(b"\xff\xc0")
    lie[sof + 5:sof + 9] = struct.pack(">HH", 6000, 6000)  # a 36 MP header on a 16x16 scan
    files = {
        "ztxt_bomb.png": small[:ihdr_end] + text_bomb + small[ihdr_end:],
        "iccp_bomb.png": small[:ihdr_end] + icc_bomb + small[ihdr_end:],
        "pixel_bomb.png": pixel_bomb,
        "lying_header.jpg": bytes(lie),
        "empty.png": b"",
        "text.png": b"this is not an image\n" * 10,
        "html.jpg": b"<html><body>404</body></html>",
    }
    rgb = photo(40, 48, seed=22)
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("TIFF", "tif"), ("BMP", "bmp")):
        data = encode(rgb, fmt)
        files[f"truncated-{ext}.{ext}"] = data[:len(data) // 2]
    return files


#: Seeded mutations: (name, function of (bytes, rng) -> bytes).
def _flip(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(0, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(b)


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[:int(rng.integers(1, len(data)))]


def _splice(data: bytes, rng: np.random.Generator) -> bytes:
    i, j = sorted(int(v) for v in rng.integers(0, len(data), 2))
    return data[:i] + data[j:] + data[i:j]


def _insert(data: bytes, rng: np.random.Generator) -> bytes:
    i = int(rng.integers(0, len(data)))
    return data[:i] + rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes() + data[i:]


def _header(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(0, min(len(b), 64)))
        b[i] = int(rng.integers(0, 256))
    return bytes(b)


MUTATIONS: tuple[Callable[[bytes, np.random.Generator], bytes], ...] = (_flip, _truncate, _splice, _insert, _header)


def fuzzed_files(n: int, seed: int) -> dict[str, bytes]:
    """``n`` seeded mutations of small PNG/JPEG/WebP/TIFF/BMP files (names say format and index)."""
    rng = np.random.default_rng(seed)
    bases = {ext: encode(photo(10, 12, seed=30), fmt) for fmt, ext in
             (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("TIFF", "tif"), ("BMP", "bmp"))}
    out = {}
    for i in range(n):
        ext = list(bases)[i % len(bases)]
        data = MUTATIONS[int(rng.integers(0, len(MUTATIONS)))](bases[ext], rng)
        out[f"fuzz{i:04d}.{ext}"] = data
    return out


def write_all(folder: Path, files: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths

"""Banded JPEG writer: the stitched file is byte-identical to Pillow encoding the whole image at once."""
from __future__ import annotations

import hashlib
import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from srgan.runtime import jpegstream
from srgan.runtime.jpegstream import write_jpeg_bands

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def set14(shared: Path, name: str, h: int, w: int, channels: int) -> np.ndarray:
    """A Set14 photo mirror-tiled (so tile seams stay smooth) and cropped to (h, w, channels)."""
    a = np.asarray(Image.open(shared / "data" / "Set14" / "HR" / f"{name}.png").convert("RGB"))
    a = np.concatenate([a, a[::-1]], axis=0)
    a = np.concatenate([a, a[:, ::-1]], axis=1)
    a = np.tile(a, (-(-h // a.shape[0]), -(-w // a.shape[1]), 1))[:h, :w]
    return np.ascontiguousarray(a if channels == 3 else a[:, :, 1:2])


def whole(a: np.ndarray, quality: int = 95, **extra: object) -> bytes:
    """Pillow's encoding of the whole image with the settings the banded writer uses."""
    buf = io.BytesIO()
    sub = {"subsampling": "4:2:0"} if a.shape[2] == 3 else {}
    Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(
        buf, "JPEG", quality=quality, optimize=False, progressive=False, restart_marker_rows=1, **sub, **extra)
    return buf.getvalue()


def banded(a: np.ndarray, cuts: list[int], **kw: object) -> bytes:
    buf = io.BytesIO()
    write_jpeg_bands(buf, a.shape[0], a.shape[1], a.shape[2], (a[i:j] for i, j in zip(cuts, cuts[1:])), **kw)
    return buf.getvalue()


def even_cuts(h: int, step: int) -> list[int]:
    return [*range(0, h, step), h]


def random_cuts(h: int, seed: int) -> list[int]:
    """Random split points, including empty bands and bands far larger than 128 rows."""
    rng = np.random.default_rng(seed)
    inner = rng.integers(0, h + 1, size=rng.integers(1, 12))
    return [0, *sorted(inner.tolist()), h]


SIZES = [  # (name, height, width, channels)
    ("baboon", 300, 517, 3),
    ("lenna", 517, 300, 3),
    ("zebra", 129, 64, 3),
    ("monarch", 128, 128, 3),
    ("comic", 1, 33, 3),
    ("barbara", 257, 1000, 1),
    ("flowers", 1030, 203, 3),
    ("bridge", 384, 77, 1),
]


@pytest.mark.parametrize(("name", "h", "w", "c"), SIZES)
def test_stitched_bytes_identical_to_whole_image_encode(shared: Path, name: str, h: int, w: int, c: int) -> None:
    a = set14(shared, name, h, w, c)
    ref = whole(a)
    splits = [even_cuts(h, s) for s in (1, 7, 128, 1024)] + [random_cuts(h, seed) for seed in range(4)]
    for cuts in splits:
        assert banded(a, cuts) == ref, f"bands {np.diff(cuts).tolist()[:12]}"


def test_other_quality_identical_too(shared: Path) -> None:
    a = set14(shared, "pepper", 400, 333, 3)
    assert banded(a, even_cuts(400, 100), quality=60) == whole(a, quality=60)


def restart_markers(jpeg: bytes) -> list[int]:
    """RSTn numbers in order, from the entropy-coded data after the SOS header (FF 00 is stuffing)."""
    sos = jpeg.index(b"\xff\xda")
    scan = jpeg[sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big") :]
    return [scan[i + 1] - 0xD0 for i in range(len(scan) - 1) if scan[i] == 0xFF and 0xD0 <= scan[i + 1] <= 0xD7]


@pytest.mark.parametrize(("c", "mcu"), [(3, 16), (1, 8)])
def test_pillow_restart_cycle_is_what_the_stitch_assumes(shared: Path, c: int, mcu: int) -> None:
    """Pillow's whole-image output: one RST per MCU row boundary, cycling 0..7 from RST0, RST7 after row 128k-1,
    and a restart interval (DRI) of one MCU row."""
    a = set14(shared, "man", 640, 200, c)
    jpeg = whole(a)
    markers = restart_markers(jpeg)
    assert markers == [i % 8 for i in range(640 // mcu - 1)]
    assert all(markers[(128 * k) // mcu - 1] == 7 for k in range(1, 5))
    dri = jpeg.index(b"\xff\xdd")
    assert int.from_bytes(jpeg[dri + 4 : dri + 6], "big") == -(-200 // mcu)


@pytest.mark.parametrize("band_rows", [64, 120])
def test_misaligned_bands_would_not_be_identical(shared: Path, monkeypatch: pytest.MonkeyPatch, band_rows: int) -> None:
    """Control: with 64-row bands the RST cycle is off, with 120 rows the 4:2:0 MCU rows are cut; both differ."""
    a = set14(shared, "face", 300, 150, 3)
    monkeypatch.setattr(jpegstream, "BAND_ROWS", band_rows)
    assert banded(a, even_cuts(300, 1)) != whole(a)


def test_decodes_with_exif_and_icc(shared: Path) -> None:
    a = set14(shared, "coastguard", 600, 450, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW
    exif[0x010F] = "srgan-toolkit"  # make
    kw = {"exif": exif.tobytes(), "icc_profile": SRGB}
    data = banded(a, random_cuts(600, 7), **kw)
    ref = whole(a, **kw)
    assert data == ref
    with Image.open(io.BytesIO(data)) as im, Image.open(io.BytesIO(ref)) as rim:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (450, 600))
        assert im.getexif()[0x0112] == 6 and im.getexif()[0x010F] == "srgan-toolkit"
        assert im.info["icc_profile"] == SRGB
        px = np.asarray(im)
        assert np.array_equal(px, np.asarray(rim))
    err = px.astype(np.float64) - a
    assert 10 * np.log10(255**2 / np.mean(err**2)) > 30  # it is the photo, not just the right size


class _Sink:
    """Output that keeps only a hash and a length, so the file never sits in memory."""

    def __init__(self) -> None:
        self.hash, self.size = hashlib.sha256(), 0

    def write(self, b: bytes) -> int:
        self.hash.update(b)
        self.size += len(b)
        return len(b)


@pytest.mark.parametrize(("step", "held_rows"), [(7, 2 * 134), (128, 128)])
def test_holds_only_the_buffer_and_one_band(shared: Path, step: int, held_rows: int) -> None:
    """4096 x 1024 RGB (12 MiB) fed `step` rows at a time: traced (Python/numpy) memory peaks at the buffered rows
    (7-row chunks: < 134 rows and their concatenation; 128-row chunks: just the current one, not also the last)
    and one encoded band (~35 kB here), never near the image. Pillow's own copy of a band is not traced."""
    tile = set14(shared, "ppt3", 256, 1024, 3)
    h = 4096

    def rows() -> Iterator[np.ndarray]:
        for i in range(0, h, step):
            yield np.take(tile, range(i, min(i + step, h)), axis=0, mode="wrap")

    sink = _Sink()
    write_jpeg_bands(_Sink(), 1, 8, 3, [tile[:1, :8]])  # type: ignore[arg-type]  # imports happen outside the trace
    tracemalloc.start()
    try:
        write_jpeg_bands(sink, h, 1024, 3, rows())  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < held_rows * 1024 * 3 + 150_000, peak
    full = np.take(tile, range(h), axis=0, mode="wrap")
    assert sink.hash.digest() == hashlib.sha256(whole(full)).digest()


def test_wrong_height_width_dtype_raise() -> None:
    a = np.zeros((200, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="not the declared height 300"):
        write_jpeg_bands(io.BytesIO(), 300, 40, 3, [a])
    with pytest.raises(ValueError, match="more than the declared height 100"):
        write_jpeg_bands(io.BytesIO(), 100, 40, 3, [a])
    with pytest.raises(ValueError, match="more than the declared height 199"):
        write_jpeg_bands(io.BytesIO(), 199, 40, 3, [a[:150], a[150:]])
    bad_bands = [a[:, :39], a.astype(np.uint16), a.astype(np.float32), a[:, :, :1], a[:, :, 0]]
    for bad in bad_bands:
        with pytest.raises(ValueError, match="band must be uint8"):
            write_jpeg_bands(io.BytesIO(), 200, 40, 3, [a[:10], bad])
    for size in [(0, 40), (200, 0), (70000, 40)]:
        with pytest.raises(ValueError, match="JPEG size"):
            write_jpeg_bands(io.BytesIO(), *size, 3, [a])
    with pytest.raises(ValueError, match="channels"):
        write_jpeg_bands(io.BytesIO(), 200, 40, 4, [np.zeros((200, 40, 4), np.uint8)])


def test_band_with_different_tables_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """If a later band came out with other quantisation tables, stitching must stop, not write a broken file."""
    save, calls = Image.Image.save, []

    def drifting_save(self: Image.Image, fp: object, format: str | None = None, **params: object) -> None:
        calls.append(1)
        if len(calls) > 1:
            params["quality"] = 80
        save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", drifting_save)
    with pytest.raises(RuntimeError, match="differ from the first band"):
        write_jpeg_bands(io.BytesIO(), 300, 40, 3, [np.zeros((300, 40, 3), np.uint8)])

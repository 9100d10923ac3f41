"""Image files: every mode and bit depth round-trips; orientation, ICC, EXIF; bad files; atomic writes."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import photo
from PIL import ExifTags, Image, ImageCms, ImageOps

from srgan.runtime import imageio
from srgan.runtime.errors import ImageReadError, ImageTooLargeError, UnsupportedOutputError
from srgan.runtime.imageio import allocate_pixels, read_image, resize_lanczos, write_image
from srgan.runtime.metrics import psnr

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
LAYOUTS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def simple_png(path: Path, a: np.ndarray) -> None:
    """Reference PNG encoder (filter 0, one IDAT) independent of the one under test."""
    h, w, c = a.shape
    depth = 16 if a.dtype == np.uint16 else 8
    raw = a.astype(">u2" if depth == 16 else "u1").reshape(h, -1).view(np.uint8)
    data = np.concatenate([np.zeros((h, 1), np.uint8), raw], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, depth, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_roundtrip_exact(tmp_path: Path, channels: int, dtype: type) -> None:
    a = photo(23, 31, channels, dtype)
    write_image(tmp_path / "a.png", a)
    d = read_image(tmp_path / "a.png")
    assert d.pixels.dtype == dtype and d.pixels.shape == a.shape and d.format == "png"
    np.testing.assert_array_equal(d.pixels, a)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_from_another_encoder_keeps_16_bits(tmp_path: Path, channels: int) -> None:
    a = photo(9, 14, channels, np.uint16, seed=5)
    simple_png(tmp_path / "ref.png", a)
    np.testing.assert_array_equal(read_image(tmp_path / "ref.png").pixels, a)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_our_png_decodes_in_pillow(tmp_path: Path, channels: int) -> None:
    a8 = photo(40, 33, channels, np.uint8, seed=2)
    write_image(tmp_path / "a8.png", a8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a8.png")).reshape(a8.shape), a8)
    a16 = photo(40, 33, 3, np.uint16, seed=2)
    write_image(tmp_path / "a16.png", a16)
    # Pillow keeps the high byte of 16-bit colour: checks byte order and filtering independently.
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a16.png")), (a16 >> 8).astype(np.uint8))


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_roundtrip_exact(tmp_path: Path, channels: int, dtype: type) -> None:
    a = photo(17, 12, channels, dtype, seed=1)
    write_image(tmp_path / "a.tif", a)
    d = read_image(tmp_path / "a.tif")
    assert d.pixels.dtype == dtype
    np.testing.assert_array_equal(d.pixels, a)
    if dtype == np.uint16:
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif").reshape(a.shape), a)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_16bit_tiff_from_tifffile(tmp_path: Path, compression: str | None) -> None:
    a = photo(11, 13, 3, np.uint16, seed=4)
    tifffile.imwrite(tmp_path / "t.tif", a, photometric="rgb", compression=compression)
    np.testing.assert_array_equal(read_image(tmp_path / "t.tif").pixels, a)


@pytest.mark.parametrize("channels", [1, 3])
def test_bmp_roundtrip_exact(tmp_path: Path, channels: int) -> None:
    a = photo(10, 21, channels)
    write_image(tmp_path / "a.bmp", a)
    np.testing.assert_array_equal(read_image(tmp_path / "a.bmp").pixels, a)


@pytest.mark.parametrize("suffix, channels", [(".jpg", 3), (".jpg", 1), (".webp", 3), (".webp", 4)])
def test_lossy_formats_keep_layout(tmp_path: Path, suffix: str, channels: int) -> None:
    a = photo(32, 48, channels)
    write_image(tmp_path / f"a{suffix}", a, quality=95)
    d = read_image(tmp_path / f"a{suffix}")
    assert d.pixels.shape == a.shape and d.pixels.dtype == np.uint8
    assert psnr(d.pixels[..., :3], a[..., :3], channel="rgb") > 30
    if channels == 4:
        assert psnr(d.pixels[..., 3:], a[..., 3:]) > 30


def test_16bit_to_8bit_format_is_reduced(tmp_path: Path) -> None:
    a = photo(8, 8, 3, np.uint16)
    write_image(tmp_path / "a.bmp", a)
    np.testing.assert_array_equal(read_image(tmp_path / "a.bmp").pixels, ((a.astype(int) * 255 + 32767) // 65535))


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_alpha_where_the_format_has_none_is_refused(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(UnsupportedOutputError, match="--format png"):
        write_image(tmp_path / f"a{suffix}", photo(8, 8, 4))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode, expect", [("P", 3), ("PA", 4), ("1", 1), ("CMYK", 3), ("LA", 2), ("I;16", 1)])
def test_modes_from_pillow_files(tmp_path: Path, mode: str, expect: int) -> None:
    rgb = Image.fromarray(photo(12, 16))
    if mode == "P":
        im, ext = rgb.convert("P"), ".png"
    elif mode == "PA":
        im, ext = rgb.convert("P"), ".png"
    elif mode == "1":
        im, ext = rgb.convert("1"), ".png"
    elif mode == "CMYK":
        im, ext = rgb.convert("CMYK"), ".jpg"
    elif mode == "LA":
        im, ext = rgb.convert("LA"), ".png"
    else:
        im, ext = Image.fromarray(photo(12, 16, 1, np.uint16)[:, :, 0]), ".png"
    path = tmp_path / f"x{ext}"
    im.save(path, **({"transparency": im.getpixel((0, 0))} if mode == "PA" else {}))
    d = read_image(path)
    assert d.pixels.shape == (12, 16, expect)
    assert d.pixels.dtype == (np.uint16 if mode == "I;16" else np.uint8)
    if mode == "P":
        np.testing.assert_array_equal(d.pixels, np.asarray(im.convert("RGB")))
    if mode == "PA":
        np.testing.assert_array_equal(d.pixels, np.asarray(Image.open(path).convert("RGBA")))
        assert (d.pixels[..., 3] == 0).any() and (d.pixels[..., 3] == 255).any()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_pillow(tmp_path: Path, orientation: int) -> None:
    a = photo(6, 10)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(a).save(path, exif=exif)
    d = read_image(path)
    np.testing.assert_array_equal(d.pixels, np.asarray(ImageOps.exif_transpose(Image.open(path))))
    assert d.exif is not None and d.exif[0x0112] == 1


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_icc_and_exif_kept_with_new_dimensions(tmp_path: Path, suffix: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "TestCam"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.ExifImageWidth] = 10
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.ExifImageHeight] = 6
    src = tmp_path / f"src{suffix}"
    Image.fromarray(photo(6, 10)).save(src, exif=exif, icc_profile=SRGB)
    d = read_image(src)
    assert d.pixels.shape[:2] == (10, 6) and d.icc_profile == SRGB
    big = np.repeat(np.repeat(d.pixels, 4, 0), 4, 1)
    out = tmp_path / f"out{suffix}"
    write_image(out, big, icc_profile=d.icc_profile, exif=d.exif)
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == SRGB
        e = im.getexif()
        assert e.get(0x0112, 1) == 1 and e.get(0x010F) == "TestCam"
        if suffix != ".tif":  # a TIFF's own tags give its size; it carries no EXIF sub-IFD here
            sub = e.get_ifd(ExifTags.IFD.Exif)
            assert (sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight]) == (24, 40)


def test_16bit_png_keeps_icc(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", photo(5, 5, 3, np.uint16), icc_profile=SRGB)
    assert read_image(tmp_path / "a.png").icc_profile == SRGB


def test_not_an_image_and_truncated_files(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(tmp_path / "text.png")
    for suffix in (".png", ".jpg", ".tif"):
        buf = io.BytesIO()
        Image.fromarray(photo(64, 64)).save(buf, format=Image.registered_extensions()[suffix])
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        with pytest.raises(ImageReadError, match=f"cut{suffix}: .*(truncated|corrupt)"):
            read_image(cut)


def test_max_pixels_checked_before_decoding(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", photo(20, 30))
    with pytest.raises(ImageTooLargeError, match="600 ... --max-pixels|over --max-pixels 599"):
        read_image(tmp_path / "a.png", max_pixels=599)
    assert read_image(tmp_path / "a.png", max_pixels=600).pixels.shape == (20, 30, 3)


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "a.png"
    out.write_bytes(b"old")

    def broken(fh, *args, **kw):
        fh.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(imageio, "_write_png", broken)
    with pytest.raises(OSError, match="disk full"):
        write_image(out, photo(8, 8))
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_rgb_buffer_for_webp_is_encoded_without_a_copy(tmp_path: Path) -> None:
    buf = allocate_pixels(8, 8, 3, np.uint8, "webp")
    buf[:] = photo(8, 8)
    im = imageio._to_pil(buf)
    assert im.mode == "RGBX"
    buf[0, 0] = (1, 2, 3)
    assert im.getpixel((0, 0))[:3] == (1, 2, 3)  # shares memory
    write_image(tmp_path / "a.webp", buf)
    assert Image.open(tmp_path / "a.webp").mode == "RGB"


@pytest.mark.parametrize("channels, dtype", [(3, np.uint8), (2, np.uint8), (4, np.uint16), (1, np.uint16)])
def test_resize_lanczos(channels: int, dtype: type) -> None:
    a = photo(20, 30, channels, dtype)
    r = resize_lanczos(a, 15, 25)
    assert r.shape == (15, 25, channels) and r.dtype == dtype
    flat = np.full((20, 30, channels), 77, dtype)
    np.testing.assert_array_equal(resize_lanczos(flat, 50, 70), np.full((50, 70, channels), 77, dtype))

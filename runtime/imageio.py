"""Image files in and out: decode to numpy, encode from numpy, atomically.

Inside the program an image is an (H, W, C) array, uint8 or uint16 (bit depth
is decided by dtype, never by pixel values), with C = 1 (gray), 2 (gray +
alpha), 3 (RGB) or 4 (RGBA). Decoding applies the EXIF orientation and keeps
the ICC profile and EXIF; palette images become RGB(A), CMYK becomes RGB,
1-bit becomes gray. 16-bit PNG and TIFF stay 16-bit.

Encoding takes the image whole or as bands of rows (:func:`write_image_bands`).
PNG is written by a small streaming writer here (any of the four layouts, 8 or
16 bit, with ICC and EXIF) and JPEG by stitching band-wise Pillow encodes
(:mod:`runtime.jpegstream`), so a huge result need never be in memory at once;
16-bit TIFF goes through tifffile; WebP, TIFF and BMP through Pillow. Every
write goes to a temporary file in the target folder and is moved into place
with ``os.replace``, so no partial output file is ever left behind.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import struct
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from .defaults import DEFAULT_PNG_LEVEL
from .errors import (
    ImageReadError,
    ImageTooLargeError,
    OutputError,
    SRError,
    UnsupportedOutputError,
)
from .formats import FORMATS, INPUT_SUFFIXES, format_of
from .jpegstream import write_jpeg_bands

__all__ = [
    "TEMP_PREFIX",
    "TRANSIENT_ERRNOS",
    "Decoded",
    "OutputWriteError",
    "allocate_pixels",
    "atomic_write",
    "open_dir_nofollow",
    "probe_size",
    "read_image",
    "remove_stale_temps",
    "resize_lanczos",
    "write_image",
    "write_image_bands",
]

log = logging.getLogger(__name__)


_PIL_FORMAT = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp", "TIFF": "tiff", "BMP": "bmp"}
# TIFF keeps EXIF-like tags in its own IFD0; only these descriptive ones are carried over.
_TIFF_EXIF_KEEP = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298)
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Decoded:
    """A decoded image: ``pixels`` (H, W, C) uint8/uint16, upright (EXIF orientation applied).

    ``format`` is the file's format name, ``mode`` Pillow's mode of the file,
    ``icc_profile`` the embedded profile (None if absent or no longer valid,
    e.g. a CMYK profile after conversion to RGB), ``exif`` the EXIF with
    orientation reset to 1 (None if absent).
    """

    pixels: np.ndarray
    format: str
    mode: str
    icc_profile: bytes | None
    exif: Image.Exif | None

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] in (2, 4)


# ---------------------------------------------------------------- atomic writes

#: Temporary files this tool makes: ``.srgan-tmp-<pid>-<8 hex>.part``. Distinctive, so that
#: :func:`remove_stale_temps` removes only our own leftovers (of dead processes), nothing else.
TEMP_PREFIX = ".srgan-tmp-"
_TEMP_RE = re.compile(r"^\.srgan-tmp-(\d+)-[0-9a-f]{8}\.part$")
#: errno values of a write or read that may succeed later (space freed, device back, permission fixed).
TRANSIENT_ERRNOS = frozenset(
    e for e in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EACCES, errno.EPERM, errno.EROFS, errno.EAGAIN,
                errno.EBUSY, errno.ENOMEM, errno.ESTALE, errno.ETIMEDOUT) if e is not None)


class OutputWriteError(OutputError):
    """Raised if the file system refuses an output (full, read-only, I/O error, a symlink in the way).

    ``errno`` is the OS error number (None for a refused symlink); ``transient`` says whether a
    retry may succeed later (disk full, permissions, I/O errors)."""

    def __init__(self, path: str | Path, reason: str, err: int | None = None):
        super().__init__(path, reason)
        self.errno = err
        self.transient = err in TRANSIENT_ERRNOS


def _temp_name() -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.part"


def open_dir_nofollow(root: str | Path, rel: str | Path = "", *, create: bool = False) -> int:
    """A directory fd for ``root/rel``, opened one component at a time with ``O_NOFOLLOW``.

    ``root`` itself is opened as given (the user's choice, may be a symlink); no
    component of ``rel`` may be a symlink, ``..`` or absolute, so whatever is swapped
    in meanwhile, the fd is a folder inside ``root``. ``create`` makes missing
    folders. The caller closes the fd. Raises :class:`OutputWriteError`.
    """
    rel_path = Path(rel)
    if rel_path.is_absolute() or ".." in rel_path.parts:
        raise OutputWriteError(Path(root) / rel_path, "is not inside the output folder; not written")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise OutputWriteError(root, f"cannot open the output folder: {e.strerror}", e.errno) from None
    here = Path(root)
    try:
        for part in rel_path.parts:
            here = here / part
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OutputWriteError(here, "is a symlink or not a folder; nothing is written through it") from None
        raise OutputWriteError(here, f"cannot create or open this folder: {e.strerror}", e.errno) from None
    return fd


@contextlib.contextmanager
def atomic_write(path: str | Path, *, root: str | Path | None = None) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for binary writing; on success move it onto ``path``.

    The folder is opened as a file descriptor (:func:`open_dir_nofollow` from
    ``root`` down, creating missing folders; ``root`` None = ``path``'s folder),
    and the temporary file is created and renamed through it, so a symlink
    swapped in during the write cannot redirect it. On any exception (including
    KeyboardInterrupt) the temporary file is removed and ``path`` is untouched.
    Raises :class:`OutputWriteError` (naming ``path``) if the file system fails.
    """
    path = Path(os.path.abspath(path))
    base = path.parent if root is None else Path(os.path.abspath(root))
    try:
        rel = path.parent.relative_to(base)
    except ValueError:
        raise OutputWriteError(path, f"is outside the output folder {base}; not written") from None
    dfd = open_dir_nofollow(base, rel, create=root is not None)
    tmp = _temp_name()
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=dfd)
        except OSError as e:
            raise OutputWriteError(path, f"cannot create a file in {path.parent}: {e.strerror}", e.errno) from None
        try:
            with open(fd, "wb") as fh:
                fh.raw.name = str(path.parent / tmp)  # type: ignore[attr-defined]  # some encoders (tifffile) want a name
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as e:  # ENOSPC, EIO... from the encoder's writes, fsync or the rename
            if e.errno is None:
                raise
            raise OutputWriteError(path, f"cannot write: {e.strerror}", e.errno) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise
    finally:
        os.close(dfd)


def remove_stale_temps(root: str | Path) -> list[Path]:
    """Remove this tool's temporary files (:data:`TEMP_PREFIX`) under ``root`` left by dead processes.

    Walks ``root`` without following symlinks; a file is removed only if its name
    is exactly ours and the process id in it is not running. Returns what was removed.
    """
    removed = []
    for folder, _dirs, files in os.walk(root):  # os.walk does not descend into symlinked folders
        for name in files:
            m = _TEMP_RE.match(name)
            if m is None or _alive(int(m.group(1))):
                continue
            p = Path(folder) / name
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
                removed.append(p)
    if removed:
        log.info("removed %d stale temporary file(s) under %s", len(removed), root)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # ours: maybe being written by another thread now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- decoding

def _open(path: Path) -> Image.Image:
    """``Image.open`` without Pillow's own pixel limit: ``max_pixels`` in :func:`read_image` is the policy.

    Anything Pillow raises about the file's content (including ``ValueError`` from a text or
    ICC chunk that decompresses past its limit) becomes :class:`ImageReadError`; an OS error
    with an errno (permission, I/O) is re-raised as it is, since a retry may succeed.
    """
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image this tool reads (PNG, JPEG, WebP, TIFF, BMP)") from None
    except OSError as e:
        if e.errno is not None:
            raise
        raise ImageReadError(path, f"cannot open: {e}") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises ValueError, SyntaxError, struct.error... for bad headers and chunks
        raise ImageReadError(path, f"unreadable header or metadata ({type(e).__name__}: {e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def probe_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header without decoding the pixels.

    Raises :class:`~runtime.errors.ImageReadError` if the file is not an image, and
    OSError (with an errno) if it cannot be read.
    """
    with _open(Path(path)) as im:
        return im.size


def _check_jpeg_size(im: Image.Image, path: Path) -> None:
    """Refuse a JPEG too small to hold the pixels its header claims, before decoding.

    Every 8x8 luma block of a JPEG codes at least its DC coefficient with a Huffman code of
    at least one bit, so a file has at least one bit per luma block. libjpeg fills missing
    data with grey and only warns, so a 5 KB file whose header says 6000x6000 would
    otherwise "decode" as a 36 MP grey image.
    """
    w, h = im.size
    blocks = -(-w // 8) * -(-h // 8)
    size = path.stat().st_size
    if size * 8 < blocks:
        raise ImageReadError(path, f"truncated or lying header: {w}x{h} needs at least {blocks // 8} bytes of "
                                   f"JPEG data, the file has {size}")


def _rawmode(tile_args: object) -> str:
    return tile_args if isinstance(tile_args, str) else tile_args[0]  # type: ignore[index]


def _decode_bytes(path: Path, rawmode_for: dict[str, str]) -> np.ndarray:
    """Decode ``path`` with each tile's rawmode replaced per ``rawmode_for``; returns Pillow's array."""
    with _open(path) as im:
        assert isinstance(im, ImageFile.ImageFile)
        tiles = []
        for t in im.tile:
            raw = rawmode_for[_rawmode(t.args)]
            args = raw if isinstance(t.args, str) else (raw, *(t.args or ())[1:])
            tiles.append(t._replace(args=args))
        im.tile = tiles
        im.load()
        return np.asarray(im)


def _decode_16bit(path: Path, rawmodes: set[str]) -> np.ndarray:
    """Full 16-bit samples of an RGB/RGBA/LA 16-bit PNG or TIFF (Pillow would keep only 8).

    Pillow's decoders (inflate, PNG unfiltering, libtiff) do the work; only the
    unpacker is swapped. ``X;16B`` unpacks byte 0 of each sample and ``X;16L``
    byte 1, so two decodes give both bytes. Gray + alpha has no such pair, so it
    is unpacked as 8-bit RGBA, whose four bytes are exactly one LA16 pixel.
    """
    if len(rawmodes) != 1:
        raise ImageReadError(path, f"mixed sample layouts {sorted(rawmodes)} are not supported")
    raw = rawmodes.pop()
    base, order = raw.split(";16")
    big = order == "B" or (order == "N" and sys.byteorder == "big")
    if base == "LA":
        b = _decode_bytes(path, {raw: "RGBA"}).astype(np.uint16)
        b = b.reshape(*b.shape[:2], 2, 2)
        hi, lo = (b[..., 0], b[..., 1]) if big else (b[..., 1], b[..., 0])
        return (hi << 8) | lo
    if base not in ("RGB", "RGBA") or order not in ("B", "L", "N"):
        raise ImageReadError(path, f"16-bit layout {raw!r} is not supported")
    byte0 = _decode_bytes(path, {raw: f"{base};16B"}).astype(np.uint16)
    byte1 = _decode_bytes(path, {raw: f"{base};16L"}).astype(np.uint16)
    return (byte0 << 8) | byte1 if big else (byte1 << 8) | byte0


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 1-8 to (H, W, C) ``a`` (views; same result as ImageOps.exif_transpose)."""
    return {
        2: lambda: a[:, ::-1],
        3: lambda: a[::-1, ::-1],
        4: lambda: a[::-1],
        5: lambda: a.transpose(1, 0, 2),
        6: lambda: np.rot90(a, -1),
        7: lambda: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda: np.rot90(a, 1),
    }.get(orientation, lambda: a)()


def _exif_of(im: Image.Image, fmt: str) -> Image.Exif | None:
    exif = im.getexif()
    if fmt == "tiff":  # IFD0 of a TIFF is the image's own structure: keep descriptive tags only
        kept = Image.Exif()
        for tag in _TIFF_EXIF_KEEP:
            if tag in exif:
                kept[tag] = exif[tag]
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        if sub:
            kept.get_ifd(ExifTags.IFD.Exif).update(sub)
        exif = kept
    return exif if len(exif) or exif.get_ifd(ExifTags.IFD.Exif) else None


def read_image(path: str | Path, *, max_pixels: int | None = None) -> Decoded:
    """Decode an image file to a :class:`Decoded` (see the module docstring for the modes).

    Raises :class:`~runtime.errors.ImageTooLargeError` if width * height >
    ``max_pixels`` (checked from the header, before decoding), and
    :class:`~runtime.errors.ImageReadError` if the file is not a supported
    image, is corrupt or truncated, or has an unsupported mode (e.g. 32-bit).
    """
    path = Path(path)
    try:
        return _read(path, max_pixels)
    except (SRError, MemoryError):
        raise
    except OSError as e:
        if e.errno is not None:
            raise
        raise ImageReadError(path, f"corrupt or truncated image data ({e})") from None
    except Exception as e:  # noqa: BLE001 - whatever a hostile file makes Pillow raise is this file's failure, not the run's
        raise ImageReadError(path, f"corrupt image data or metadata ({type(e).__name__}: {e})") from None


def _read(path: Path, max_pixels: int | None) -> Decoded:
    with _open(path) as im:
        fmt = _PIL_FORMAT.get(im.format or "")
        if fmt is None:
            raise ImageReadError(path, f"{im.format} files are not supported (PNG, JPEG, WebP, TIFF, BMP)")
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageTooLargeError(path, f"{w}x{h} = {w * h / 1e6:.1f} MP is over --max-pixels "
                                           f"{max_pixels} ({max_pixels / 1e6:.1f} MP); raise it to process this file")
        if fmt == "jpeg":
            _check_jpeg_size(im, path)
        mode = im.mode
        icc = im.info.get("icc_profile") or None
        try:
            tiles = getattr(im, "tile", [])
            deep = {_rawmode(t.args) for t in tiles if ";16" in _rawmode(t.args)}  # before anything loads
            if deep and mode in ("RGB", "RGBA"):
                pixels = _decode_16bit(path, deep)
            else:
                pixels = _pixels_8bit_or_gray16(im, path)
            exif = _exif_of(im, fmt)  # after decoding: PNG may keep EXIF behind the pixel data
            orientation = int(exif.get(_ORIENTATION, 1)) if exif else 1
        except ImageReadError:
            raise
        except (OSError, ValueError, SyntaxError, struct.error, zlib.error) as e:
            if isinstance(e, OSError) and e.errno is not None:
                raise
            raise ImageReadError(path, f"corrupt or truncated image data ({e})") from None
        if pixels.shape[:2] != (h, w):
            raise ImageReadError(path, f"decoded {pixels.shape[1]}x{pixels.shape[0]} pixels; the header says {w}x{h}")
    if mode == "CMYK" and icc:
        log.info("%s: CMYK converted to RGB; its CMYK ICC profile is dropped", path)
        icc = None
    if exif is not None and _ORIENTATION in exif:
        exif[_ORIENTATION] = 1
    return Decoded(_orient(pixels, orientation), fmt, mode, icc, exif)


def _pixels_8bit_or_gray16(im: Image.Image, path: Path) -> np.ndarray:
    """Load ``im`` (8-bit modes, or 16-bit gray) as (H, W, C) uint8/uint16."""
    im.load()
    mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"))[:, :, None]
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)[:, :, None]
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    if mode in ("LA", "RGB", "RGBA"):
        return np.asarray(im)
    if mode in ("CMYK", "YCbCr", "RGBX"):
        return np.asarray(im.convert("RGB"))
    raise ImageReadError(path, f"image mode {mode} is not supported (8/16-bit gray, RGB, RGBA, palette, CMYK)")


# ---------------------------------------------------------------- encoding

def allocate_pixels(height: int, width: int, channels: int, dtype: np.dtype | type,
                    fmt: str | None = None) -> np.ndarray:
    """An uninitialised (height, width, channels) result buffer that ``fmt`` can encode without a copy.

    For 8-bit RGB bound for WebP the memory is RGBX (4 bytes a pixel,
    Pillow's own layout) and a 3-channel view is returned; otherwise a plain
    contiguous array.
    """
    if channels == 3 and np.dtype(dtype) == np.uint8 and fmt == "webp":
        return np.empty((height, width, 4), np.uint8)[:, :, :3]
    return np.empty((height, width, channels), dtype)


def _to_pil(pixels: np.ndarray) -> Image.Image:
    """Pillow image of 8-bit ``pixels``; shares memory for RGBX-backed RGB, RGBA and gray."""
    h, w, c = pixels.shape
    base = pixels.base
    if (c == 3 and isinstance(base, np.ndarray) and base.shape == (h, w, 4) and base.flags.c_contiguous
            and base.dtype == np.uint8 and pixels.ctypes.data == base.ctypes.data):
        return Image.frombuffer("RGBX", (w, h), base, "raw", "RGBX", 0, 1)
    if pixels.flags.c_contiguous and c in (1, 4):
        mode = "L" if c == 1 else "RGBA"
        return Image.frombuffer(mode, (w, h), pixels, "raw", mode, 0, 1)
    return Image.fromarray(np.ascontiguousarray(pixels[:, :, 0] if c == 1 else pixels),
                           mode={1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c])


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _exif_for_output(exif: Image.Exif | None, width: int, height: int) -> Image.Exif | None:
    """A copy of ``exif`` for an output of ``width`` x ``height``: orientation 1, dimensions updated."""
    if exif is None:
        return None
    out = Image.Exif()
    out.load(exif.tobytes())
    if _ORIENTATION in out:
        out[_ORIENTATION] = 1
    sub = out.get_ifd(ExifTags.IFD.Exif)
    if sub:
        sub[ExifTags.Base.ExifImageWidth] = width
        sub[ExifTags.Base.ExifImageHeight] = height
    return out


def _exif_payload(exif: Image.Exif | None) -> bytes | None:
    """Raw EXIF (TIFF header + IFDs) without the ``Exif\\0\\0`` marker, as PNG's eXIf chunk holds it."""
    if exif is None:
        return None
    data = exif.tobytes()
    return data[6:] if data.startswith(b"Exif\x00\x00") else data


def write_image(path: str | Path, pixels: np.ndarray, *, quality: int = 95, icc_profile: bytes | None = None,
                exif: Image.Exif | None = None, compress_level: int = DEFAULT_PNG_LEVEL,
                root: str | Path | None = None) -> None:
    """Encode (H, W, C) uint8/uint16 ``pixels`` to ``path`` atomically; the format comes from the suffix.

    ``quality`` (1-100) applies to JPEG and WebP. 16-bit pixels are reduced to
    8 bits (logged) for formats without 16-bit support. EXIF gets orientation 1
    and the new pixel dimensions; ICC is embedded where the format allows.

    ``root``: the output folder; folders from it down to ``path`` are created and
    opened without following symlinks (:func:`atomic_write`).

    Raises :class:`~runtime.errors.UnsupportedOutputError` for an unknown
    suffix or alpha in JPEG, :class:`OutputWriteError` if the file system fails.
    """
    h, w, c = pixels.shape
    write_image_bands(path, h, w, c, pixels.dtype, [pixels], quality=quality, icc_profile=icc_profile, exif=exif,
                      compress_level=compress_level, root=root)


def write_image_bands(path: str | Path, height: int, width: int, channels: int, dtype: np.dtype | type,
                      bands: Iterable[np.ndarray], *, quality: int = 95, icc_profile: bytes | None = None,
                      exif: Image.Exif | None = None, compress_level: int = DEFAULT_PNG_LEVEL,
                      root: str | Path | None = None) -> None:
    """:func:`write_image` for an image that arrives as bands of rows, top to bottom.

    PNG and JPEG are encoded as the bands come, so the whole image is never in
    memory; WebP, TIFF and BMP encoders need it whole, so their bands are joined
    first. The file appears only when every band has been written; an exception
    from ``bands`` (e.g. inference failing half way) leaves nothing behind.
    Raises as :func:`write_image`, and ValueError if the bands do not add up to
    ``height`` x ``width`` x ``channels``.
    """
    path = Path(path)
    fmt = format_of(path)
    if fmt is None:
        raise UnsupportedOutputError(path, f"unknown output suffix; use one of {', '.join(sorted(INPUT_SUFFIXES))}")
    spec = FORMATS[fmt]
    if channels in (2, 4) and not spec.alpha:
        raise UnsupportedOutputError(path, f"{spec.pil} has no alpha channel; use --format png or webp")
    deep = np.dtype(dtype) == np.uint16
    if deep and not spec.deep:
        log.info("%s: %s holds 8 bits per channel; 16-bit result reduced to 8 bits", path, spec.pil)
        bands = map(_to_8bit, bands)
    out_exif = _exif_for_output(exif, width, height)
    with atomic_write(path, root=root) as fh:
        if fmt == "png":
            _write_png(fh, height, width, channels, 16 if deep else 8, bands, icc_profile=icc_profile,
                       exif=_exif_payload(out_exif), level=compress_level)
        elif fmt == "jpeg":
            write_jpeg_bands(fh, height, width, channels, bands, quality=quality, icc_profile=icc_profile,
                             exif=out_exif.tobytes() if out_exif is not None else None)
        else:
            parts = list(bands)
            pixels = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if pixels.shape != (height, width, channels):
                raise ValueError(f"bands make {pixels.shape}, expected {(height, width, channels)}")
            if fmt == "tiff" and deep:
                _write_tiff16(fh, pixels, icc_profile)
            else:
                _write_pil(fh, pixels, fmt, quality=quality, icc_profile=icc_profile, exif=out_exif)


def _write_pil(fh: IO[bytes], pixels: np.ndarray, fmt: str, *, quality: int, icc_profile: bytes | None,
               exif: Image.Exif | None) -> None:
    im = _to_pil(pixels)
    kwargs: dict[str, object] = {}
    if fmt in ("jpeg", "webp"):
        kwargs["quality"] = quality
    if fmt != "bmp" and icc_profile:
        kwargs["icc_profile"] = icc_profile
    if fmt in ("jpeg", "webp") and exif is not None:
        kwargs["exif"] = exif.tobytes()
    if fmt == "tiff":
        kwargs["compression"] = "tiff_deflate"
        if exif is not None:  # TIFF tags are the IFD0 itself; the EXIF sub-IFD is not carried
            kwargs["exif"] = {tag: exif[tag] for tag in _TIFF_EXIF_KEEP if tag in exif}
    im.save(fh, format=FORMATS[fmt].pil, **kwargs)


def _write_tiff16(fh: IO[bytes], pixels: np.ndarray, icc_profile: bytes | None) -> None:
    import tifffile

    c = pixels.shape[2]
    tifffile.imwrite(
        fh, np.ascontiguousarray(pixels[:, :, 0] if c == 1 else pixels),
        photometric="rgb" if c >= 3 else "minisblack", extrasamples=("unassalpha",) if c in (2, 4) else None,
        compression="zlib", iccprofile=icc_profile,
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _paeth_rows(rows: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """PNG filter type 4 (Paeth) for (n, L) uint8 ``rows``; ``prev`` is the row above the first.

    Returns (n, 1 + L) uint8 with the filter-type byte in front. Filtering uses
    raw (unfiltered) neighbours, so it vectorises over whole rows.
    """
    x = rows.astype(np.int16)
    up = np.concatenate([prev.astype(np.int16)[None], x[:-1]])
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    upleft = np.zeros_like(x)
    upleft[:, bpp:] = up[:, :-bpp]
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    out[:, 0] = 4
    out[:, 1:] = (x - pred).astype(np.uint8)  # wraps modulo 256, as PNG wants
    return out


def _write_png(fh: IO[bytes], height: int, width: int, channels: int, depth: int, bands: Iterable[np.ndarray], *,
               icc_profile: bytes | None, exif: bytes | None, level: int) -> None:
    """Stream bands of (rows, W, C) uint8/uint16 pixels as PNG, ~1 MB of rows at a time (no full copy)."""
    h, w, c = height, width, channels
    bpp = c * depth // 8
    fh.write(b"\x89PNG\r\n\x1a\n")
    fh.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)))
    if icc_profile:
        fh.write(_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
    if exif:
        fh.write(_chunk(b"eXIf", exif))
    comp = zlib.compressobj(level)
    prev = np.zeros(w * bpp, np.uint8)
    step = max(1, (1 << 20) // (w * bpp))  # the filter's temporaries stay small
    pending: list[bytes] = []
    size = done = 0
    for band in bands:
        if band.shape[1:] != (w, c) or band.dtype != (np.uint16 if depth == 16 else np.uint8):
            raise ValueError(f"band {band.shape} {band.dtype} does not fit a {w}x{h}x{c} {depth}-bit PNG")
        done += band.shape[0]
        for y0 in range(0, band.shape[0], step):
            rows = band[y0:y0 + step]
            rows = rows.astype(">u2") if depth == 16 else np.ascontiguousarray(rows)
            rows = rows.reshape(rows.shape[0], -1).view(np.uint8)
            data = comp.compress(_paeth_rows(rows, prev, bpp).tobytes())
            prev = rows[-1].copy()  # a view would keep the whole band alive
            if data:
                pending.append(data)
                size += len(data)
            if size >= 1 << 20:
                fh.write(_chunk(b"IDAT", b"".join(pending)))
                pending, size = [], 0
        del band  # not held while the next band is computed (wide images: a band is large)
        rows = prev
    if done != h:
        raise ValueError(f"bands hold {done} rows; the PNG header says {h}")
    pending.append(comp.flush())
    fh.write(_chunk(b"IDAT", b"".join(pending)))
    fh.write(_chunk(b"IEND", b""))


def resize_lanczos(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) uint8/uint16 ``pixels`` resized to (height, width, C), same dtype, Lanczos-3.

    Antialiased when shrinking (Pillow scales the kernel), so it serves any
    final factor (``--outscale``). 8-bit images stay in Pillow's native modes;
    16-bit and gray + alpha go plane by plane in float32.
    """
    c = pixels.shape[2]
    if pixels.dtype == np.uint8 and c != 2:
        im = _to_pil(pixels).resize((width, height), Image.Resampling.LANCZOS)
        a = np.asarray(im)
        return a[:, :, None] if a.ndim == 2 else a[:, :, :c]
    top = 255.0 if pixels.dtype == np.uint8 else 65535.0
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[:, :, i], dtype=np.float32), "F")
                         .resize((width, height), Image.Resampling.LANCZOS)) for i in range(c)]
    out: np.ndarray = np.clip(np.rint(np.stack(planes, axis=2)), 0, top).astype(pixels.dtype)
    return out

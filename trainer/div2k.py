"""Fetch DIV2K (official archives) into a local folder, with caching and checksums.

The archives unpack to the layout :func:`trainer.data.discover` reads
(``DIV2K_train_HR/``, ``DIV2K_train_LR_bicubic/X4/``). Each archive is
downloaded through :func:`srgan.runtime.imageio.atomic_write` (in place only when complete), and its sha256
is recorded in ``MANIFEST.json``; a later call verifies cached archives against
that record (or against ``expected_sha256`` when the caller pins one) instead
of downloading again. The DIV2K site publishes no checksums, so the first
download's hash is what later runs are held to.
"""
from __future__ import annotations

import json
import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from srgan.runtime.files import file_sha256
from srgan.runtime.imageio import atomic_write

from .data import DataError

__all__ = ["ARCHIVES", "DEFAULT_BASE_URL", "fetch_div2k"]

log = logging.getLogger(__name__)
DEFAULT_BASE_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
ARCHIVES = {
    "train_hr": "DIV2K_train_HR.zip",
    "train_lr_x4": "DIV2K_train_LR_bicubic_X4.zip",
    "valid_hr": "DIV2K_valid_HR.zip",
    "valid_lr_x4": "DIV2K_valid_LR_bicubic_X4.zip",
}


def _safe_extract(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            target = (dest / member).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise DataError(f"{archive} holds a path outside the target folder: {member!r}")
        zf.extractall(dest)


def fetch_div2k(root: Path, parts: tuple[str, ...] = ("train_hr", "train_lr_x4"), *,
                base_url: str = DEFAULT_BASE_URL, expected_sha256: dict[str, str] | None = None,
                timeout: float = 60.0) -> Path:
    """Download (or reuse) and unpack DIV2K ``parts`` under ``root``; returns ``root``.

    Raises DataError if a download fails (with the ways to get the data offline),
    or if an archive's sha256 differs from the pinned or recorded one.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for part in parts:
        if part not in ARCHIVES:
            raise DataError(f"unknown DIV2K part {part!r}; choose from {sorted(ARCHIVES)}")
        name = ARCHIVES[part]
        archive = root / name
        want = (expected_sha256 or {}).get(name) or manifest.get(name, {}).get("sha256")
        if not archive.is_file():
            url = base_url.rstrip("/") + "/" + name
            log.info("downloading %s", url)
            try:  # into place only when complete
                with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_write(archive) as fh:
                    shutil.copyfileobj(resp, fh, 1 << 22)
            except (urllib.error.URLError, OSError) as exc:
                raise DataError(
                    f"could not download {url} ({exc}). Options: run this on a machine with internet; or "
                    f"download {name} yourself and put it in {root}; or train on any folder of photographs "
                    f"with --data DIR (DIV2K is not required)."
                ) from None
        digest = file_sha256(archive)
        if want and digest != want:
            raise DataError(f"{archive} has sha256 {digest}, expected {want}: delete it and fetch again")
        record = manifest.get(name, {})
        if record.get("sha256") != digest or not record.get("extracted"):
            _safe_extract(archive, root)
        manifest[name] = {"sha256": digest, "bytes": archive.stat().st_size, "extracted": True}
    with atomic_write(manifest_path) as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True).encode())
    return root

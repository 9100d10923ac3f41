"""Packaging proof: the built wheel, installed into a fresh venv WITHOUT torch, works from an unrelated folder.

The default test builds the wheel (``pip wheel --no-deps``), makes a venv with no packages,
installs the wheel into it (``--no-deps``) and gives it exactly the base dependencies (the
closure of ``[project] dependencies``) by linking them from this environment: torch, onnx,
matplotlib, openvino are NOT there. The slow twin installs the wheel with its dependencies
by ``pip`` from the package index configured here (minutes). Then, from a folder outside
the repository: ``srgan upscale photos -o out`` with the shipped default model,
``python -m srgan --version``, ``srgan eval srgan --data SET`` and ``srgan eval MODEL.onnx
--data SET``, ``srgan bench quality`` finding its data through ``$SRGAN_DATA_DIR``, the
torch-only commands exiting 2 with the install command, and no generic top-level modules
in site-packages.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT, SHARED
from packaging.requirements import Requirement

from srgan.runtime.extras import EXTRAS, install_command, missing_modules
from srgan.runtime.imageio import write_image

INSTALL = install_command("train")
TORCH_ONLY = [
    ["train", "--data", "{photos}", "-o", "{tmp}/run"],
    ["export", "{tmp}/none.pt", "-o", "{tmp}/x.onnx"],
    ["export-lpips", "-o", "{tmp}/lpips.onnx"],
    ["fetch-div2k", "{tmp}/div2k"],
    ["average", "{tmp}/a.pt", "{tmp}/b.pt", "-o", "{tmp}/avg.pt"],
    ["eval", "{tmp}/a.pt", "--data", "{set}"],
]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _base_closure() -> list[md.Distribution]:
    """The installed distributions the base install needs: ``[project] dependencies``, recursively."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    todo, seen, out = [Requirement(d) for d in deps], set(), []
    while todo:
        req = todo.pop()
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        dist = md.distribution(req.name)
        out.append(dist)
        todo += [Requirement(r) for r in dist.requires or []]
    return out


def _link_base_deps(site: Path, into: Path) -> list[str]:
    """Link the base closure's top-level files from this environment into ``into`` (on a .pth in ``site``)."""
    into.mkdir()
    names = []
    for dist in _base_closure():
        names.append(dist.metadata["Name"])
        here = Path(str(dist.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (into / top).exists() and (here / top).exists():
                (into / top).symlink_to(here / top)
    (site / "base-deps.pth").write_text(str(into) + "\n")
    return names


def _build_wheel(out: Path) -> Path:
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
              str(ROOT)], cwd=out.parent)
    assert r.returncode == 0, r.stderr
    (wheel,) = out.glob("srgan_toolkit-*.whl")
    return wheel


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``photos/`` (2 small real photos) and ``Set5/HR`` (2 crops of Set5), as a user would."""
    if not (SHARED / "data" / "Set5").is_dir():
        pytest.skip("../shared/data is absent")
    from srgan.runtime.imageio import read_image

    root = tmp_path_factory.mktemp("userdata")
    (root / "photos").mkdir()
    for i, name in enumerate(("0001.jpg", "0002.jpg")):
        write_image(root / "photos" / f"p{i}.png", read_image(SHARED / "data" / "Photos" / name).pixels[:48, :64])
    (root / "Set5" / "HR").mkdir(parents=True)
    for name in ("baby.png", "bird.png"):
        write_image(root / "Set5" / "HR" / name, read_image(SHARED / "data" / "Set5" / "HR" / name).pixels[:96, :96])
    return root


def _venv(tmp: Path, wheel: Path, with_pip_deps: bool) -> tuple[Path, Path]:
    """A fresh venv with the wheel and only the base dependencies; returns (bin dir, site-packages)."""
    env = tmp / "venv"
    r = _run([sys.executable, "-m", "venv", "--without-pip", str(env)], cwd=tmp)
    assert r.returncode == 0, r.stderr
    pip = [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q"]
    r = _run([*pip, str(wheel)] if with_pip_deps else [*pip, "--no-deps", "--no-index", str(wheel)], cwd=tmp,
             timeout=1800)
    assert r.returncode == 0, r.stderr
    (site,) = (env / "lib").glob("python3*/site-packages")
    if not with_pip_deps:
        _link_base_deps(site, tmp / "base-deps")
    return env / "bin", site


def _check_install(bindir: Path, site: Path, data: Path, tmp: Path) -> None:
    work = tmp / "elsewhere"  # an unrelated folder: no checkout, no models/ next to it
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SRGAN_MODELS_DIR", "SRGAN_DATA_DIR", "VIRTUAL_ENV")}
    env |= {"PATH": f"{bindir}{os.pathsep}{env.get('PATH', '')}", "XDG_DATA_HOME": str(tmp / "xdg-data"),
            "XDG_CACHE_HOME": str(tmp / "xdg-cache")}
    py, srgan = str(bindir / "python"), str(bindir / "srgan")

    # a base install: no torch (nor the other extras' modules; onnx is base, for --denoise), one package `srgan`
    r = _run([py, "-c", "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in "
              "('torch', 'onnx', 'matplotlib', 'srgan', 'srgan.cli', 'numpy', 'onnxruntime')}))"], work, env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"torch": False, "onnx": True, "matplotlib": False, "srgan": True,
                                    "srgan.cli": True, "numpy": True, "onnxruntime": True}
    for generic in ("runtime", "trainer", "export", "cli", "cli.py"):
        assert not (site / generic).exists(), f"site-packages has a top-level {generic}"
    assert (site / "srgan" / "models" / "srgan_x4.onnx").is_file()

    r = _run([py, "-m", "srgan", "--version"], work, env)
    assert r.returncode == 0 and re.fullmatch(r"srgan \d+\.\d+\.\d+\S*\n", r.stdout), r.stdout + r.stderr

    r = _run([srgan, "upscale", str(data / "photos"), "-o", "out", "--json"], work, env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["counts"] == {"ok": 2, "skipped": 0, "failed": 0}
    assert Path(report["model"]) == site / "srgan" / "models" / "srgan_x4.onnx"
    assert sorted(p.name for p in (work / "out").glob("*.png")) == ["p0.png", "p1.png"]

    # --denoise: the weight blend of the shipped real and srgan models, made once in the user's cache (no torch)
    r = _run([srgan, "upscale", str(data / "photos"), "-o", "dn", "-m", "real", "--denoise", "0.5", "--json"],
             work, env)
    assert r.returncode == 0, r.stderr
    assert Path(json.loads(r.stdout)["model"]).parent == tmp / "xdg-cache" / "srgan" / "blends"
    assert len(list((work / "dn").glob("*.png"))) == 2

    for model in ("srgan", str(site / "srgan" / "models" / "srresnet_x4.onnx")):
        r = _run([srgan, "eval", model, "--data", str(data / "Set5"), "--json"], work, env)
        assert r.returncode == 0, r.stderr
        (row,) = json.loads(r.stdout)["sets"]
        assert row["set"] == "Set5" and row["images"] == 2 and row["psnr_y"] > row["bicubic_psnr_y"] - 3

    # bench quality finds its data through $SRGAN_DATA_DIR (never under site-packages)
    r = _run([py, "-c", "from srgan.runtime.paths import data_dir; print(data_dir())"], work, env)
    assert not Path(r.stdout.strip()).is_relative_to(site), r.stdout
    r = _run([srgan, "bench", "quality", "-o", "bq", "--json", "-q"], work, env | {"SRGAN_DATA_DIR": str(data)})
    assert r.returncode == 0, r.stderr
    assert {s["dataset"] for s in json.loads(r.stdout)["summary"]} == {"Set5"}

    # torch-only commands: exit 2, the exact install command, no traceback
    (tmp / "a.pt").write_bytes(b"x")
    (tmp / "b.pt").write_bytes(b"x")
    (tmp / "none.pt").write_bytes(b"x")
    for args in TORCH_ONLY:
        args = [a.format(photos=data / "photos", tmp=tmp, set=data / "Set5") for a in args]
        r = _run([srgan, *args], work, env)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert INSTALL in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_wheel_installs_and_runs_without_torch(data: Path, tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path / "wheelhouse")
    bindir, site = _venv(tmp_path, wheel, with_pip_deps=False)
    _check_install(bindir, site, data, tmp_path)


@pytest.mark.slow
def test_wheel_installs_with_pip_resolving_its_dependencies(data: Path, tmp_path: Path) -> None:
    """The same, with the base dependencies installed by pip itself (the index configured here)."""
    wheel = _build_wheel(tmp_path / "wheelhouse")
    bindir, site = _venv(tmp_path, wheel, with_pip_deps=True)
    _check_install(bindir, site, data, tmp_path)


@pytest.mark.parametrize("extra", ["train", "export", "bench", "peers"])
def test_dev_install_has_what_each_extra_promises(extra: str) -> None:
    """This environment is `pip install -e '.[dev]'`: every module the dev extras promise imports."""
    assert missing_modules(extra) == []
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extra in declared and "dev" in declared
    if extra in ("train", "export"):
        import torch

        assert torch.ones(2).sum().item() == 2.0


def test_extras_table_matches_pyproject() -> None:
    """Each extra named in runtime.extras exists in pyproject (the install command it prints is real)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(declared), sorted(set(EXTRAS) - set(declared))

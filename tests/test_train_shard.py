"""benchmarks/make_train_shard.py: the training shard for a lent GPU, on a few real images of ../shared/data."""
from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "make_train_shard.py"
T91 = ("t1.png", "t25.png", "tt2.png", "tt8.png")  # t1 (197 x 176) is under the 192-px crop: skipped
PHOTOS = ("0040.jpg", "0045.jpg")


def _module():
    spec = importlib.util.spec_from_file_location("make_train_shard", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src, root = shared / "data", tmp_path_factory.mktemp("data")
    (root / "T91" / "HR").mkdir(parents=True)
    (root / "Photos").mkdir()
    for name in T91:
        shutil.copyfile(src / "T91" / "HR" / name, root / "T91" / "HR" / name)
    for name in (*PHOTOS, "MANIFEST.tsv", "README.md"):
        shutil.copyfile(src / "Photos" / name, root / "Photos" / name)
    shutil.copytree(src / "Set5", root / "Set5")
    return root


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_shard_budget_format_manifest_and_rerun(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mod = _module()
    args = ["--data-dir", str(data), "--sets", "T91,Photos", "--max-mib", "0.3", "--no-val"]
    assert mod.main([*args, "-o", str(tmp_path / "a")]) == 0
    assert "crops of 192 px" in capsys.readouterr().out
    files = _files(tmp_path / "a")
    assert sum(map(len, files.values())) <= 0.3 * 2**20
    with open(tmp_path / "a" / "manifest.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    crops = {f for f in files if f.startswith("train/")}
    assert crops and {r["crop"] for r in rows} == crops and all(r["use"] == "train" for r in rows)
    assert {r["set"] for r in rows} == {"T91", "Photos"}  # the sets are interleaved, not one eating the budget
    assert "t1.png" not in {r["source_file"] for r in rows}
    for f in crops:
        with Image.open(tmp_path / "a" / f) as im:
            assert im.format == "JPEG" and im.size == (192, 192) and im.mode == "RGB"
            assert JpegImagePlugin.get_sampling(im) == 0  # 4:4:4
    with open(data / "Photos" / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        credits = {r["file"]: r for r in csv.DictReader(fh, delimiter="\t")}
    for r in rows:
        if r["set"] == "Photos":
            src = credits[r["source_file"]]
            assert (r["licence"], r["author_credit"], r["source_path"]) == (
                src["licence"], src["author_credit"], src["source_path"]) and r["author_credit"]
    assert "Photos_README.md" in files and "Photos_MANIFEST.tsv" in files

    # a bigger budget holds more crops: the budget was what stopped the first run
    assert mod.main([*args[:-3], "--max-mib", "0.6", "--no-val", "-o", str(tmp_path / "b")]) == 0
    assert len([f for f in _files(tmp_path / "b") if f.startswith("train/")]) > len(crops)
    # the same arguments again (into the same folder) give the same bytes
    assert mod.main([*args, "-o", str(tmp_path / "a")]) == 0
    assert _files(tmp_path / "a") == files


def test_shard_packs_set5_for_validation_only(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    assert _module().main(["--data-dir", str(data), "--sets", "T91", "--max-mib", "1.2", "-o", str(out)]) == 0
    files = _files(out)
    assert sum(map(len, files.values())) <= 1.2 * 2**20
    for sub in ("HR", "LR_bicubic_x4"):
        for p in (data / "Set5" / sub).iterdir():
            assert files[f"val/Set5/{sub}/{p.name}"] == p.read_bytes()
    with open(out / "manifest.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert {r["crop"] for r in rows} == {f for f in files if f.startswith(("train/", "val/"))}
    assert all(r["use"].startswith("validation only") == r["crop"].startswith("val/") for r in rows)
    assert not any(r["set"] == "Set5" for r in rows if r["use"] == "train")


@pytest.mark.parametrize("sets", ["T91,Set5", "set14", "Photos,BSD100"])
def test_shard_refuses_evaluation_sets(data: Path, tmp_path: Path, sets: str) -> None:
    with pytest.raises(SystemExit, match="evaluation set"):
        _module().main(["--data-dir", str(data), "--sets", sets, "-o", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_shard_carries_int8_vgg_that_keeps_the_content_loss(data: Path, shared: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from srgan.trainer.losses import ContentLoss
    from srgan.trainer.pretrained import load_vgg_features

    vgg = shared / "weights" / "vgg16_features_imagenet_torchvision.safetensors"
    out = tmp_path / "s"
    assert _module().main(["--data-dir", str(data), "--sets", "T91", "--max-mib", "14.5", "--no-val",
                           "--vgg", str(vgg), "-o", str(out)]) == 0
    packed = out / "vgg16_int8.safetensors"
    assert packed.stat().st_size < 15e6 and sum(map(len, _files(out).values())) <= 14.5 * 2**20
    # the trainer's content loss from the packed file, against the fp32 original, on a real crop and its bicubic SR
    spec = "conv1_2:0.1,conv2_2:0.1,conv3_3:1,conv4_3:1,conv5_3:1"
    with Image.open(next((out / "train").iterdir())) as im:
        hr = torch.from_numpy(np.asarray(im.convert("RGB"))[:96, :96].copy()).permute(2, 0, 1)[None].float() / 255
    sr = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(hr, 4), scale_factor=4, mode="bicubic")
    losses = []
    for path in (vgg, packed):
        feats, info = load_vgg_features(spec, path)
        losses.append(ContentLoss(feats, "l1", taps=info["taps"])(sr.clamp(0, 1), hr).item())
    assert losses[0] > 0 and abs(losses[1] - losses[0]) / losses[0] < 0.01
    with pytest.raises(SystemExit, match="over the 10 MiB budget"):  # the VGG file alone does not fit
        _module().main(["--data-dir", str(data), "--sets", "T91", "--max-mib", "10", "--vgg", str(vgg),
                        "-o", str(tmp_path / "t")])


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["gan", "real"])
def test_gpu_script_perceptual_phases_dry_run_on_cpu(phase: str, data: Path, shared: Path, tmp_path: Path) -> None:
    """benchmarks/gpu_train_fast.sh gan|real, as a lent GPU would run it but tiny, on the CPU: the shard alone
    (crops, Set5, int8 VGG) is enough to continue fast_x4 / real_x4 from its ONNX file and validate it."""
    import os
    import subprocess
    import sys

    out = tmp_path / "shard"
    assert _module().main(["--data-dir", str(data), "--sets", "T91", "--max-mib", "15", "-o", str(out), "--vgg",
                           str(shared / "weights" / "vgg16_features_imagenet_torchvision.safetensors")]) == 0
    env = {**os.environ, "PYTHON": sys.executable, "PROBE": "6", "COPY_TO": str(tmp_path / "copy"),
           "EXTRA": "--set batch=2 --set hr_patch=64 --set workers=0 --set log_every=1 --threads 1"}
    run = subprocess.run(["bash", str(SCRIPT.parent / "gpu_train_fast.sh"), phase, str(out), str(tmp_path / "runs"),
                          "8"], cwd=SCRIPT.parents[1], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    with open(tmp_path / "copy" / "val.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and rows[-1]["set"] == "Set5"
    config = json.loads((tmp_path / "copy" / "config.json").read_text())
    assert config["_resolved"]["content_loss"]["source"].endswith("vgg16_int8.safetensors")
    if phase == "gan":  # a clean-LR model beats bicubic on clean Set5; a few degraded-LR steps need not
        assert float(rows[-1]["psnr_y"]) > float(rows[-1]["bicubic_psnr_y"])
    assert (config["arch"], config["degradation"]) == (("span-nearest", "matlab") if phase == "gan"
                                                       else ("srresnet", "real-first"))
    assert config["lpips"] == 20  # both shipped perceptual models were last trained with the LPIPS-VGG term
    assert (tmp_path / "copy" / "generator.pt").stat().st_size > 0

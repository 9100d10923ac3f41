"""Trainer facts: shapes, gradients, overfitting, phases, resume, weights loading, imresize."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srgan.runtime.resize import imresize
from srgan.trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from srgan.trainer.config import ConfigError, apply_overrides, load_config, preset
from srgan.trainer.data import DataError, PatchBatches, data_fingerprint, discover, load_pairs
from srgan.trainer.losses import ContentLoss, pixel_loss
from srgan.trainer.models import (
    SRCNN,
    Discriminator,
    MatlabBicubicUp,
    SRResNet,
    UNetDiscriminator,
    build_discriminator,
    build_generator,
)
from srgan.trainer.pretrained import (
    INT8_SCALE,
    PretrainedWeightsError,
    load_lpips,
    load_lpips_heads,
    load_vgg_features,
    quantize_int8,
    read_state_dict,
    vgg_layer_index,
)
from srgan.trainer.train import GENERATOR_NAME, RunError, train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (SHARED / "T91").is_dir(), reason="../shared/data (T91, Set5) not present")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Three real T91 photographs in a plain folder."""
    if not (SHARED / "T91" / "HR").is_dir():
        pytest.skip("../shared/data/T91 not present")
    folder = tmp_path_factory.mktemp("t91")
    for src in sorted((SHARED / "T91" / "HR").glob("*.png"))[:12:4]:
        (folder / src.name).symlink_to(src)
    return folder


def tiny(name: str = "report", **kw):
    base = dict(blocks=2, channels=8, batch=2, hr_patch=32, workers=0, log_every=1, checkpoint_every=1000,
                amp="off", channels_last=False, ema_decay=0.9)
    if "steps" in kw:
        base["epochs"] = None  # an explicit step count, as the CLI's --steps
    base.update(kw)
    return apply_overrides(preset(name), base)


# ---- models ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bn", [True, False])
def test_srresnet_shapes_and_scale(bn):
    g = SRResNet(blocks=2, channels=8, bn=bn)
    for h, w in [(7, 9), (1, 5), (24, 24)]:
        assert g(torch.rand(2, 3, h, w)).shape == (2, 3, 4 * h, 4 * w)
    assert sum(isinstance(m, torch.nn.PixelShuffle) for m in g.modules()) == 2
    assert g.head[0].kernel_size == (9, 9) and g.tail.kernel_size == (9, 9)


def test_srresnet_rejects_bad_hparams():
    with pytest.raises(ValueError, match="power of two"):
        SRResNet(scale=3)
    with pytest.raises(KeyError, match="choose one of"):
        build_generator("edsr")


@pytest.mark.parametrize("disc", ["vgg", "unet"])
def test_every_parameter_gets_a_gradient(disc):
    g, d = SRResNet(blocks=2, channels=8), build_discriminator(disc, in_size=32, channels=8)
    sr = g(torch.rand(2, 3, 8, 8))
    (sr.mean() + d(sr).mean()).backward()
    for name, p in list(g.named_parameters()) + list(d.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_unet_discriminator_judges_each_pixel_with_spectrally_normalised_layers():
    torch.manual_seed(0)
    d = UNetDiscriminator(in_size=32, channels=8)
    x = torch.rand(2, 3, 32, 32)
    for _ in range(20):  # train-mode passes run the power iteration that estimates each layer's sigma
        d(x)
    assert d(x).shape == (2, 1, 32, 32)
    normalised = [m for m in d.modules() if hasattr(m, "parametrizations")]
    assert len(normalised) == 3 + 3 + 2  # down, up, refine; the stem and the head are plain
    for m in normalised:  # the weight a layer uses has its largest singular value at 1
        assert torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() == pytest.approx(1.0, abs=0.05)
    y = x.clone()
    y[:, :, :4, :4] = 0.5  # a change in one corner: logits far from it (beyond the receptive field) keep
    d.eval()
    a, b = d(x), d(y)
    assert not torch.equal(a[..., :4, :4], b[..., :4, :4])
    assert (a - b).abs()[..., 24:, 24:].max().item() < (a - b).abs()[..., :4, :4].max().item()
    with pytest.raises(ValueError, match="divisible by 8"):
        UNetDiscriminator(in_size=36)
    with pytest.raises(KeyError, match="choose one of"):
        build_discriminator("patchgan")


def test_discriminator_one_logit_and_srcnn_takes_lr():
    assert Discriminator(in_size=96).eval()(torch.rand(3, 3, 96, 96)).shape == (3, 1)
    assert SRCNN()(torch.rand(1, 3, 10, 6)).shape == (1, 3, 40, 24)


def test_matlab_bicubic_module_equals_numpy_imresize():
    x = torch.rand(1, 3, 11, 6, dtype=torch.float64)
    up = MatlabBicubicUp(4).double()(x)[0].permute(1, 2, 0).numpy()
    ref = imresize(x[0].permute(1, 2, 0).numpy(), 4.0)
    assert np.abs(up - ref).max() < 1e-12


def test_overfit_one_batch_loss_decreases():
    torch.manual_seed(0)
    g = SRResNet(blocks=2, channels=16, bn=False)
    # Smooth targets a small net can fit: bilinear upsamplings of random 8x8 images.
    hr = torch.nn.functional.interpolate(torch.rand(4, 3, 8, 8), size=32, mode="bilinear", align_corners=False)
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = pixel_loss("l1", g(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0] and min(losses[-5:]) < min(losses[:5])


# ---- imresize ---------------------------------------------------------------------------------

def test_imresize_reproduces_linear_ramp_and_constants():
    ramp = np.tile(np.arange(40, dtype=np.float64), (8, 1))
    up = imresize(ramp, 4.0)
    # a = -0.5 cubic convolution reproduces linear functions exactly away from the borders;
    # output column j sits at input coordinate (j + 0.5) / 4 - 0.5.
    j = np.arange(160)
    assert np.allclose(up[4, 8:-8], ((j + 0.5) / 4 - 0.5)[8:-8], atol=1e-12)
    const = np.full((13, 17, 3), 77, np.uint8)
    assert (imresize(const, 0.25) == 77).all() and imresize(const, 0.25).shape == (4, 5, 3)


def _direct_imresize_pixel(row: np.ndarray, x: int, scale: float) -> float:
    """One output sample of MATLAB's antialiased bicubic, written out term by term (1-based x)."""
    n = len(row)
    u = x / scale + 0.5 * (1 - 1 / scale)
    num = den = 0.0
    stretch = min(scale, 1.0)  # the kernel is widened only when shrinking (antialiasing)
    for j in range(-64, n + 64):
        t = abs(stretch * (u - j))
        w = stretch * ((1.5 * t**3 - 2.5 * t**2 + 1) if t <= 1
                       else (-0.5 * t**3 + 2.5 * t**2 - 4 * t + 2) if t <= 2 else 0)
        k = j
        while not 1 <= k <= n:  # symmetric padding
            k = 1 - k if k < 1 else 2 * n + 1 - k
        num, den = num + w * row[k - 1], den + w
    return num / den


def test_imresize_known_values():
    row = np.array([3, 0, 0, 0, 10, 10, 10, 10, 7, 1, 5, 2], dtype=np.float64)
    out = imresize(row[None, :], size=(1, 3))
    assert out.shape == (1, 3)
    for x in range(1, 4):
        assert abs(out[0, x - 1] - _direct_imresize_pixel(row, x, 0.25)) < 1e-12
    up = imresize(row[None, :], size=(1, 48))
    assert all(abs(up[0, x - 1] - _direct_imresize_pixel(row, x, 4.0)) < 1e-12 for x in (1, 2, 17, 48))


@needs_data
def test_imresize_matches_official_matlab_lr():
    psnrs = []
    for hr_path in sorted((SHARED / "Set5" / "HR").glob("*.png")):
        ours = imresize(np.asarray(Image.open(hr_path).convert("RGB")), 0.25).astype(np.float64)
        theirs = np.asarray(Image.open(SHARED / "Set5" / "LR_bicubic_x4" / hr_path.name).convert("RGB"))
        psnrs.append(10 * np.log10(255**2 / np.mean((ours - theirs) ** 2)))
    assert min(psnrs) > 45.0


# ---- data -------------------------------------------------------------------------------------

def test_discover_layouts(tmp_path):
    div = tmp_path / "div2k"
    (div / "DIV2K_train_HR").mkdir(parents=True)
    (div / "DIV2K_train_LR_bicubic" / "X4").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(div / "DIV2K_train_HR" / "0001.png")
    Image.new("RGB", (10, 10)).save(div / "DIV2K_train_LR_bicubic" / "X4" / "0001x4.png")
    Image.new("RGB", (40, 40)).save(div / "DIV2K_train_HR" / "0002.png")
    found = discover(div, 4)
    assert [(h.name, lr.name if lr else None) for h, lr in found] == [("0001.png", "0001x4.png"), ("0002.png", None)]
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nope", 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        discover(tmp_path / "empty", 4)


def test_corrupt_training_image_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        load_pairs([tmp_path], 4)


def test_decoded_pair_cache_is_exact_and_safe_for_concurrent_runs(tiny_data, tmp_path, monkeypatch):
    """Two runs sharing --cache may write the same entry at once: neither may fail or read a torn file."""
    import srgan.trainer.data as data
    cache = tmp_path / "cache"
    real_savez, nested = np.savez, []

    def savez_with_a_concurrent_writer(fh, **arrays):  # another run writes the same entry before this one renames
        real_savez(fh, **arrays)
        if not nested:  # once: the placeholder stops the other writer's own savez from recursing
            nested.append(None)
            nested[0] = load_pairs([tiny_data], 4, cache_dir=cache)

    monkeypatch.setattr(data.np, "savez", savez_with_a_concurrent_writer)
    first = load_pairs([tiny_data], 4, cache_dir=cache)
    monkeypatch.setattr(data.np, "savez", real_savez)
    again = load_pairs([tiny_data], 4, cache_dir=cache)  # every pair now read from the cache
    fresh = load_pairs([tiny_data], 4)
    assert len(list(cache.glob("*.npz"))) == len(fresh) == 3 and not list(cache.glob("*.tmp*"))
    for a, b, c, d in zip(first, nested[0], again, fresh):
        assert a.name == d.name and np.array_equal(a.hr, d.hr) and np.array_equal(a.lr, d.lr)
        assert np.array_equal(b.lr, d.lr) and np.array_equal(c.hr, d.hr) and np.array_equal(c.lr, d.lr)


def test_patches_are_aligned_and_deterministic(tiny_data):
    pairs = load_pairs([tiny_data], 4, min_hr=32)
    ds = PatchBatches(pairs, scale=4, lr_patch=8, batch=3, seed=1)
    lr, hr = ds[5]
    assert lr.shape == (3, 3, 8, 8) and hr.shape == (3, 3, 32, 32)
    assert torch.equal(ds[5][0], lr) and not torch.equal(ds[6][0], lr)
    # LR patch is the MATLAB-bicubic downscale of the HR patch, up to crop borders.
    hr_np = (hr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    lr_np = (lr[0].permute(1, 2, 0).numpy() * 255).round()
    inner = imresize(hr_np, 0.25).astype(np.float64)[2:-2, 2:-2]
    assert np.abs(inner - lr_np[2:-2, 2:-2]).mean() < 2.0


# ---- config -----------------------------------------------------------------------------------

def test_config_strict_overrides():
    with pytest.raises(ConfigError, match="unknown config key"):
        apply_overrides(preset("psnr"), {"lerning_rate": 1})
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("nope")
    cfg = apply_overrides(preset("report"), {"lr-milestones": "10,20", "bn": "false"})
    assert cfg.lr_milestones == (10, 20) and cfg.bn is False
    assert preset("report").d_every == 6 and preset("report").adv == 1e-6 and preset("report").warmup_pixel == 0.07
    assert preset("paper").content_feature_scale == 12.75


def test_saved_config_of_an_older_run_still_loads(tmp_path):
    """A run saved before ``eval_every`` was retired resumes: the key is dropped; unknown keys still fail."""
    saved = dataclasses.asdict(preset("psnr")) | {"eval_every": 1000, "_resolved": {"steps": 5}}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert load_config(tmp_path / "config.json") == preset("psnr")
    (tmp_path / "config.json").write_text(json.dumps(saved | {"evl_every": 3}))
    with pytest.raises(ConfigError, match="evl_every"):
        load_config(tmp_path / "config.json")
    (tmp_path / "config.json").write_text('{"preset": "psnr", ')  # torn by hand: a typed error, not a traceback
    with pytest.raises(ConfigError, match="cannot read the config .*config.json"):
        load_config(tmp_path / "config.json")


def test_errors_share_one_base_class():
    from srgan.export.errors import ExportError
    from srgan.runtime.errors import DeviceError, SRGANError
    from srgan.trainer import train as train_module

    for cls in (ConfigError, CheckpointError, DataError, PretrainedWeightsError, ExportError, RunError):
        assert issubclass(cls, SRGANError), cls
    with pytest.raises(DeviceError, match="unknown device"):  # the runtime's: one DeviceError for both
        train_module.resolve_device("tpu")


def test_data_fingerprint_sees_added_renamed_and_resized_files(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 40), (i, 0, 0)).save(folder / f"{i}.png")
    first = data_fingerprint([folder], 4)
    assert first["images"] == 2 and data_fingerprint([folder], 4) == first
    (folder / "1.png").rename(folder / "2.png")
    renamed = data_fingerprint([folder], 4)
    assert renamed["images"] == 2 and renamed != first
    Image.new("RGB", (48, 40)).save(folder / "2.png")
    assert data_fingerprint([folder], 4) not in (first, renamed)
    Image.new("RGB", (40, 40)).save(folder / "3.png")
    assert data_fingerprint([folder], 4)["images"] == 3


def test_train_refuses_a_folder_that_holds_a_run(tiny_data, tmp_path):
    """The library call refuses before any work (no data is read, nothing is written)."""
    (tmp_path / "losses.csv").write_text("step\n1\n")
    with pytest.raises(RunError, match="already holds a run .*--resume.*--overwrite"):
        train(tiny("psnr", steps=1), [tiny_data], tmp_path)
    with pytest.raises(RunError, match="checkpoint.pt does not exist"):
        train(tiny("psnr", steps=1), [tiny_data], tmp_path, resume=True)
    with pytest.raises(RunError, match="choose one"):
        train(tiny("psnr", steps=1), [tiny_data], tmp_path, resume=True, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["losses.csv"]


# ---- training loop ----------------------------------------------------------------------------

def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_phase_switch_and_frozen_discriminator(tiny_data, tmp_path):
    cfg = tiny(warmup_steps=3, steps=6, d_every=2, checkpoint_every=3)
    seen = []
    train(cfg, [tiny_data], tmp_path, random_vgg=True, on_log=seen.append)
    assert [r["phase"] for r in seen] == [1, 1, 1, 2, 2, 2]
    assert ["d_loss" in r for r in seen] == [False, False, False, False, True, False]  # 0-based steps 4 (4 % 2 == 0)
    assert all("adv_g" in r for r in seen[3:]) and not any("adv_g" in r for r in seen[:3])
    rows = _read_csv(tmp_path / "losses.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[3]["d_loss"] == "" and rows[4]["d_loss"] != ""
    assert all(r["lattice"] == "" for r in rows)  # lattice weight 0: no term


def test_phase_2_without_a_discriminator_keeps_its_content_loss(tiny_data, tmp_path):
    """adv=0 in phase 2 is the paper's SRResNet-VGG (pixel + content): the VGG term is built and weighed,
    not silently dropped with the discriminator."""
    seen = []
    train(tiny(warmup_steps=1, steps=3, adv=0.0, pixel=1.0), [tiny_data], tmp_path, random_vgg=True,
          on_log=seen.append)
    assert [r["phase"] for r in seen] == [1, 2, 2]
    assert not any("adv_g" in r or "d_loss" in r for r in seen)
    assert all(r["content"] > 0 and r["g_total"] == pytest.approx(r["pixel"] + r["content"], rel=1e-4)
               for r in seen[1:])
    assert load_checkpoint(tmp_path / "checkpoint.pt").get("d") is None


def test_lattice_loss_sees_only_the_pixel_lattice():
    """The checkerboard penalty: a +-a pattern of period 2 costs a; a constant offset, or the same
    pattern in both images, costs nothing; random noise costs far less than the pattern."""
    from srgan.trainer.losses import lattice_loss
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 96, 96)
    board = torch.zeros(96, 96)
    board[::2, ::2], board[1::2, 1::2] = 0.01, -0.01
    assert lattice_loss(hr + board, hr, 4).item() == pytest.approx(0.005, rel=1e-4)
    assert lattice_loss(hr + 0.02, hr, 4).item() < 1e-7
    assert lattice_loss(hr + board, hr + board, 4).item() == 0.0
    assert lattice_loss(hr + 0.01 * torch.randn_like(hr), hr, 4).item() < 0.1 * 0.005
    sr = (hr + board).requires_grad_(True)
    lattice_loss(sr, hr, 4).backward()
    assert sr.grad.abs().sum() > 0


def test_lowfreq_loss_sees_block_means_only():
    """Colour / LR-scale fidelity: a colour offset costs its size; detail that averages out inside
    each 4x4 block (a period-2 checkerboard) costs nothing."""
    from srgan.trainer.losses import lowfreq_loss
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 96, 96)
    board = torch.zeros(96, 96)
    board[::2, ::2], board[1::2, 1::2], board[::2, 1::2], board[1::2, ::2] = 0.05, 0.05, -0.05, -0.05
    tint = torch.tensor([0.0, 0.0, 0.02]).view(1, 3, 1, 1)
    assert lowfreq_loss(hr + tint, hr, 4).item() == pytest.approx(0.02 / 3, rel=1e-4)
    assert lowfreq_loss(hr + board, hr, 4).item() < 1e-7


def test_lattice_and_lowfreq_terms_are_logged_in_phase_2(tiny_data, tmp_path):
    seen = []
    train(tiny(warmup_steps=1, steps=3, lattice=10.0, lowfreq=5.0), [tiny_data], tmp_path, random_vgg=True,
          on_log=seen.append)
    assert ["lattice" in r and "lowfreq" in r for r in seen] == [False, True, True]
    rows = _read_csv(tmp_path / "losses.csv")
    assert rows[0]["lattice"] == rows[0]["lowfreq"] == "" and float(rows[2]["lattice"]) > 0
    assert float(rows[2]["lowfreq"]) > 0


def test_a_unet_run_trains_d_per_pixel_and_resume_keeps_its_discriminator(tiny_data, tmp_path):
    cfg = tiny(warmup_steps=1, steps=3, d_every=1, disc="unet", disc_channels=4)
    seen = []
    train(cfg, [tiny_data], tmp_path, random_vgg=True, on_log=seen.append)
    assert ["d_loss" in r for r in seen] == [False, True, True] and 0 < seen[-1]["d_fake"] < 1
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["d_hparams"] == {"in_size": cfg.hr_patch, "channels": 4, "in_channels": 3}
    assert any(k.endswith("parametrizations.weight.original") for k in ck["d"])
    with pytest.raises(CheckpointError, match="not the configured vgg"):
        train(apply_overrides(cfg, {"steps": 4, "disc": "vgg"}), [tiny_data], tmp_path, random_vgg=True,
              resume=True)
    with pytest.raises(ConfigError, match="unknown discriminator 'patchgan'; choose one of"):
        train(apply_overrides(cfg, {"disc": "patchgan"}), [tiny_data], tmp_path / "bad", random_vgg=True)


def test_discriminator_untouched_during_warmup(tiny_data, tmp_path):
    cfg = tiny(warmup_steps=4, steps=6, d_every=1, checkpoint_every=4)
    states = {}
    train(cfg, [tiny_data], tmp_path, random_vgg=True,
          on_checkpoint=lambda step, g: states.setdefault(step, load_checkpoint(tmp_path / "checkpoint.pt")["d"]))
    torch.manual_seed(cfg.seed)
    build_generator(cfg.arch, **cfg.model_kwargs())
    fresh = Discriminator(in_size=cfg.hr_patch).state_dict()
    assert all(torch.equal(fresh[k], states[4][k]) for k in fresh)
    assert any(not torch.equal(fresh[k], states[6][k]) for k in fresh if k.endswith("weight"))


def test_resume_is_exact(tiny_data, tmp_path):
    full = tiny(warmup_steps=2, steps=6, d_every=2)
    train(full, [tiny_data], tmp_path / "a", random_vgg=True)
    half = apply_overrides(full, {"steps": 3})
    train(half, [tiny_data], tmp_path / "b", random_vgg=True)
    rows = (tmp_path / "b" / "losses.csv").read_text().splitlines()
    old = ["step", "phase", "lr_g", "g_total", "pixel", "content", "adv_g", "d_loss", "d_real", "d_fake",
           "steps_per_s", "images_per_s"]  # a log from before the lattice column: resume rewrites it
    by_name = [dict(zip(rows[0].split(","), r.split(","))) for r in rows[1:]]
    text = [",".join(old), *(",".join(r[k] for k in old) for r in by_name)]
    text += ["4,2,0.0001,9,9,,,,,,1,1", "5,2,0.0001,9,9,,,,,,1,1"]  # an interrupted run logged past its checkpoint
    (tmp_path / "b" / "losses.csv").write_text("\n".join(text) + "\n")
    train(full, [tiny_data], tmp_path / "b", random_vgg=True, resume=True)
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    for key in ("g", "g_ema", "d"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    logged = [[(r["step"], r["g_total"]) for r in _read_csv(tmp_path / d / "losses.csv")] for d in "ab"]
    assert logged[0] == logged[1] and len(logged[1]) == 6  # same losses, and no rows replayed twice


def test_checkpoint_is_self_describing_and_atomic(tiny_data, tmp_path):
    train(tiny("psnr", steps=2), [tiny_data], tmp_path)
    g = load_checkpoint(tmp_path / GENERATOR_NAME)
    assert g["arch"] == "srresnet" and g["hparams"]["blocks"] == 2 and g["step"] == 2 and "opt_g" not in g
    model = build_generator(g["arch"], **g["hparams"])
    model.load_state_dict(g["g_ema"])
    before = (tmp_path / "checkpoint.pt").read_bytes()

    class Boom(Exception):
        pass

    class Exploding:
        def __reduce__(self):
            raise Boom()

    with pytest.raises(Boom):
        save_checkpoint({"format_version": 1, "arch": "x", "bad": Exploding()}, tmp_path / "checkpoint.pt")
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


# ---- pretrained weights -----------------------------------------------------------------------

def _random_vgg_file(path: Path, arch: str) -> None:
    import torchvision
    net = getattr(torchvision.models, arch)(weights=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)


def test_int8_vgg_file_round_trip_and_features(tmp_path):
    from safetensors.torch import save_file
    _random_vgg_file(tmp_path / "vgg16.pth", "vgg16")
    sd = {k: v for k, v in read_state_dict(tmp_path / "vgg16.pth").items() if k.startswith("features.")}
    q = quantize_int8(sd)
    convs = [k for k, v in sd.items() if v.dim() == 4]
    assert len(convs) == 13 and all(q[k].dtype == torch.int8 and q[k + INT8_SCALE].shape == sd[k].shape[:1]
                                    for k in convs)
    save_file(q, str(tmp_path / "vgg16_int8.safetensors"))
    back = read_state_dict(tmp_path / "vgg16_int8.safetensors")
    assert set(back) == set(sd) and all(v.dtype == torch.float32 for v in back.values())
    for k, v in sd.items():
        step = v.abs().amax(dim=tuple(range(1, v.dim())), keepdim=True) / 127 if v.dim() == 4 else 0
        assert ((back[k] - v).abs() <= step / 2 + 1e-7).all(), k  # half a step per output channel at most
        assert v.dim() == 4 or torch.equal(back[k], v)  # biases exact
    assert (tmp_path / "vgg16_int8.safetensors").stat().st_size < 0.3 * (tmp_path / "vgg16.pth").stat().st_size
    spec = "conv1_2:0.1,conv3_3:1,conv5_3:1"
    f32, _ = load_vgg_features(spec, tmp_path / "vgg16.pth")
    f8, info = load_vgg_features(spec, tmp_path / "vgg16_int8.safetensors")
    assert info["arch"] == "vgg16" and info["source"].endswith("vgg16_int8.safetensors")
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    a, b = f32(x), f8(x)
    assert 0 < ((a - b).abs().mean() / a.abs().mean()).item() < 0.05

    # a scale without its int8 tensor is a typed error naming the file, not a silent fp32 load
    save_file({"0.weight" + INT8_SCALE: torch.ones(64)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(PretrainedWeightsError, match="bad.safetensors"):
        read_state_dict(tmp_path / "bad.safetensors")


def test_vgg19_from_torchvision_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _random_vgg_file(tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth", "vgg19")
    net, info = load_vgg_features("relu5_4")
    assert info["arch"] == "vgg19" and info["layer"] == "relu5_4" and len(net) == 36
    assert not any(p.requires_grad for p in net.parameters())
    loss = ContentLoss(net)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    value = loss(x, torch.rand(1, 3, 32, 32))
    value.backward()
    assert value.item() > 0 and x.grad.abs().sum() > 0


def test_vgg16_file_maps_relu5_4_to_relu5_3(tmp_path):
    import torchvision
    from safetensors.torch import save_file
    feats = torchvision.models.vgg16(weights=None).features.state_dict()
    path = tmp_path / "vgg16.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in feats.items()}, str(path))
    net, info = load_vgg_features("relu5_4", path)
    assert info == {"arch": "vgg16", "layer": "relu5_3", "requested_layer": "relu5_4", "source": str(path),
                    "taps": [[29, 1.0]]}
    assert len(net) == 30 and torch.equal(net[28].weight, feats["28.weight"])
    assert vgg_layer_index("vgg19", "conv5_4") == (34, "conv5_4")


def test_multi_layer_content_loss_sums_weighted_pre_activation_taps(tmp_path):
    """Real-ESRGAN-style taps: each term is the distance at that layer (pre-activation values,
    not clobbered by the in-place ReLU that follows in torchvision's VGG), times its weight."""
    import torchvision
    from safetensors.torch import save_file
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).features
    path = tmp_path / "vgg16.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in vgg.state_dict().items()}, str(path))
    assert vgg_layer_index("vgg16", "conv3_4") == (14, "conv3_3")
    assert vgg_layer_index("vgg16", "relu4_4")[1] == "relu4_3"
    net, info = load_vgg_features("conv1_2:0.1, conv2_2:0.5,conv5_4", path)
    assert info["layer"] == "conv1_2:0.1,conv2_2:0.5,conv5_3:1" and info["taps"] == [[2, 0.1], [7, 0.5], [28, 1.0]]
    assert len(net) == 29
    loss = ContentLoss(net, "l1", taps=info["taps"])
    sr, hr = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref = vgg.eval()
    for m in ref:
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    expected = sum(w * (ref[: i + 1]((sr - mean) / std) - ref[: i + 1]((hr - mean) / std)).abs().mean()
                   for i, w in ((2, 0.1), (7, 0.5), (28, 1.0)))
    assert torch.allclose(loss(sr, hr), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="weight"):
        load_vgg_features("conv1_2:x", path)


def test_lpips_vgg_term_matches_the_lpips_package_on_the_content_pass(tmp_path):
    """The phase-2 LPIPS-VGG term (``--set lpips``) reads the content loss's own VGG-16 pass; it must equal the
    lpips package's LPIPS(net="vgg") with the same trunk and heads, per batch mean, and keep the content term."""
    import lpips
    import torchvision
    from safetensors.torch import save_file
    torch.manual_seed(1)
    vgg = torchvision.models.vgg16(weights=None).features
    path = tmp_path / "vgg16.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in vgg.state_dict().items()}, str(path))
    net, info = load_vgg_features("conv1_2:0.1,conv5_4:1", path)
    plain, with_lpips = (ContentLoss(net, "l1", taps=info["taps"], lpips_heads=h)
                         for h in (None, load_lpips_heads("vgg")))
    ref = lpips.LPIPS(net="vgg", version="0.1", pretrained=True, pnet_rand=True, verbose=False).eval()
    for i in range(1, 6):
        for name, module in getattr(ref.net, f"slice{i}").named_children():
            module.load_state_dict(vgg[int(name)].state_dict())
    sr, hr = torch.rand(3, 3, 48, 48), torch.rand(3, 3, 48, 48)
    content, lp = with_lpips.terms(sr, hr)
    expected = ref(sr, hr, normalize=True).mean()
    assert lp is not None and lp.item() > 0.01 and torch.allclose(lp, expected, rtol=1e-4)
    assert torch.allclose(content, plain(sr, hr)) and plain.terms(sr, hr)[1] is None
    assert with_lpips.terms(hr, hr)[1].item() == 0.0
    x = sr.clone().requires_grad_(True)
    with_lpips.terms(x, hr)[1].backward()
    assert x.grad.abs().sum() > 0
    short, short_info = load_vgg_features("conv3_4", path)  # the net ends at conv3_3: no conv4_3 / conv5_3 there
    with pytest.raises(ValueError, match="through conv5_3"):
        ContentLoss(short, taps=short_info["taps"], lpips_heads=load_lpips_heads("vgg"))


def test_missing_weights_error_names_file_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(PretrainedWeightsError) as err:
        load_vgg_features("relu5_4")
    text = str(err.value)
    assert "vgg19-dcbb9e9d.pth" in text and str(tmp_path / "empty" / "hub" / "checkpoints") in text
    assert "--vgg-weights" in text
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        load_vgg_features("relu5_4", tmp_path / "missing.pth")


def test_lpips_from_cache_with_random_trunk(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = torchvision.models.alexnet(weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    model, source = load_lpips()
    assert torch.equal(model.net.slice1[0].weight, net.features[0].weight)
    assert torch.equal(getattr(model.net.slice5, "10").weight, net.features[10].weight)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert model(x, x).item() == 0.0 and model(x, -x).item() > 0


# ---- DIV2K fetch (a real HTTP download from a loopback server) -------------------------------

def test_fetch_div2k_downloads_verifies_and_caches(tmp_path):
    import http.server
    import threading
    import zipfile

    from srgan.trainer.div2k import fetch_div2k

    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "DIV2K_train_HR.zip", "w") as zf:
        buf = __import__("io").BytesIO()
        Image.new("RGB", (64, 48), (10, 20, 30)).save(buf, "PNG")
        zf.writestr("DIV2K_train_HR/0001.png", buf.getvalue())
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        root = fetch_div2k(tmp_path / "div2k", ("train_hr",), base_url=url)
        assert [h.name for h, _ in discover(root, 4)] == ["0001.png"]
        assert len(hits) == 1
        fetch_div2k(root, ("train_hr",), base_url=url)  # cached: no second download
        assert len(hits) == 1
        with pytest.raises(DataError, match="expected 0000"):
            fetch_div2k(root, ("train_hr",), base_url=url, expected_sha256={"DIV2K_train_HR.zip": "0000"})
        with pytest.raises(DataError, match="could not download .*--data DIR"):
            fetch_div2k(tmp_path / "other", ("train_lr_x4",), base_url=url)
        assert not list((tmp_path / "other").glob("*.part"))
    finally:
        server.shutdown()


def test_report_preset_counts_epochs(tiny_data, tmp_path):
    cfg = preset("report")
    assert cfg.resolve_steps(31) == 18 * 31 and cfg.resolve_warmup(31) == 2 * 31
    assert apply_overrides(cfg, {"steps": 7, "epochs": "none"}).resolve_steps(31) == 7
    seen = []
    result = train(tiny("report", checkpoint_every=10**6), [tiny_data], tmp_path, random_vgg=True,
                   on_log=seen.append)
    # 3 images, batch 2 -> 1 epoch = 2 steps: 2 warm-up epochs + 16 adversarial = 36 steps
    assert (result.epoch_steps, result.warmup_steps, result.steps, result.step) == (2, 4, 36, 36)
    # 0-based steps 6, 12, ..., 30
    assert [r["phase"] for r in seen].count(1) == 4 and sum("d_loss" in r for r in seen) == 5

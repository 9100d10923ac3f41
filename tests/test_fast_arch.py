"""The fast generator (trainer/span.py, SPAN) and the architecture registry: shapes, receptive
radius, re-parameterisation, ONNX export with exact tiling, presets, and a short training run."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from srgan.export.onnx_export import export_generator
from srgan.export.receptive import measure_receptive_radius, receptive_radius
from srgan.trainer.checkpoint import generator_from_checkpoint, load_checkpoint, save_checkpoint
from srgan.trainer.config import ConfigError, TrainConfig, load_config, preset, save_config
from srgan.trainer.models import GENERATORS, build_generator, deploy_generator
from srgan.trainer.span import SPAN, RepConv3

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial biases everywhere (a border error in the re-parameterisation shows only with them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("scale", [2, 4])
def test_span_output_shape_and_scale(scale: int) -> None:
    m = SPAN(scale=scale, channels=8, blocks=2).eval()
    x = torch.rand(2, 3, 7, 9)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (2, 3, 7 * scale, 9 * scale) and torch.isfinite(y).all()


def test_span_rejects_bad_hparams() -> None:
    with pytest.raises(ValueError, match="blocks"):
        SPAN(blocks=1)
    with pytest.raises(ValueError, match="rep_gain"):
        RepConv3(4, 4, gain=0)


def test_span_anchor_skip_is_nearest_upsampling() -> None:
    """With the learned convs silenced, the output is the LR image repeated scale x scale."""
    m = SPAN(scale=4, channels=8, blocks=2, rep=False).eval()
    with torch.no_grad():
        m.tail.weight.zero_()
        m.tail.bias.zero_()
        x = torch.rand(1, 3, 5, 6)
        y = m(x)
    assert torch.equal(y, x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))


@pytest.mark.parametrize("blocks", [2, 3])
def test_span_receptive_radius_derived_equals_measured(blocks: int) -> None:
    """3x3 head + 3 convs per block + 3x3 trunk + 3x3 tail: 3 * blocks + 3 LR px, and the
    perturbation measurement (export/receptive.py) finds exactly that."""
    torch.manual_seed(blocks)
    m = _randomised(SPAN(scale=4, channels=6, blocks=blocks, rep=True)).deploy()
    derived = receptive_radius(m)
    assert derived == 3 * blocks + 3
    assert measure_receptive_radius(m, derived) == derived


def test_reparameterised_equals_expanded() -> None:
    """Every Conv3XC collapses to one 3x3 conv: same function, borders included (odd sizes)."""
    torch.manual_seed(1)
    m = _randomised(SPAN(scale=4, channels=8, blocks=2, rep=True, rep_gain=2)).double()
    plain = m.deploy()
    assert not any(isinstance(x, RepConv3) for x in plain.modules())
    assert plain.hparams["rep"] is False and m.hparams["rep"] is True
    x = torch.rand(2, 3, 11, 6, dtype=torch.float64)
    with torch.no_grad():
        a, b = m(x), plain(x)
    assert (a - b).abs().max().item() < 1e-10
    # and one conv alone, which would differ on the border ring if the bias padding were wrong
    conv = _randomised(RepConv3(3, 5, gain=3)).double()
    w, bias = conv.fused()
    with torch.no_grad():
        ref = torch.nn.functional.conv2d(x, w, bias, padding=1)
        assert (conv(x) - ref).abs().max().item() < 1e-10


def test_registry_unknown_arch_lists_choices() -> None:
    with pytest.raises(KeyError, match="span"):
        build_generator("edsr-not-registered")
    with pytest.raises(ConfigError, match="srresnet"):
        TrainConfig(arch="edsr-not-registered").model_kwargs()


@pytest.mark.parametrize("arch", sorted(GENERATORS))
def test_every_registered_arch_builds_from_a_config_and_deploys_to_the_same_function(arch: str) -> None:
    cfg = TrainConfig(arch=arch, channels=8, blocks=2)
    torch.manual_seed(0)
    m = _randomised(build_generator(arch, **cfg.model_kwargs()))
    d = deploy_generator(arch, m)
    x = torch.rand(1, 3, 9, 10)
    with torch.no_grad():
        assert torch.allclose(m(x), d(x), atol=1e-5)
    assert receptive_radius(d) >= 1


def test_fast_presets_round_trip(tmp_path: Path) -> None:
    for name in ("fast-psnr", "fast"):
        cfg = preset(name)
        assert cfg.arch == "span" and cfg.preset == name
        save_config(cfg, tmp_path / f"{name}.json")
        assert load_config(tmp_path / f"{name}.json") == cfg
        m = build_generator(cfg.arch, **cfg.model_kwargs())
        assert sum(p.numel() for p in m.parameters()) < 500_000
    assert preset("fast").adv > 0 and preset("fast-psnr").adv == 0


def _save_tiny(model: SPAN, path: Path) -> Path:
    arch = "span-nearest" if model.hparams["upsampler"] == "nearest" else "span-rep" if model.hparams["rep"] else "span"
    save_checkpoint({"format_version": 1, "arch": arch,
                     "hparams": model.hparams, "g": model.state_dict(), "g_ema": None, "step": 3, "phase": 1,
                     "warmup_steps": 0, "config": {"preset": "tiny"}, "content_loss": None, "train_images": 1},
                    path)
    return path


def test_export_collapsed_onnx_tiles_exactly(tmp_path: Path) -> None:
    """A re-parameterised SPAN exports in its collapsed form with fp32 parity against the expanded
    checkpoint, the stated radius is measured, and tiling by that radius equals the whole image."""
    from srgan.runtime.pipeline import upscale_image
    from srgan.runtime.session import load_model

    torch.manual_seed(2)
    m = _randomised(SPAN(scale=4, channels=8, blocks=2, rep=True))
    report = export_generator(_save_tiny(m, tmp_path / "run" / "generator.pt"), tmp_path / "span.onnx",
                              real_images=[])
    assert report.receptive_radius == report.measured_radius == 9
    assert report.parity.max_abs < 1e-4
    import onnx

    ops = {n.op_type for n in onnx.load(str(report.path)).graph.node}
    assert "Conv" in ops and "Sigmoid" in ops
    n_conv = sum(n.op_type == "Conv" for n in onnx.load(str(report.path)).graph.node)
    assert n_conv == 1 + 3 * 2 + 1 + 1 + 1  # collapsed: head, 3 per block, trunk, fuse, tail
    model = load_model(report.path, device="cpu", threads=1, engine="onnxruntime", precision="fp32")
    assert model.receptive_radius == 9
    img = (np.random.default_rng(0).random((37, 41, 3)) * 255).astype(np.uint8)
    whole = upscale_image(img, model, tile=0, max_memory=None)
    tiled = upscale_image(img, model, tile=12, max_memory=None)
    assert whole.shape == (148, 164, 3)
    assert np.array_equal(whole, tiled)


@pytest.mark.skipif(not (SHARED / "data" / "T91").is_dir(), reason="needs ../shared/data/T91")
def test_three_step_train_smoke_and_resume(tmp_path: Path) -> None:
    from PIL import Image

    from srgan.trainer.train import train

    data = tmp_path / "data"
    data.mkdir()
    for src in sorted((SHARED / "data" / "T91").rglob("*.png"))[:3]:
        with Image.open(src) as im:
            im.convert("RGB").crop((0, 0, 64, 64)).save(data / src.name)
    cfg = dataclasses.replace(preset("fast-psnr"), channels=8, blocks=2, hr_patch=32, batch=2, steps=3,
                              workers=0, checkpoint_every=2, log_every=1, lr_milestones=())
    result = train(cfg, [data], tmp_path / "run", device="cpu")
    assert result.step == 3 and np.isfinite(result.last_losses["pixel"])
    g, state = generator_from_checkpoint(tmp_path / "run" / "generator.pt")
    assert isinstance(g, SPAN) and state["arch"] == "span" and state["step"] == 3
    more = train(dataclasses.replace(cfg, steps=5), [data], tmp_path / "run", resume=True, device="cpu")
    assert more.step == 5 and load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 5


def test_nearest_upsampler_anchor_radius_and_no_phase_weights() -> None:
    """upsampler="nearest": with the output conv silenced the result is the nearest-upsampled LR; the
    derived receptive radius is what the perturbation measures; a constant input gives a constant
    output (no weight belongs to one sub-pixel phase, so no pattern on the x4 lattice)."""
    torch.manual_seed(3)
    m = _randomised(SPAN(scale=4, channels=6, blocks=2, rep=False, upsampler="nearest", up_channels=4))
    assert not hasattr(m, "shuffle") and m.hparams["upsampler"] == "nearest"
    derived = receptive_radius(m)
    # head + 3 per block + trunk, + the upsampler's LR conv; its HR convs stay inside the LR cell
    assert derived == measure_receptive_radius(m, derived) == 3 * 2 + 3 + 1
    x = torch.full((1, 3, 40, 40), 0.4)
    with torch.no_grad():
        y = m(x)[:, :, 60:100, 60:100]  # beyond the receptive radius from the zero-padded border
        assert torch.allclose(y, y[:, :, :1, :1].expand_as(y), atol=1e-6)
        m.up_out.weight.zero_()
        m.up_out.bias.zero_()
        x = torch.rand(1, 3, 5, 6)
        assert torch.equal(m(x), x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))
    with pytest.raises(ValueError, match="upsampler"):
        SPAN(upsampler="bilinear")
    with pytest.raises(ValueError, match="products? of 2s and 3s"):
        SPAN(scale=5, upsampler="nearest")


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_nearest_upsampler_exports_and_tiles_exactly(tmp_path: Path, engine: str) -> None:
    from srgan.runtime.pipeline import upscale_image
    from srgan.runtime.session import load_model

    torch.manual_seed(4)
    m = _randomised(SPAN(scale=4, channels=8, blocks=2, rep=False, upsampler="nearest", up_channels=4))
    report = export_generator(_save_tiny(m, tmp_path / "run" / "generator.pt"), tmp_path / "near.onnx",
                              real_images=[])
    assert report.receptive_radius == report.measured_radius == 10 and report.parity.max_abs < 1e-4
    model = load_model(report.path, device="cpu", threads=1, engine=engine, precision="fp32")
    img = (np.random.default_rng(1).random((37, 41, 3)) * 255).astype(np.uint8)
    whole = upscale_image(img, model, tile=0, max_memory=None)
    assert whole.shape == (148, 164, 3)
    assert np.array_equal(whole, upscale_image(img, model, tile=12, max_memory=None))


def _two_t91_crops(tmp_path: Path) -> Path:
    """A training folder of two 64-px crops of T91 images."""
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    for src in sorted((SHARED / "data" / "T91").rglob("*.png"))[:2]:
        with Image.open(src) as im:
            im.convert("RGB").crop((0, 0, 64, 64)).save(data / src.name)
    return data


@pytest.mark.skipif(not (SHARED / "data" / "T91").is_dir(), reason="needs ../shared/data/T91")
def test_init_partial_loads_the_matching_layers_and_refuses_without_it(tmp_path: Path) -> None:
    """A span checkpoint starts a span-nearest run only with init_partial: the body comes from the
    checkpoint (lr 0 keeps it), the upsampler is fresh; without the key the error names the fix."""
    from srgan.trainer.checkpoint import CheckpointError
    from srgan.trainer.train import train

    data = _two_t91_crops(tmp_path)
    torch.manual_seed(5)
    init = _save_tiny(_randomised(SPAN(scale=4, channels=8, blocks=2, rep=False)), tmp_path / "init" / "g.pt")
    cfg = dataclasses.replace(preset("fast-psnr"), arch="span-nearest", channels=8, blocks=2, hr_patch=32, batch=2,
                              steps=1, workers=0, checkpoint_every=1, log_every=1, lr_milestones=(), lr_g=0.0,
                              ema_decay=0.0)
    with pytest.raises(CheckpointError, match="init_partial=true"):
        train(cfg, [data], tmp_path / "strict", device="cpu", init_from=init)
    train(dataclasses.replace(cfg, init_partial=True), [data], tmp_path / "run", device="cpu", init_from=init)
    got = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["g"]
    want = load_checkpoint(init)["g"]
    assert torch.equal(got["head.weight"], want["head.weight"]) and torch.equal(got["fuse.bias"], want["fuse.bias"])
    assert "tail.weight" not in got and "up_out.weight" in got


@pytest.mark.skipif(not (SHARED / "data" / "T91").is_dir(), reason="needs ../shared/data/T91")
def test_a_fine_tune_records_its_parents_through_resume_export_and_card(tmp_path: Path) -> None:
    """--init from an export of a fine-tune: the checkpoint (also after --resume), the ONNX metadata and the
    card name the parent and the parent's parent with their steps and sha256, so a card tells how many steps
    a model stands on."""
    from srgan.export.model_card import build_card, render_markdown
    from srgan.trainer.checkpoint import file_sha256
    from srgan.trainer.train import train

    data = _two_t91_crops(tmp_path)
    torch.manual_seed(6)
    root = _save_tiny(_randomised(SPAN(scale=4, channels=8, blocks=2, rep=False)), tmp_path / "root" / "g.pt")
    cfg = dataclasses.replace(preset("fast-psnr"), channels=8, blocks=2, hr_patch=32, batch=2, steps=2, workers=0,
                              checkpoint_every=1, log_every=1, lr_milestones=())
    train(cfg, [data], tmp_path / "child", device="cpu", init_from=root)
    child = export_generator(tmp_path / "child" / "generator.pt", tmp_path / "child.onnx").path
    train(cfg, [data], tmp_path / "grandchild", device="cpu", init_from=child)
    train(dataclasses.replace(cfg, steps=3), [data], tmp_path / "grandchild", device="cpu", resume=True)
    state = load_checkpoint(tmp_path / "grandchild" / "generator.pt")
    assert state["step"] == 3
    parent = state["initialised_from"]
    assert parent["file"] == child.as_posix() and parent["sha256"] == file_sha256(child) and parent["step"] == 2
    assert parent["initialised_from"] == {"file": root.as_posix(), "sha256": file_sha256(root), "arch": "span",
                                          "step": 3}
    card = build_card(export_generator(tmp_path / "grandchild" / "generator.pt", tmp_path / "gc.onnx").path)
    assert card["training"]["initialised_from"] == parent
    md = render_markdown(card)
    assert f"Fine-tuned from `{child.as_posix()}` (span, step 2" in md and "itself fine-tuned from" in md

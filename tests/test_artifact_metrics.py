"""Colour noise (runtime.metrics.chroma_noise_ratio) and straight-edge wobble
(runtime.metrics.edge_wobble) on synthetic images whose answer is known, and the training
terms against them (trainer.losses.chroma_loss, LDL's artifact_loss, the edge-position edge_loss)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from srgan.runtime.metrics import chroma_noise_ratio, edge_wobble


def _scene(h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth colour gradient with a coloured window grid: (h, w, 3) float in [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.3 + 0.3 * xx, 0.4 + 0.2 * yy, 0.5 - 0.2 * xx], axis=2)
    for y0 in range(12, h - 12, 24):       # horizontal mullions, 4 px thick
        img[y0:y0 + 4, 8:w - 8] = (0.9, 0.85, 0.7)
    for x0 in range(16, w - 16, 32):       # vertical ones
        img[8:h - 8, x0:x0 + 4] = (0.15, 0.2, 0.35)
    return img


def _blur(img: np.ndarray, k: int = 5) -> np.ndarray:
    out = img.copy()
    for axis in (0, 1):
        out = sum(np.roll(out, s, axis=axis) for s in range(-(k // 2), k // 2 + 1)) / k
    return out


def test_chroma_ratio_is_one_for_hr_and_ignores_luminance_detail() -> None:
    hr = _scene()
    assert chroma_noise_ratio(hr, hr, 4) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    luma = rng.normal(0, 0.05, hr.shape[:2])[:, :, None]  # equal in R, G, B: no chroma at all
    assert chroma_noise_ratio(hr + luma, hr, 4) == pytest.approx(1.0, abs=1e-9)


def test_chroma_ratio_flags_green_magenta_speckle_and_not_blur() -> None:
    hr = _scene()
    rng = np.random.default_rng(1)
    speckle = rng.normal(0, 0.03, hr.shape[:2])
    noisy = hr + np.stack([speckle, -speckle, speckle], axis=2)  # magenta <-> green
    assert chroma_noise_ratio(noisy, hr, 4) > 2.0
    assert chroma_noise_ratio(_blur(hr), hr, 4) < 0.8
    # uint8 and float inputs are the same measurement
    to8 = lambda x: np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)  # noqa: E731
    assert chroma_noise_ratio(to8(noisy), to8(hr), 4) == pytest.approx(chroma_noise_ratio(to8(noisy) / 255.0,
                                                                                           to8(hr) / 255.0, 4))


def test_chroma_ratio_gray_and_shape_errors() -> None:
    gray = np.random.default_rng(2).random((40, 40, 1))
    assert chroma_noise_ratio(gray, gray, 4) == 1.0
    gray_rgb = np.repeat(gray, 3, axis=2) * np.float64(1.0 + 1e-15)  # a gray HR stored as RGB (rounding-level chroma)
    tinted = gray_rgb + np.random.default_rng(3).normal(0, 0.01, gray_rgb.shape)
    assert chroma_noise_ratio(gray_rgb, gray_rgb, 4) == 1.0
    assert np.isnan(chroma_noise_ratio(tinted, gray_rgb, 4))  # was ~1e27: undefined, left out of the means
    with pytest.raises(ValueError, match="shape"):
        chroma_noise_ratio(np.zeros((40, 40, 3)), np.zeros((40, 44, 3)), 4)


def _wobbly(hr: np.ndarray, amplitude: int, period: int = 16) -> np.ndarray:
    """Each column shifted vertically and each row horizontally by a sine of integer pixels."""
    out = hr.copy()
    h, w = hr.shape[:2]
    for x in range(w):
        out[:, x] = np.roll(out[:, x], int(round(amplitude * math.sin(2 * math.pi * x / period))), axis=0)
    for y in range(h):
        out[y] = np.roll(out[y], int(round(amplitude * math.sin(2 * math.pi * y / period))), axis=0)
    return out


def test_edge_wobble_zero_for_hr_shifted_or_blurred_edges() -> None:
    hr = _scene()
    assert edge_wobble(hr, hr, 4) == 0.0
    shifted = np.roll(hr, 1, axis=0)  # straight but moved one pixel: not a wobble
    assert edge_wobble(shifted, hr, 4) < 0.05
    assert edge_wobble(_blur(hr, 3), hr, 4) < 0.1


def test_edge_wobble_measures_wavy_lines() -> None:
    hr = _scene()
    w1, w2 = edge_wobble(_wobbly(hr, 1), hr, 4), edge_wobble(_wobbly(hr, 2), hr, 4)
    assert w1 > 0.4
    assert w2 > 1.5 * w1  # grows with the amplitude


def test_edge_wobble_nan_without_straight_edges_and_shape_error() -> None:
    smooth = np.random.default_rng(3).random((8, 8, 3)).repeat(8, 0).repeat(8, 1)
    smooth = _blur(_blur(smooth, 9), 9)  # no step of 20 levels anywhere
    assert math.isnan(edge_wobble(smooth, smooth, 4))
    with pytest.raises(ValueError, match="shape"):
        edge_wobble(np.zeros((40, 40, 3)), np.zeros((40, 44, 3)), 4)


# ---------------------------------------------------------------- the training term (trainer.losses.chroma_loss)

def test_chroma_highpass_matches_the_metric_band() -> None:
    """The torch high-pass is the numpy metric's: its energy ratio equals chroma_noise_ratio."""
    torch = pytest.importorskip("torch")
    from srgan.trainer.losses import chroma_highpass

    hr = _scene()
    rng = np.random.default_rng(4)
    speckle = rng.normal(0, 0.03, hr.shape[:2])
    sr = hr + np.stack([speckle, -speckle, speckle], axis=2)
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].double()  # noqa: E731
    e = [float((chroma_highpass(t(x), 4)[..., 4:-4, 4:-4] ** 2).sum()) for x in (sr, hr)]
    assert e[0] / e[1] == pytest.approx(chroma_noise_ratio(sr, hr, 4), rel=1e-6)


def test_chroma_loss_sees_colour_speckle_not_luminance_detail() -> None:
    torch = pytest.importorskip("torch")
    from srgan.trainer.losses import chroma_loss

    hr = torch.rand(2, 3, 32, 32)
    luma = torch.randn(2, 1, 32, 32) * 0.05
    assert chroma_loss(hr + luma, hr, 4).item() < 1e-6  # equal R, G, B change: no chroma
    speckle = torch.randn(2, 1, 32, 32) * 0.05
    noisy = hr + torch.cat([speckle, -speckle, speckle], dim=1)
    assert chroma_loss(noisy, hr, 4).item() > 0.01
    noisy.requires_grad_(True)
    chroma_loss(noisy, hr, 4).backward()
    assert noisy.grad is not None and noisy.grad.abs().sum() > 0


def _train_tiny(tmp_path, run: str = "run", resume: bool = False,  # noqa: ANN001
                **changes: float | str) -> list[dict[str, str]]:
    """A tiny SPAN trained on two noisy window-grid scenes with pixel L1 plus ``changes``: the loss rows."""
    import csv
    import dataclasses

    from PIL import Image

    from srgan.trainer.config import TrainConfig
    from srgan.trainer.train import train

    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for i in range(2):
        img = (np.clip(_scene(64, 64) + np.random.default_rng(i).normal(0, 0.05, (64, 64, 3)), 0, 1) * 255)
        Image.fromarray(img.astype(np.uint8)).save(data / f"s{i}.png")
    base = dict(arch="span", channels=8, blocks=2, bn=False, hr_patch=32, batch=2, steps=2, warmup_steps=0, pixel=1.0,
                content=0.0, adv=0.0, workers=0, log_every=1, checkpoint_every=10, ema_decay=0.0)
    cfg = dataclasses.replace(TrainConfig(), **{**base, **changes})
    train(cfg, [data], tmp_path / run, device="cpu", resume=resume)
    with open(tmp_path / run / "losses.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_chroma_config_key_drives_the_phase2_term(tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("torch")
    from srgan.trainer.config import ConfigError, TrainConfig, apply_overrides

    with pytest.raises(ConfigError, match="chroma"):
        apply_overrides(TrainConfig(), {"chroma": "-1"})
    assert apply_overrides(TrainConfig(), {"chroma": "5"}).chroma == 5.0
    rows = _train_tiny(tmp_path, chroma=3.0)
    assert len(rows) == 2 and all(float(r["chroma"]) > 0 for r in rows)
    assert all(float(r["g_total"]) == pytest.approx(float(r["pixel"]) + 3.0 * float(r["chroma"]), rel=1e-4)
               for r in rows)


# ---------------------------------------------------------------- LDL's artefact term (trainer.losses.artifact_loss)

def _wobbled(hr: np.ndarray, seed: int = 0) -> np.ndarray:
    """``hr`` with each row shifted by -1, 0 or +1 px at random: straight edges made to wander."""
    rng = np.random.default_rng(seed)
    return np.stack([np.roll(row, int(s), axis=0) for row, s in zip(hr, rng.integers(-1, 2, hr.shape[0]))])


def test_artifact_map_flags_wobbling_edges_not_an_even_error() -> None:
    torch = pytest.importorskip("torch")
    from srgan.trainer.losses import artifact_map

    t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()  # noqa: E731
    hr = _scene()
    even = t(np.clip(hr + 0.05, 0, 1))          # a constant error: its local variance is 0
    wobble = t(_wobbled(hr))
    assert float(np.abs(_wobbled(hr) - hr).mean()) < 0.05  # less L1 error than the even one...
    m_even, m_wobble = (artifact_map(sr, t(hr), t(hr)) for sr in (even, wobble))
    assert m_even.shape == (1, 1, 96, 128)
    assert m_even[..., 4:-4, 4:-4].max().item() < 1e-9
    assert m_wobble.max().item() > 1e-3          # ...but a high local variance along the mullions
    on_edges = torch.from_numpy(np.abs(_wobbled(hr) - hr).sum(axis=2) > 0)[None, None]
    assert m_wobble[on_edges].mean().item() > 10 * m_wobble[~on_edges].mean().item()


def test_artifact_map_is_kept_only_where_the_ema_is_closer_to_hr() -> None:
    torch = pytest.importorskip("torch")
    from srgan.trainer.losses import artifact_loss, artifact_map

    hr = torch.from_numpy(_scene()).permute(2, 0, 1)[None].float()
    sr = torch.from_numpy(_wobbled(_scene())).permute(2, 0, 1)[None].float().requires_grad_(True)
    assert artifact_map(sr, sr.detach(), hr).abs().max().item() == 0.0  # EMA = G: nothing is new
    worse = sr.detach() + 0.2 * (sr.detach() - hr)                           # EMA further from HR everywhere
    assert artifact_map(sr, worse, hr).abs().max().item() == 0.0
    loss = artifact_loss(sr, hr, hr)                                         # EMA perfect: all of the map counts
    loss.backward()
    assert loss.item() > 0 and sr.grad is not None
    m = artifact_map(sr, hr, hr)
    assert torch.equal(sr.grad.abs().sum(dim=1, keepdim=True) > 0, m > 0)  # gradient only where the map is


def test_artifact_config_key_needs_the_ema_and_drives_the_phase2_term(tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("torch")
    from srgan.trainer.config import ConfigError, TrainConfig, apply_overrides

    with pytest.raises(ConfigError, match="artifact"):
        apply_overrides(TrainConfig(), {"artifact": "-1"})
    with pytest.raises(ConfigError, match="ema_decay"):
        apply_overrides(TrainConfig(), {"artifact": "100", "ema_decay": "0"})
    rows = _train_tiny(tmp_path, steps=3, artifact=1e4, ema_decay=0.9, lr_g=1e-2)
    assert len(rows) == 3 and float(rows[0]["artifact"]) == 0.0   # step 1: the EMA is G itself
    assert float(rows[-1]["artifact"]) > 0                         # then G has moved away from its average
    assert all(float(r["g_total"]) == pytest.approx(float(r["pixel"]) + 1e4 * float(r["artifact"]), rel=1e-4)
               for r in rows)
    from srgan.export.model_card import build_card
    from srgan.export.onnx_export import export_generator

    card = build_card(export_generator(tmp_path / "run" / "generator.pt", tmp_path / "art.onnx").path)
    assert card["training"]["phase2_weights"]["artifact"] == 1e4  # the card says which terms made the model


# ---------------------------------------------------------------- the edge-position term (trainer.losses.edge_loss)

def test_edge_loss_sees_moved_edges_not_brightness_or_texture_away_from_edges() -> None:
    torch = pytest.importorskip("torch")
    from srgan.trainer.losses import edge_loss

    t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()  # noqa: E731
    hr = _scene()
    assert edge_loss(t(hr), t(hr), 4).item() == 0.0
    assert edge_loss(t(hr + 0.05), t(hr), 4).item() < 1e-6          # a constant offset moves no step
    wobble = edge_loss(t(_wobbled(hr)), t(hr), 4).item()
    assert wobble > 0.004
    assert edge_loss(t(_wobbly(hr, 2)), t(hr), 4).item() > wobble    # more wander, more loss
    # texture far from every HR edge (a flat patch, > 4 px from the mullions) is not this term's business
    flat = np.zeros((64, 64, 3)) + 0.5
    flat[28:36, :] = 0.9                                             # one horizontal bar: edges at rows 28 and 36
    noisy = flat + np.where(np.abs(np.arange(64) - 32)[:, None, None] > 12,
                            np.random.default_rng(0).normal(0, 0.05, (64, 64, 3)), 0.0)
    assert edge_loss(t(noisy), t(flat), 4).item() == 0.0
    assert edge_loss(t(np.roll(flat, 2, axis=0)), t(flat), 4).item() > 0.01  # the bar moved by 2 px


def test_edge_config_key_drives_the_phase2_term_and_the_card(tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("torch")
    from srgan.trainer.config import ConfigError, TrainConfig, apply_overrides

    with pytest.raises(ConfigError, match="edge"):
        apply_overrides(TrainConfig(), {"edge": "-1"})
    rows = _train_tiny(tmp_path, edge=5.0)
    assert len(rows) == 2 and all(float(r["edge"]) > 0 for r in rows)
    assert all(float(r["g_total"]) == pytest.approx(float(r["pixel"]) + 5.0 * float(r["edge"]), rel=1e-4)
               for r in rows)
    from srgan.export.model_card import build_card
    from srgan.export.onnx_export import export_generator

    card = build_card(export_generator(tmp_path / "run" / "generator.pt", tmp_path / "edge.onnx").path)
    assert card["training"]["phase2_weights"]["edge"] == 5.0


# ---------------------------------------------------------------- distillation (distill, teacher)

def test_distill_holds_g_to_a_frozen_teacher_and_the_card_names_it(tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("torch")
    from srgan.export.model_card import build_card
    from srgan.export.onnx_export import export_generator
    from srgan.runtime.files import file_sha256
    from srgan.trainer.checkpoint import CheckpointError
    from srgan.trainer.config import ConfigError, TrainConfig, apply_overrides

    with pytest.raises(ConfigError, match="teacher"):
        apply_overrides(TrainConfig(), {"distill": "1"})
    _train_tiny(tmp_path, run="teacher_run", steps=1)
    teacher = export_generator(tmp_path / "teacher_run" / "generator.pt", tmp_path / "teacher.onnx").path
    rows = _train_tiny(tmp_path, run="student", distill=2.0, teacher=str(teacher))
    assert len(rows) == 2 and all(float(r["distill"]) > 0 for r in rows)
    assert all(float(r["g_total"]) == pytest.approx(float(r["pixel"]) + 2.0 * float(r["distill"]), rel=1e-4)
               for r in rows)
    t = build_card(export_generator(tmp_path / "student" / "generator.pt", tmp_path / "student.onnx").path)["training"]
    assert t["phase2_weights"]["distill"] == 2.0
    assert t["distilled_from"]["sha256"] == file_sha256(teacher)
    # a run keeps its teacher: resuming it with another one is refused
    other = export_generator(tmp_path / "student" / "generator.pt", tmp_path / "other.onnx").path
    with pytest.raises(CheckpointError, match="teacher"):
        _train_tiny(tmp_path, run="student", steps=3, distill=2.0, teacher=str(other), resume=True)
    # a teacher of another scale is refused before any step
    _train_tiny(tmp_path, run="x2", steps=1, scale=2)
    with pytest.raises(ConfigError, match="x2 model"):
        _train_tiny(tmp_path, run="bad", distill=1.0, teacher=str(tmp_path / "x2" / "generator.pt"))


# ---------------------------------------------------------------- Real-ESRGAN's sharpened GT (gt_usm)

def test_usm_sharpen_steepens_strong_edges_and_leaves_flat_and_faint_detail() -> None:
    torch = pytest.importorskip("torch")
    from srgan.trainer.losses import usm_sharpen

    t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()  # noqa: E731
    hr = t(_scene())
    assert usm_sharpen(hr, 0.0) is hr
    out = usm_sharpen(hr, 0.5)
    assert out.shape == hr.shape and out.min() >= 0 and out.max() <= 1
    # a strong step: the bright side brighter and the dark side darker next to it (overshoot), in proportion
    step = np.full((96, 96, 3), 0.3)
    step[:, 48:] = 0.7
    a, b = usm_sharpen(t(step), 0.5)[0, 0, 40], usm_sharpen(t(step), 1.0)[0, 0, 40]
    assert a[47] < 0.3 - 0.01 and a[48] > 0.7 + 0.01
    assert b[47] < a[47] and b[48] > a[48]
    assert abs(a[0].item() - 0.3) < 2e-3 and abs(a[95].item() - 0.7) < 2e-3  # 48 px away: (almost) untouched
    # flat colour, and detail fainter than the threshold (10 levels), stay as they are
    flat = t(np.full((64, 64, 3), 0.5))
    assert torch.allclose(usm_sharpen(flat, 0.5), flat, atol=1e-6)
    faint = t(0.5 + 3 / 255 * np.sin(np.arange(64) / 2.0)[None, :, None] * np.ones((64, 64, 3)))
    assert torch.allclose(usm_sharpen(faint, 0.5), faint, atol=1e-6)


def test_gt_usm_config_key_changes_the_pixel_target_and_the_card_records_it(tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("torch")
    from srgan.trainer.config import ConfigError, TrainConfig, apply_overrides

    with pytest.raises(ConfigError, match="gt_usm"):
        apply_overrides(TrainConfig(), {"gt_usm": "-0.5"})
    plain = _train_tiny(tmp_path, run="plain", steps=1)
    again = _train_tiny(tmp_path, run="again", steps=1)
    sharp = _train_tiny(tmp_path, run="sharp", steps=1, gt_usm=0.5)
    # the same model and batch at step 1 (same seed; the pixel term repeats exactly): only the target differs
    assert again[0]["pixel"] == plain[0]["pixel"]
    assert float(sharp[0]["pixel"]) != pytest.approx(float(plain[0]["pixel"]), rel=1e-4)
    from srgan.export.model_card import build_card
    from srgan.export.onnx_export import export_generator

    card = build_card(export_generator(tmp_path / "sharp" / "generator.pt", tmp_path / "sharp.onnx").path)
    assert card["training"]["phase2_weights"]["gt_usm"] == 0.5


def test_eval_scores_carry_both_checks() -> None:
    """``cli.py eval`` scores through runtime.grids.score_one: both columns are there, per image and mean."""
    from srgan.runtime import grids
    from srgan.runtime.evaluation import SUMMARY_COLUMNS

    hr = (_scene() * 255).round().astype(np.uint8)
    row = grids.score_one(hr, hr, 4)
    assert row["chroma_noise"] == pytest.approx(1.0) and row["edge_wobble"] == 0.0
    assert {"chroma_noise", "edge_wobble", "bicubic_chroma_noise", "bicubic_edge_wobble"} <= set(SUMMARY_COLUMNS)
    assert {"chroma_noise", "edge_wobble"} <= set(grids.METRIC_COLUMNS)

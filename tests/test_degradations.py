"""Real-world degradation model (trainer/degradations.py): determinism, ranges, sizes, JPEG, second order,
alignment, and its use in the trainer's batches (--degradation real)."""
from __future__ import annotations

import dataclasses
import io
import math
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from srgan.runtime.paths import data_dir
from srgan.runtime.resize import imresize
from srgan.trainer.config import ON_THE_FLY, ConfigError, apply_overrides, preset
from srgan.trainer.data import DataError, ImagePair, PatchBatches, degradation_config
from srgan.trainer.degradations import (
    BENCH,
    DEGRADATIONS,
    FIRST_ORDER,
    KERNELS,
    REAL,
    REAL_FIRST,
    REAL_MEAN,
    REAL_MIX,
    REAL_ORDERS,
    BlurConfig,
    DegradationConfig,
    DegradationError,
    JpegConfig,
    NoiseConfig,
    ResizeConfig,
    StageConfig,
    blur_kernel,
    degrade,
    jpeg_roundtrip,
    sinc_kernel,
)

PHOTO = data_dir() / "BSD100" / "HR" / "img_001.png"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photograph (BSD100 img_001, 480x320 RGB)."""
    if not PHOTO.is_file():
        pytest.skip(f"{PHOTO} not present")
    with Image.open(PHOTO) as im:
        return np.asarray(im.convert("RGB"))


def rng(*seed: int) -> np.random.Generator:
    return np.random.default_rng(list(seed))


# ---- determinism ---------------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_differs(photo):
    hr = photo[:128, :128]
    a, ta = degrade(hr, REAL, rng(7, 3))
    b, tb = degrade(hr, REAL, rng(7, 3))
    c, tc = degrade(hr, REAL, rng(7, 4))
    assert a.tobytes() == b.tobytes() and ta == tb
    assert a.shape == c.shape == (32, 32, 3)
    assert a.tobytes() != c.tobytes() and ta != tc


def test_patch_batches_real_is_a_pure_function_of_seed_step_rank(photo):
    pairs = [ImagePair("p", np.ascontiguousarray(photo[:, :320]), None)]

    def make(seed: int) -> PatchBatches:
        return PatchBatches(pairs, scale=4, lr_patch=8, batch=3, seed=seed, degradation=degradation_config("real"))

    lr, hr = make(1)[5]
    assert lr.shape == (3, 3, 8, 8) and hr.shape == (3, 3, 32, 32)
    lr2, hr2 = make(1)[5]
    assert np.array_equal(lr.numpy(), lr2.numpy()) and np.array_equal(hr.numpy(), hr2.numpy())
    lr3, _ = make(1)[6]
    lr4, _ = make(2)[5]
    assert not np.array_equal(lr.numpy(), lr3.numpy()) and not np.array_equal(lr.numpy(), lr4.numpy())
    # the three samples of one batch are degraded differently, not with one shared draw
    assert len({lr[i].numpy().tobytes() for i in range(3)}) == 3


def test_patch_batches_refuses_missing_lr_and_scale_mismatch(photo):
    pairs = [ImagePair("p", photo[:64, :64], None)]
    with pytest.raises(DataError, match="no stored LR"):
        PatchBatches(pairs, scale=4, lr_patch=8, batch=1, seed=0)
    with pytest.raises(DataError, match="x4"):
        PatchBatches(pairs, scale=2, lr_patch=8, batch=1, seed=0, degradation=REAL)


# ---- ranges ----------------------------------------------------------------------------------------

def _in(value: float, r: tuple[float, float]) -> bool:
    return r[0] - 1e-9 <= value <= r[1] + 1e-9


def _check_op(op: dict, stage: StageConfig | None, cfg: DegradationConfig, hr_hw: tuple[int, int]) -> None:
    s = cfg.scale
    if op["op"] == "blur":
        b = stage.blur
        assert op["size"] % 2 == 1 and b.sizes[0] <= op["size"] <= b.sizes[1]
        if op["kernel"] == "sinc":
            assert _in(op["omega"], b.omega if op["size"] < 13 else b.omega_large)
        else:
            assert op["kernel"] in KERNELS and b.weights[KERNELS.index(op["kernel"])] > 0
            assert _in(op["sigma_x"], b.sigma) and _in(op["sigma_y"], b.sigma)
            assert -math.pi <= op["theta"] <= math.pi
            if not op["kernel"].endswith("aniso"):
                assert op["sigma_x"] == op["sigma_y"] and op["theta"] == 0.0
            if op["kernel"].startswith("generalized"):
                assert _in(op["beta"], b.beta_generalized)
            if op["kernel"].startswith("plateau"):
                assert _in(op["beta"], b.beta_plateau)
    elif op["op"] == "resize" and op["stage"] != "final":
        r = stage.resize
        rng_ = {"up": r.up, "down": r.down, "keep": (1.0, 1.0)}[op["resize"]]
        assert _in(op["factor"], rng_) and op["mode"] in r.modes
        base = hr_hw if r.relative_to == "input" else (hr_hw[0] // s, hr_hw[1] // s)
        assert op["size"] == [max(4, round(base[0] * op["factor"])), max(4, round(base[1] * op["factor"]))]
    elif op["op"] == "resize":
        assert op["mode"] in cfg.final_modes and op["size"] == [hr_hw[0] // s, hr_hw[1] // s]
    elif op["op"] == "noise":
        n = stage.noise
        assert _in(op["sigma"], n.sigma) if op["noise"] == "gaussian" else _in(op["scale"], n.poisson_scale)
    elif op["op"] == "jpeg":
        q = (stage.jpeg if stage is not None else cfg.final_jpeg).quality
        assert isinstance(op["quality"], int) and q[0] <= op["quality"] <= q[1]
    elif op["op"] == "clean":
        assert cfg.clean_prob > 0 and op == {"stage": "final", "op": "clean", "mode": "matlab-bicubic"}
    elif op["op"] == "keep_means":
        assert cfg.keep_means and op["stage"] == "final" and len(op["shift"]) == 3
    elif op["op"] == "sinc":
        assert cfg.final_sinc_sizes[0] <= op["size"] <= cfg.final_sinc_sizes[1] and op["size"] % 2 == 1
        assert _in(op["omega"], cfg.final_sinc_omega)
    else:
        raise AssertionError(f"unexpected op {op}")


@pytest.mark.parametrize("cfg", [REAL, REAL_MEAN, BENCH], ids=["real", "real-mean", "bench"])
def test_every_drawn_parameter_is_inside_its_range(cfg):
    hr = np.random.default_rng(0).integers(0, 256, (40, 44, 3), dtype=np.uint8)
    seen: Counter = Counter()
    n = 300
    for seed in range(n):
        lr, trace = degrade(hr, cfg, rng(11, seed))
        assert lr.shape == (10, 11, 3) and lr.dtype == np.uint8
        for op in trace:
            stage = None if op["stage"] == "final" else cfg.stages[int(op["stage"]) - 1]
            _check_op(op, stage, cfg, (40, 44))
            seen[(op["stage"], op["op"], op.get("kernel") or op.get("noise") or op.get("resize") or "")] += 1
            if op["op"] == "noise":
                seen[(op["stage"], "gray", op["gray"])] += 1
    assert (seen[("final", "keep_means", "")] == n) == cfg.keep_means
    if cfg.stages == REAL.stages:
        # every kind of every operation shows up, in roughly the configured shares
        for kind in (*KERNELS, "sinc"):
            assert seen[("1", "blur", kind)] > 0, kind
        for kind in ("up", "down", "keep"):
            assert seen[("1", "resize", kind)] > 0 and seen[("2", "resize", kind)] > 0
        for stage in ("1", "2"):
            assert seen[(stage, "noise", "gaussian")] > 0 and seen[(stage, "noise", "poisson")] > 0
            assert 0.25 < seen[(stage, "gray", True)] / n < 0.55  # gray_prob 0.4
        assert 0.7 < sum(v for k, v in seen.items() if k[:2] == ("2", "blur")) / n < 0.9  # second blur: 0.8
        assert 0.7 < seen[("final", "sinc", "")] / n < 0.9  # final sinc: 0.8
        assert seen[("final", "jpeg", "")] == n
    else:
        assert {k[2] for k in seen if k[1] == "blur"} == {"iso", "aniso"}
        assert seen[("1", "jpeg", "")] == n and ("final", "sinc", "") not in seen


def test_bad_configs_are_refused():
    with pytest.raises(DegradationError, match="odd"):
        BlurConfig(sizes=(6, 21))
    with pytest.raises(DegradationError, match="sum to 1"):
        ResizeConfig(probs=(0.5, 0.6, 0.1))
    with pytest.raises(DegradationError, match="quality"):
        JpegConfig(quality=(30, 101))
    with pytest.raises(DegradationError, match="noise"):
        NoiseConfig(gray_prob=1.5)
    with pytest.raises(DegradationError, match="uint8"):
        degrade(np.zeros((16, 16, 3), np.float32), REAL, rng(0))
    with pytest.raises(DegradationError, match="smaller than the scale"):
        degrade(np.zeros((3, 16, 3), np.uint8), REAL, rng(0))


def test_config_accepts_real_and_presets_use_it():
    assert apply_overrides(preset("psnr"), {"degradation": "real"}).degradation == "real"
    assert apply_overrides(preset("psnr"), {"degradation": "real-mean"}).degradation == "real-mean"
    assert apply_overrides(preset("psnr"), {"degradation": "real-mix"}).degradation == "real-mix"
    assert apply_overrides(preset("psnr"), {"degradation": "real-orders"}).degradation == "real-orders"
    with pytest.raises(ConfigError, match="matlab, pil, real, real-mean, real-mix, real-orders, real-first"):
        apply_overrides(preset("psnr"), {"degradation": "jpeg"})
    assert degradation_config("real-mean") is REAL_MEAN and degradation_config("real-mix") is REAL_MIX
    assert degradation_config("real-orders") is REAL_ORDERS
    assert all(DEGRADATIONS[name].name == name for name in ON_THE_FLY)  # every per-sample model is registered
    for name in ("real-psnr", "real"):
        cfg = preset(name)
        assert cfg.degradation == "real" and degradation_config(cfg.degradation) is REAL
    assert preset("real-psnr").adv == 0 and preset("real").adv > 0 and preset("real").warmup_steps == 0
    assert degradation_config("matlab") is None


def test_real_mean_draws_what_real_draws_and_keeps_each_channel_mean(photo):
    """REAL_MEAN's LR is REAL's (same seed: same blur, noise and JPEG) shifted per channel so that its means are
    the HR's, within rounding and clipping; REAL's own means wander by more than a level on the same draws."""
    worst_real, worst_kept = 0.0, 0.0
    for seed in range(12):
        hr = photo[(seed % 3) * 64:(seed % 3) * 64 + 128, (seed % 4) * 96:(seed % 4) * 96 + 128]
        a, ta = degrade(hr, REAL, rng(5, seed))
        b, tb = degrade(hr, REAL_MEAN, rng(5, seed))
        assert tb[:-1] == ta and tb[-1]["op"] == "keep_means"
        shift = np.asarray(tb[-1]["shift"])
        ref = hr.astype(np.float64).mean(axis=(0, 1))
        assert np.allclose(a.mean(axis=(0, 1)) - ref, shift, atol=0.6)  # the recorded shift is REAL's bias
        moved = a.astype(np.float64) - shift
        unclipped = (a > 0) & (a < 255) & (moved > 0.5) & (moved < 254.5)
        assert np.abs(b[unclipped] - moved[unclipped]).max() < 1.5  # the same image, shifted (rounded twice)
        worst_real = max(worst_real, float(np.abs(a.mean(axis=(0, 1)) - ref).max()))
        worst_kept = max(worst_kept, float(np.abs(b.mean(axis=(0, 1)) - ref).max()))
    assert worst_kept < 0.35 < 1.0 < worst_real, (worst_kept, worst_real)


def test_real_mix_gives_a_fifth_of_samples_the_clean_lr_and_the_rest_real_means_draws(photo):
    """A REAL_MIX sample is either exactly the HR's MATLAB-bicubic shrink (the academic LR, byte for byte) or a
    REAL_MEAN sample (same ops, parameters drawn from the same kinds of ranges, channel means kept), about a
    fifth of them clean; a bad clean_prob is refused."""
    hr = photo[:128, :96]
    bicubic = imresize(hr, size=(32, 24))
    clean = 0
    n = 200
    for seed in range(n):
        lr, trace = degrade(hr, REAL_MIX, rng(9, seed))
        assert lr.shape == (32, 24, 3) and lr.dtype == np.uint8
        for op in trace:
            _check_op(op, None if op["stage"] == "final" else REAL_MIX.stages[int(op["stage"]) - 1], REAL_MIX,
                      hr.shape[:2])
        if trace[0]["op"] == "clean":
            clean += 1
            assert len(trace) == 1 and np.array_equal(lr, bicubic)
        else:
            assert trace[-1]["op"] == "keep_means" and not np.array_equal(lr, bicubic)
            assert np.abs(lr.mean(axis=(0, 1)) - hr.mean(axis=(0, 1))).max() < 0.5
    assert 0.12 < clean / n < 0.28, clean  # clean_prob 0.2
    assert all(t[0]["op"] != "clean" for t in (degrade(hr, REAL_MEAN, rng(9, s))[1] for s in range(40)))
    with pytest.raises(DegradationError, match="clean_prob"):
        dataclasses.replace(REAL_MIX, clean_prob=1.5)


@pytest.mark.parametrize(("model", "first", "second"), [(REAL_ORDERS, 0.4, 0.4), (REAL_FIRST, 0.64, 0.16)],
                         ids=["orders", "first"])
def test_real_orders_mixes_clean_first_order_and_second_order_samples(photo, model, first, second):
    """A REAL_ORDERS (REAL_FIRST) sample is clean (about a fifth), first-order (about two fifths; four fifths of the
    degraded ones for REAL_FIRST: one stage whose resize goes straight to the LR size, noise, one JPEG, channel
    means kept; no sinc, no second stage, no final JPEG) or REAL_MIX's second order (the rest); each op stays in its
    model's ranges, the same seed repeats byte for byte, and a mix share without a model to mix in is refused."""
    hr = photo[:128, :96]
    kinds: Counter[str] = Counter()
    n = 300
    for seed in range(n):
        lr, trace = degrade(hr, model, rng(11, seed))
        again, trace2 = degrade(hr, model, rng(11, seed))
        assert np.array_equal(lr, again) and trace == trace2
        assert lr.shape == (32, 24, 3) and lr.dtype == np.uint8
        if trace[0]["op"] == "model":
            kinds["first"] += 1
            assert trace[0] == {"stage": "mix", "op": "model", "name": "first-order"}
            ops = trace[1:]
            assert {op["stage"] for op in ops} <= {"1", "final"} and ops[-1]["op"] == "keep_means"
            assert not any(op["op"] == "sinc" or (op["stage"] == "final" and op["op"] in ("jpeg", "resize"))
                           for op in ops)
            resize = next(op for op in ops if op["op"] == "resize")
            assert resize["size"] == [32, 24] and resize["resize"] == "keep"  # straight to the LR size
            assert sum(op["op"] == "jpeg" for op in ops) <= 1
            for op in ops:
                _check_op(op, None if op["stage"] == "final" else FIRST_ORDER.stages[0], FIRST_ORDER, hr.shape[:2])
            assert np.abs(lr.mean(axis=(0, 1)) - hr.mean(axis=(0, 1))).max() < 0.5
        elif trace[0]["op"] == "clean":
            kinds["clean"] += 1
        else:
            kinds["second"] += 1
            assert any(op["stage"] == "2" for op in trace)
            for op in trace:
                _check_op(op, None if op["stage"] == "final" else model.stages[int(op["stage"]) - 1],
                          model, hr.shape[:2])
    shares = {k: v / n for k, v in kinds.items()}
    assert 0.12 < shares["clean"] < 0.28, kinds
    assert abs(shares["first"] - first) < 0.1 and abs(shares["second"] - second) < 0.1, kinds
    assert all(t[0]["op"] != "model" for t in (degrade(hr, REAL_MIX, rng(11, s))[1] for s in range(40)))
    with pytest.raises(DegradationError, match="mix_prob"):
        dataclasses.replace(REAL_MIX, mix_prob=0.5)
    with pytest.raises(DegradationError, match="same scale"):
        dataclasses.replace(REAL_MIX, mix_with=dataclasses.replace(FIRST_ORDER, scale=2), mix_prob=0.5)


# ---- sizes and alignment ---------------------------------------------------------------------------

@pytest.mark.parametrize("h, w, c", [(37, 53, 3), (4, 4, 3), (5, 123, 3), (130, 67, 1), (64, 64, 1)])
def test_output_size_is_floor_of_hr_over_scale(h, w, c):
    hr = np.random.default_rng(h * w).integers(0, 256, (h, w, c), dtype=np.uint8)
    for seed in range(6):
        lr, _ = degrade(hr, REAL, rng(seed))
        assert lr.shape == (h // 4, w // 4, c) and lr.dtype == np.uint8
        lr, _ = degrade(hr, BENCH, rng(seed))
        assert lr.shape == (h // 4, w // 4, c)


@pytest.mark.parametrize("modes, worst_bound, mean_abs_bound", [
    (("bilinear", "bicubic"), 0.05, 0.01),
    # "area" (BOX) upscaling is nearest-like: a blob moves by up to half a source pixel, without bias
    (("area", "bilinear", "bicubic"), 0.4, 0.03),
])
def test_lr_stays_registered_to_hr(modes, worst_bound, mean_abs_bound):
    """A bright blob at HR centre (cy, cx) lands at LR ((cy + 0.5) / 4 - 0.5, ...), through blur, sinc,
    random resizes and both stages: the LR/HR pair is aligned as bicubic LR is (noise and JPEG off, as
    they add zero-mean error). A one-HR-pixel shift would be 0.25 LR px."""
    def quiet(stage: StageConfig) -> StageConfig:
        return dataclasses.replace(stage, noise=NoiseConfig(prob=0.0), jpeg=JpegConfig(prob=0.0),
                                   resize=dataclasses.replace(stage.resize, modes=modes))
    cfg = dataclasses.replace(REAL, stages=tuple(quiet(s) for s in REAL.stages), final_jpeg=JpegConfig(prob=0.0),
                              final_modes=modes)
    yy, xx = np.mgrid[0:256, 0:256]
    ly, lx = np.mgrid[0:64, 0:64]
    errors = []
    for seed in range(40):
        cy, cx = rng(99, seed).uniform(100, 156, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 12.0**2))
        hr = np.repeat(np.rint(20 + 200 * blob).astype(np.uint8)[:, :, None], 3, axis=2)
        lr, _ = degrade(hr, cfg, rng(5, seed))
        weight = np.clip(lr[:, :, 0].astype(np.float64) - 20, 0, None)
        errors += [(weight * ly).sum() / weight.sum() - ((cy + 0.5) / 4 - 0.5),
                   (weight * lx).sum() / weight.sum() - ((cx + 0.5) / 4 - 0.5)]
    e = np.abs(errors)
    assert e.max() < worst_bound and e.mean() < mean_abs_bound and abs(np.mean(errors)) < 0.01, (e.max(), e.mean())


# ---- operations ------------------------------------------------------------------------------------

def _blockiness(img: np.ndarray) -> float:
    """Mean |step| across 8-pixel block edges over the mean |step| inside blocks (1 = no JPEG grid)."""
    y = img.astype(np.float64).mean(axis=2)
    dx = np.abs(np.diff(y, axis=1))
    cols = np.arange(dx.shape[1])
    return float(dx[:, cols % 8 == 7].mean() / dx[:, cols % 8 != 7].mean())


def test_jpeg_is_a_real_encode(photo):
    hr = photo[:128, :128].astype(np.float32) / 255
    out = jpeg_roundtrip(hr, 20)
    u8 = np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
    assert _blockiness(photo[:128, :128]) < 1.1 and _blockiness(u8) > 1.3
    # the decoded image is a fixed point of the same encoder, up to rounding: it *is* a q20 JPEG
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=20)
    again = np.asarray(Image.open(buf)).astype(np.int16)
    assert np.abs(again - u8).mean() < 1.0 < np.abs(u8.astype(np.int16) - photo[:128, :128]).mean()


def test_pipeline_jpeg_stage_leaves_block_grid(photo):
    """An exact x2 shrink then JPEG q25, nothing else: the LR carries the 8x8 grid; without the JPEG it does not."""
    def only(jpeg_prob: float) -> DegradationConfig:
        stage = StageConfig(blur=BlurConfig(prob=0.0), resize=ResizeConfig(probs=(0, 1, 0), down=(0.5, 0.5)),
                            noise=NoiseConfig(prob=0.0), jpeg=JpegConfig(prob=jpeg_prob, quality=(25, 25)))
        return DegradationConfig(name="jpeg-only", scale=2, stages=(stage,), final_sinc_prob=0.0,
                                 final_jpeg=JpegConfig(prob=0.0))

    lr, trace = degrade(photo[:256, :256], only(1.0), rng(0))
    assert [op["op"] for op in trace] == ["resize", "jpeg"] and trace[1]["quality"] == 25
    plain, trace = degrade(photo[:256, :256], only(0.0), rng(0))
    assert [op["op"] for op in trace] == ["resize"]
    assert _blockiness(plain) < 1.1 and _blockiness(lr) > 1.3
    with pytest.raises(DegradationError, match="scale"):
        DegradationConfig(name="x1", scale=1)


def test_second_order_runs_both_stages():
    hr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for seed in range(20):
        _, trace = degrade(hr, REAL, rng(3, seed))
        ops = Counter((op["stage"], op["op"]) for op in trace)
        for stage in ("1", "2"):
            assert ops[(stage, "resize")] == ops[(stage, "noise")] == ops[(stage, "jpeg")] == 1
        assert ops[("1", "blur")] == 1 and ops[("final", "jpeg")] == 1
        stages = [op["stage"] for op in trace]
        assert stages == sorted(stages, key=lambda s: (s == "final", s))  # 1, then 2, then final
    _, trace = degrade(hr, BENCH, rng(0))
    assert [(op["stage"], op["op"]) for op in trace] == [("1", "blur"), ("1", "resize"), ("1", "noise"), ("1", "jpeg")]


def test_kernels_are_normalised_and_shaped():
    for kind in KERNELS:
        k = blur_kernel(kind, 21, 2.0, 0.7 if "aniso" in kind else 2.0, 0.6, 1.5)
        assert k.shape == (21, 21) and abs(k.sum() - 1) < 1e-12 and k.argmax() == 21 * 10 + 10
        assert np.allclose(k, k[::-1, ::-1])  # centrosymmetric: the blur shifts nothing
    k = blur_kernel("aniso", 21, 3.0, 0.5, 0.0)
    assert k[10, :].sum() > 3 * k[:, 10].sum()  # long along x when theta = 0
    s = sinc_kernel(21, math.pi / 4)
    assert abs(s.sum() - 1) < 1e-12 and s.min() < 0  # rings: negative side lobes


# ---- the fixed benchmark (benchmarks/make_degraded_bench.py) ------------------------------------------

def _bench_module(name: str = "make_degraded_bench"):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_degraded_bench_is_fixed_and_readable_by_bench_quality(tmp_path):
    """Two Set14 images (one gray, one cropped to a multiple of 4): the bench reader gets exactly the
    written LR (not an imresize fallback), the manifest records every draw, and a rerun is byte-identical."""
    import json

    from srgan.runtime.datasets import load_dataset

    src = data_dir() / "Set14"
    if not (src / "HR" / "bridge.png").is_file():
        pytest.skip(f"{src} not present")
    mini = tmp_path / "Set14"
    (mini / "HR").mkdir(parents=True)
    for name in ("bridge.png", "comic.png"):
        (mini / "HR" / name).symlink_to(src / "HR" / name)
    bench = _bench_module()
    entries = bench.make_set(mini, tmp_path / "a" / "Set14", seed=5)
    bench.make_set(mini, tmp_path / "b" / "Set14", seed=5)
    other = bench.make_set(mini, tmp_path / "c" / "Set14", seed=6)
    for e, o in zip(entries, other):
        a = (tmp_path / "a" / "Set14" / "LR_bicubic_x4" / e["name"]).read_bytes()
        assert a == (tmp_path / "b" / "Set14" / "LR_bicubic_x4" / e["name"]).read_bytes()
        assert e["lr_sha256"] != o["lr_sha256"]
    samples = {s.name: s for s in load_dataset(tmp_path / "a" / "Set14", 4)}
    assert samples["bridge.png"].lr.shape == (128, 128, 1)  # gray stays gray
    assert samples["comic.png"].lr.shape == (90, 62, 3) and samples["comic.png"].hr.shape == (360, 248, 3)
    for e in entries:
        with Image.open(tmp_path / "a" / "Set14" / "LR_bicubic_x4" / e["name"]) as im:
            written = np.asarray(im)
        got = samples[e["name"]].lr
        assert np.array_equal(got[:, :, 0] if written.ndim == 2 else got, written)
        ops = [op["op"] for op in e["trace"]]
        assert ops == ["blur", "resize", "noise", "jpeg"] and 30 <= e["trace"][-1]["quality"] <= 90
        assert e["seed_words"][:2] == [5, bench.BENCH_STREAM]
    manifest = json.loads((tmp_path / "a" / "Set14" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "bench" and len(manifest["images"]) == 2
    assert (tmp_path / "a" / "Set14" / "HR" / "comic.png").read_bytes() == (src / "HR" / "comic.png").read_bytes()
    assert (tmp_path / "a" / "Set14" / "manifest.tsv").read_text().count("\n") == 3
    check = bench.make_set(mini, tmp_path / "d" / "Set14", DEGRADATIONS["real-mean"], seed=5)  # --model real-mean
    assert json.loads((tmp_path / "d" / "Set14" / "manifest.json").read_text())["model"]["name"] == "real-mean"
    assert all(any(op["stage"] == "2" for op in e["trace"]) for e in check)  # second order
    assert [e["seed_words"] for e in check] == [e["seed_words"] for e in entries]


# ---- the presets train (3-step smoke runs) --------------------------------------------------------------

def test_real_presets_train_three_steps_and_record_the_model(tmp_path):
    """real-psnr (phase 1) then real (phase 2, --init from it) on real photographs, 3 steps each, shrunk
    in width and patch only: finite losses, and the degradation model saved in config and checkpoint."""
    import json

    import torch

    from srgan.trainer.train import GENERATOR_NAME, train

    t91 = data_dir() / "T91" / "HR"
    if not t91.is_dir():
        pytest.skip(f"{t91} not present")
    data = tmp_path / "data"
    data.mkdir()
    for src in sorted(t91.glob("*.png"))[:12:4]:
        (data / src.name).symlink_to(src)
    small = dict(channels=8, blocks=2, batch=2, hr_patch=32, workers=0, log_every=1, checkpoint_every=1000,
                 amp="off", channels_last=False, steps=3, epochs=None)
    cfg = apply_overrides(preset("real-psnr"), small)
    first = train(cfg, [data], tmp_path / "psnr")
    cfg2 = apply_overrides(preset("real"), small)
    second = train(cfg2, [data], tmp_path / "gan", init_from=tmp_path / "psnr" / GENERATOR_NAME, random_vgg=True)
    want = json.loads(json.dumps(dataclasses.asdict(REAL)))
    for run, result, phase in (("psnr", first, 1), ("gan", second, 2)):
        assert result.step == 3
        rows = (tmp_path / run / "losses.csv").read_text().splitlines()[1:]
        assert len(rows) == 3 and all(r.split(",")[1] == str(phase) for r in rows)
        assert all(math.isfinite(v) for v in result.last_losses.values()) and "pixel" in result.last_losses
        saved = json.loads((tmp_path / run / "config.json").read_text())
        assert saved["degradation"] == "real" and saved["arch"] == "srresnet"
        assert saved["_resolved"]["degradation_params"] == want
        state = torch.load(tmp_path / run / GENERATOR_NAME, weights_only=True)
        assert state["degradation_params"] == want
    assert "adv_g" in second.last_losses


def test_colour_bias_script_switches_steps_off_and_blur_resize_alone_keep_the_means() -> None:
    """benchmarks/degradation_colour_bias.py: ``without`` zeroes exactly the noise / JPEG probabilities, and the
    model without either (blur, resize, sinc) leaves a real photograph's channel means within half a level."""
    mod = _bench_module("degradation_colour_bias")
    neither = mod.without(REAL, noise=True, jpeg=True)
    assert all(st.noise.prob == 0 and st.jpeg.prob == 0 for st in neither.stages) and neither.final_jpeg.prob == 0
    assert [st.blur for st in neither.stages] == [st.blur for st in REAL.stages]
    assert [st.resize for st in neither.stages] == [st.resize for st in REAL.stages]
    only_jpeg_off = mod.without(REAL, noise=False, jpeg=True)
    assert [st.noise for st in only_jpeg_off.stages] == [st.noise for st in REAL.stages]
    src = sorted((data_dir() / "Photos").glob("*.jpg"))
    if not src:
        pytest.skip("../shared/data/Photos not present")
    hr = np.asarray(Image.open(src[0]).convert("RGB"))[:256, :256]
    for k in range(3):
        lr, trace = degrade(hr, neither, np.random.default_rng(k))
        assert not any(op["op"] in ("noise", "jpeg") for op in trace)
        assert np.abs(lr.mean(axis=(0, 1)) - hr.mean(axis=(0, 1))).max() < 0.5

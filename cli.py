"""Command line for the SRGAN x4 toolkit: thin typer commands, one library call each.

Options shared between commands are defined once below as ``Annotated`` aliases
(with their ranges), so ``watch``, ``bench``, ``train``, ``eval`` and ``export``
reuse them. Heavy modules (numpy, onnxruntime, torch) are imported inside the
commands, so ``--help`` and ``--version`` stay fast.

Exit codes: 0 all files ok (or skipped), 1 some files failed, 2 usage or setup
error (bad option, no images, missing model, unavailable device).
"""
from __future__ import annotations

import contextlib
import enum
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from srgan.runtime import __version__
from srgan.runtime.defaults import DEFAULT_MAX_MEMORY, DEFAULT_MAX_PIXELS, DEFAULT_QUALITY, DEFAULT_TILE
from srgan.runtime.formats import FORMATS
from srgan.runtime.paths import data_dir
from srgan.runtime.registry import DEFAULT_MODEL, MODELS

if TYPE_CHECKING:
    from srgan.runtime.pipeline import BatchReport

app = typer.Typer(
    name="srgan", no_args_is_help=True, add_completion=False, rich_markup_mode=None,
    help="SRGAN x4 super-resolution: upscale images with an ONNX model (no PyTorch needed).",
)


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class AlphaMode(str, enum.Enum):
    bicubic = "bicubic"
    model = "model"


OutputFormat = enum.Enum("OutputFormat", {name: name for name in FORMATS}, type=str)  # type: ignore[misc]

# ---- shared options: one definition each ------------------------------------------------
ModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help=f"model name ({', '.join(MODELS)}) or path to an .onnx file",
    autocompletion=lambda: list(MODELS))]
TileOpt = Annotated[int, typer.Option("--tile", min=0, max=16384,
                                      help="tile side in LR pixels; 0 = whole image at once")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto = CUDA if onnxruntime-gpu sees a GPU, else CPU")]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=0, max=1024, help="CPU threads; 0 = one per core")]
InputsArg = Annotated[list[Path], typer.Argument(exists=True, show_default=False,
                                                 help="image files and folders")]
OutDirOpt = Annotated[Path, typer.Option("--output", "-o", file_okay=False, show_default=False,
                                         help="output folder (subfolders are mirrored)")]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="also scan subfolders")]
GlobOpt = Annotated[Optional[str], typer.Option("--glob", help="file pattern in folders, e.g. '*.png' "
                                                "(default: all PNG/JPEG/WebP/TIFF/BMP files)")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="replace outputs that exist (default: skip)")]
FormatOpt = Annotated[Optional[OutputFormat], typer.Option("--format", "-f",
                                                           help="output format (default: the input's)")]
QualityOpt = Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality")]
OutscaleOpt = Annotated[Optional[float], typer.Option(
    "--outscale", min=0.01, max=64.0, help="final size factor vs the input, e.g. 2 or 3.5 (Lanczos from the x4 result)")]
AlphaOpt = Annotated[AlphaMode, typer.Option("--alpha", help="how the alpha channel is upscaled")]
MaxPixelsOpt = Annotated[int, typer.Option("--max-pixels", min=1, help="refuse inputs with more pixels than this")]
MaxMemoryOpt = Annotated[int, typer.Option(
    "--max-memory", min=0, help="MiB one CPU inference call may use: tiles larger than that are split "
    "(same result, from the model's measured bytes per pixel); 0 = no cap")]
EnsembleOpt = Annotated[bool, typer.Option(
    "--ensemble", help="x8 self-ensemble: average the 8 flips/rotations (higher PSNR, 8x the time)")]
GridOpt = Annotated[bool, typer.Option("--grid", help="write comparison figures to OUT/grids")]
HrOpt = Annotated[Optional[Path], typer.Option("--hr", exists=True, file_okay=False,
                                               help="folder of HR references (same names) for PSNR/SSIM")]
MetricsOpt = Annotated[Optional[Path], typer.Option("--metrics", dir_okay=False,
                                                    help="metrics CSV path (default with --hr: OUT/metrics.csv)")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="log more detail")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"srgan {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """SRGAN x4 super-resolution toolkit."""


def _setup_logging(verbose: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=Console(stderr=True), show_time=False, show_path=False)],
                        force=True)


class _Bar:
    """Rich progress bar in output megapixels, with ETA and MP/s (a :class:`BatchProgress`)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        from rich.text import Text

        class Speed(ProgressColumn):
            def render(self, task):  # type: ignore[no-untyped-def]
                return Text(f"{(task.speed or 0) / 1e6:6.2f} MP/s")

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[files]}"), Speed(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                                 transient=False)
        self.task = None
        self.n_done = 0
        self.n_files = 0

    def start(self, total_output_pixels: int, files: int) -> None:
        self.n_files = files
        self.progress.start()
        self.task = self.progress.add_task("upscaling", total=max(1, total_output_pixels), files=f"0/{files}")

    def advance(self, output_pixels: int) -> None:
        self.progress.update(self.task, advance=output_pixels)

    def done(self, result) -> None:  # type: ignore[no-untyped-def]
        self.n_done += 1
        self.progress.update(self.task, files=f"{self.n_done}/{self.n_files}")

    def stop(self) -> None:
        self.progress.stop()


def _render(report: BatchReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="upscale summary", show_lines=False)
    for col in ("file", "status", "size", "seconds", "detail"):
        table.add_column(col, overflow="fold")
    shown = [r for r in report.results if len(report.results) <= 30 or r.status != "ok"]
    for r in shown:
        size = f"{r.in_size[0]}x{r.in_size[1]} -> {r.out_size[0]}x{r.out_size[1]}" if r.in_size and r.out_size else ""
        style = {"ok": "green", "skipped": "yellow", "failed": "red"}[r.status]
        table.add_row(str(r.src), f"[{style}]{r.status}[/]", size, f"{r.seconds:.2f}", r.reason or r.note)
    console.print(table)
    c = report.counts
    megapixels = sum(r.out_size[0] * r.out_size[1] for r in report.results if r.out_size) / 1e6
    console.print(f"{c['ok']} ok, {c['skipped']} skipped, {c['failed']} failed in {report.seconds:.1f} s "
                  f"({megapixels:.2f} output MP, {megapixels / max(report.seconds, 1e-9):.2f} MP/s) "
                  f"with {report.model.name} on {report.provider}")
    if report.metrics_csv is not None:
        console.print(f"metrics: {report.metrics_csv}")


@app.command()
def upscale(
    inputs: InputsArg,
    output: OutDirOpt,
    model: ModelOpt = DEFAULT_MODEL,
    tile: TileOpt = DEFAULT_TILE,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
    recursive: RecursiveOpt = False,
    glob: GlobOpt = None,
    overwrite: OverwriteOpt = False,
    format: FormatOpt = None,
    quality: QualityOpt = DEFAULT_QUALITY,
    outscale: OutscaleOpt = None,
    alpha: AlphaOpt = AlphaMode.bicubic,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    max_memory: MaxMemoryOpt = DEFAULT_MAX_MEMORY >> 20,
    ensemble: EnsembleOpt = False,
    grid: GridOpt = False,
    hr: HrOpt = None,
    metrics: MetricsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Upscale image files and folders x4 (or --outscale) into OUT."""
    from srgan.runtime.errors import SRError
    from srgan.runtime.pipeline import UpscaleOptions, upscale_batch
    from srgan.runtime.session import release_freed_memory

    _setup_logging(verbose)
    release_freed_memory()
    bar = _Bar()
    try:
        options = UpscaleOptions(tile=tile, alpha=alpha.value, outscale=outscale,
                                 format=format.value if format else None, quality=quality,
                                 overwrite=overwrite, max_pixels=max_pixels, max_memory=(max_memory << 20) or None,
                                 ensemble=ensemble)
        report = upscale_batch(inputs, output, model=model, device=device.value, threads=threads, options=options,
                               recursive=recursive, glob=glob, hr_dir=hr, grid=grid, metrics_csv=metrics,
                               progress=bar)
    except SRError as e:  # setup errors only: per-file errors are in the report
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    finally:
        bar.stop()
    _render(report)
    raise typer.Exit(report.exit_code)


@app.command()
def watch(
    in_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, show_default=False,
                                           help="folder to watch")],
    output: OutDirOpt,
    model: ModelOpt = DEFAULT_MODEL,
    tile: TileOpt = DEFAULT_TILE,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
    recursive: RecursiveOpt = False,
    glob: Annotated[Optional[str], typer.Option("--glob", help="file name pattern, e.g. '*.png' "
                                                "(default: all PNG/JPEG/WebP/TIFF/BMP files)")] = None,
    new_only: Annotated[bool, typer.Option("--new-only", help="leave files already there at start alone")] = False,
    overwrite: OverwriteOpt = False,
    format: FormatOpt = None,
    quality: QualityOpt = DEFAULT_QUALITY,
    outscale: OutscaleOpt = None,
    alpha: AlphaOpt = AlphaMode.bicubic,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    max_memory: MaxMemoryOpt = DEFAULT_MAX_MEMORY >> 20,
    ensemble: EnsembleOpt = False,
    settle: Annotated[float, typer.Option("--settle", min=0.0, max=3600.0,
                                          help="seconds a file must stay unchanged before it is read")] = 1.0,
    polling: Annotated[bool, typer.Option("--polling", help="poll the folder (network shares without "
                                                            "change notifications)")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Upscale every image that appears in IN_DIR into OUT, once per content version; Ctrl-C stops."""
    import signal

    from srgan.runtime.errors import SRError
    from srgan.runtime.pipeline import FileResult, UpscaleOptions
    from srgan.runtime.registry import resolve_model
    from srgan.runtime.session import load_model, release_freed_memory
    from srgan.runtime.watch import FolderWatcher

    _setup_logging(verbose)
    release_freed_memory()

    def show(r: FileResult) -> None:  # failures are logged with their reason by the watcher
        if r.status != "failed":
            detail = r.reason if r.status != "ok" else f"{r.seconds:.2f} s"
            typer.echo(f"{r.status:7} {r.src} -> {r.dst} ({detail})")

    try:
        options = UpscaleOptions(tile=tile, alpha=alpha.value, outscale=outscale,
                                 format=format.value if format else None, quality=quality,
                                 overwrite=overwrite, max_pixels=max_pixels, max_memory=(max_memory << 20) or None,
                                 ensemble=ensemble)
        sr_model = load_model(resolve_model(model), device=device.value, threads=threads)
        watcher = FolderWatcher(in_dir, output, sr_model, options, recursive=recursive, new_only=new_only,
                                glob=glob, settle=settle, polling=polling, on_result=show)
    except SRError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None

    def on_signal(signum: int, frame: object) -> None:
        if watcher.stopping:  # a second signal: abort now (writes are atomic, no partial file is left)
            raise KeyboardInterrupt
        typer.echo(f"{signal.Signals(signum).name}: finishing the current file, then stopping "
                   "(again to abort)", err=True)
        watcher.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    typer.echo(f"watching {in_dir} -> {output} with {sr_model.path.name} on {sr_model.provider}; Ctrl-C stops",
               err=True)
    try:
        watcher.run()
    except SRError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("aborted", err=True)
        raise typer.Exit(130) from None
    c = watcher.counts
    typer.echo(f"stopped: {c['ok']} ok, {c['skipped']} skipped, {c['failed']} failed, "
               f"{c['unchanged']} unchanged", err=True)


# ---- training and evaluation (torch; installed with the `train` extra) ----------------------


def _preset_names() -> list[str]:
    from srgan.trainer.config import PRESETS

    return list(PRESETS)


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


def _default_eval_sets() -> list[Path]:
    return [data_dir() / name for name in ("Set5", "Set14", "BSD100") if (data_dir() / name).is_dir()]


@app.command()
def train(
    data: Annotated[list[Path], typer.Option("--data", exists=True, file_okay=False,
                                             help="training folder (DIV2K layout, HR/ + LR_bicubic_x4/, or any "
                                                  "folder of images); repeatable")],
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="run folder (checkpoints, logs, grids)")],
    preset: Annotated[Optional[str], typer.Option("--preset", help="psnr | srgan | report | paper | srcnn",
                                                  autocompletion=_preset_names)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=0, help="total steps (resume continues to it)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its checkpoint")] = False,
    device: Annotated[Device, typer.Option("--device", help="auto = CUDA when torch sees a GPU")] = Device.auto,
    vgg_weights: Annotated[Optional[Path], typer.Option(
        "--vgg-weights", exists=True, dir_okay=False,
        help="VGG-19 or VGG-16 features state dict (.pth/.safetensors, torchvision keys)")] = None,
    random_vgg: Annotated[bool, typer.Option(
        "--random-vgg-weights-not-a-perceptual-loss",
        help="use an untrained VGG for the content loss (tests only: the loss is then meaningless)")] = False,
    init: Annotated[Optional[Path], typer.Option("--init", exists=True, dir_okay=False,
                                                 help="start G from this checkpoint (fine-tuning)")] = None,
    val: Annotated[Optional[list[Path]], typer.Option("--val", exists=True, file_okay=False,
                                                      help="validation set folder(s) scored at each checkpoint")] = None,
    cache: Annotated[Optional[Path], typer.Option("--cache", file_okay=False,
                                                  help="cache of decoded HR/LR pairs (.npz)")] = None,
    degradation: Annotated[Optional[str], typer.Option(
        "--degradation", help="how LR is made when no official LR exists: matlab (default, bicubic imresize) "
                              "or pil (Pillow bicubic)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="config override KEY=VALUE, repeatable "
                                                      "(e.g. --set lr_g=2e-4 --set blocks=8)")] = None,
    threads: ThreadsOpt = 0,
    verbose: VerboseOpt = False,
) -> None:
    """Train or fine-tune a generator (two-phase SRGAN; presets in trainer/config.py)."""
    import torch

    from srgan.trainer.checkpoint import CheckpointError
    from srgan.trainer.config import ConfigError
    from srgan.trainer.data import DataError
    from srgan.trainer.pretrained import PretrainedWeightsError
    from srgan.trainer.run import run_training
    from srgan.trainer.train import DeviceError as TrainDeviceError

    _setup_logging(True)
    if threads:
        torch.set_num_threads(threads)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeRemainingColumn(), console=Console(stderr=True))
    task = None

    def show(row: dict) -> None:
        nonlocal task
        terms = " ".join(f"{k} {row[k]:.4g}" for k in ("pixel", "content", "adv_g", "d_loss") if k in row)
        info = f"phase {row['phase']} | {terms} | {row['steps_per_s']:.2f} steps/s {row['images_per_s']:.0f} img/s"
        if task is None:
            bar.start()
            task = bar.add_task("train", total=row["total"], completed=row["step"], info=info)
        bar.update(task, completed=row["step"], info=info)

    try:
        result, cfg = run_training(preset_name=preset, data=data, out=out, steps=steps, resume=resume,
                                   device=device.value, vgg_weights=vgg_weights, random_vgg=random_vgg,
                                   init_from=init, val=val, cache_dir=cache, overrides=_parse_sets(set_ or []) | ({"degradation": degradation} if degradation else {}),
                                   on_log=show)
    except (ConfigError, DataError, PretrainedWeightsError, CheckpointError, TrainDeviceError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    finally:
        bar.stop()
    typer.echo(f"{cfg.preset}: step {result.step}/{result.steps} (phase 1 = first {result.warmup_steps} steps, "
               f"1 epoch = {result.epoch_steps} steps); checkpoint {result.checkpoint}")


@app.command("average")
def average_cmd(
    checkpoints: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                      help="two or more checkpoints fine-tuned from one model")],
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, help="generator file to write (.pt)")],
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="average the EMA weights where a checkpoint has them")
                   ] = True,
) -> None:
    """Average generator weights of several runs into one checkpoint (a model soup; export it as usual)."""
    from srgan.trainer.checkpoint import CheckpointError, average_generators

    try:
        state = average_generators(checkpoints, output, use_ema=ema)
    except CheckpointError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    for src in state["averaged_from"]:
        typer.echo(f"  {src['path']} (step {src['step']}, {src['weights']} weights)")
    typer.echo(f"written: {output} ({state['arch']}, the mean of {len(checkpoints)} generators)")


@app.command("eval")
def eval_(
    model: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="checkpoint (.pt) or ONNX model")],
    data: Annotated[Optional[list[Path]], typer.Option(
        "--data", exists=True, file_okay=False,
        help="benchmark folder(s) with HR/ (+ LR_bicubic_x4/); default Set5, Set14, BSD100 from ../shared/data")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", file_okay=False,
                                                help="folder for CSV/TXT, grids and patches")] = None,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
    tile: Annotated[int, typer.Option("--tile", min=0, help="tile side in LR pixels; 0 = whole image")] = 0,
    no_ema: Annotated[bool, typer.Option("--no-ema", help="use the raw G weights, not the EMA")] = False,
    ensemble: EnsembleOpt = False,
    grids: Annotated[int, typer.Option("--grids", min=0, help="comparison grids per set")] = 5,
    record: Annotated[bool, typer.Option("--record", help="write the means into the ONNX model's metadata "
                                         "and model card (needs --out and an .onnx MODEL)")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """PSNR/SSIM (Y, border 4) and LPIPS of a model and of bicubic, per image and mean."""
    from srgan.runtime.errors import SRError
    from srgan.trainer.evaluate import evaluate, load_for_eval
    from srgan.trainer.run import default_lpips

    _setup_logging(verbose)
    if record and ensemble:
        typer.echo("error: --record writes the model's own numbers; drop --ensemble to record them", err=True)
        raise typer.Exit(2)
    sets = data or _default_eval_sets()
    if not sets:
        typer.echo(f"error: no --data given and no benchmark sets under {data_dir()}", err=True)
        raise typer.Exit(2)
    try:
        m, description = load_for_eval(model, device=device.value, threads=threads, use_ema=not no_ema)
        if ensemble:
            from srgan.runtime.ensemble import SelfEnsemble

            m, description = SelfEnsemble(m), f"{description}, x8 self-ensemble"
        report = evaluate(m, sets, out, description=description, lpips=default_lpips(), grids_per_set=grids,
                          tile=tile)
    except (SRError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.table(), nl=False)
    if out is not None:
        typer.echo(f"written: {out}/summary.csv, summary.txt, <set>.csv, grids/, patches/")
    if record:
        if out is None or model.suffix != ".onnx":
            typer.echo("error: --record needs --out and an .onnx model", err=True)
            raise typer.Exit(2)
        from srgan.export.model_card import quality_from_csv, record_quality

        card = record_quality(model, quality_from_csv(out / "summary.csv"))
        typer.echo(f"recorded in {model.name} metadata and {', '.join(p.name for p in card)}")


@app.command("fetch-div2k")
def fetch_div2k_cmd(
    root: Annotated[Path, typer.Argument(file_okay=False, help="folder to download and unpack DIV2K into")],
    part: Annotated[Optional[list[str]], typer.Option("--part", help="train_hr, train_lr_x4, valid_hr, "
                                                      "valid_lr_x4 (default: train_hr + train_lr_x4)")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="a mirror of the official archives")] = None,
) -> None:
    """Download DIV2K (cached, sha256 recorded and verified) for `train --data ROOT`."""
    from srgan.trainer.data import DataError
    from srgan.trainer.div2k import DEFAULT_BASE_URL, fetch_div2k

    _setup_logging(True)
    try:
        fetch_div2k(root, tuple(part or ("train_hr", "train_lr_x4")), base_url=base_url or DEFAULT_BASE_URL)
    except DataError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"DIV2K ready in {root}: train with --data {root}")


# ---- export (torch + onnx; installed with the `export` extra) ------------------------------
@contextlib.contextmanager
def _export_failures():
    """Map export errors to exit codes: 1 for a failed parity check (its table shown), 2 for the rest."""
    from srgan.export.errors import ExportError, ParityError
    from srgan.runtime.errors import SRError
    from srgan.trainer.checkpoint import CheckpointError
    from srgan.trainer.pretrained import PretrainedWeightsError

    try:
        yield
    except ParityError as e:
        if e.report is not None:
            typer.echo(e.report.table())
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except (ExportError, CheckpointError, PretrainedWeightsError, SRError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command("export")
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="trainer checkpoint (.pt)")],
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False,
                                         help="ONNX file to write, e.g. models/srresnet_x4.onnx")],
    variants: Annotated[str, typer.Option("--variants", help="comma-separated extra files: fp16 (GPU), int8; "
                                                             "each measured against fp32")] = "",
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="use the EMA weights when the checkpoint has them")
                   ] = True,
    opset: Annotated[int, typer.Option("--opset", min=18, help="ONNX opset (18 = the exporter's native one)")
                     ] = 18,
    calib: Annotated[Optional[list[Path]], typer.Option(
        "--calib", exists=True, file_okay=False,
        help="training image folder for int8 calibration (default: the run's training data)")] = None,
    eval_csv: Annotated[Optional[list[Path]], typer.Option(
        "--eval-csv", exists=True, dir_okay=False,
        help="cli.py eval summary.csv whose numbers go into the metadata and model card")] = None,
    trained_on: Annotated[Optional[str], typer.Option(
        "--trained-on", help="training data description (default: from the run's config.json)")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Export a checkpoint to ONNX with metadata, a parity report and a model card."""
    from srgan.export.onnx_export import export_generator

    _setup_logging(verbose)
    kinds = [v.strip() for v in variants.split(",") if v.strip()]
    with _export_failures():
        report = export_generator(checkpoint, output, opset=opset, use_ema=ema, variants=kinds,
                                  calibration_dirs=calib, eval_csv=eval_csv, trained_on=trained_on)
    typer.echo(report.parity.table())
    typer.echo(f"receptive radius: {report.receptive_radius} LR px (measured {report.measured_radius}); "
               f"opset {report.opset}")
    for v in report.variants:
        loss = ", ".join(f"{s} {d['loss_db']:+.3f} dB" for s, d in v.psnr.items()) or "PSNR not measured"
        typer.echo(f"variant {v.name}: {v.path.name}; {loss}; {v.verdict}")
    typer.echo(f"written: {report.path}, {report.parity_json.name}, {report.card_json.name}, {report.card_md.name}")


@app.command("export-lpips")
def export_lpips_cmd(
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", dir_okay=False, help="ONNX file to write (default: models/lpips_alex.onnx)")] = None,
    weights: Annotated[Optional[Path], typer.Option(
        "--weights", "--lpips-weights", exists=True, dir_okay=False,
        help="AlexNet trunk (.pth/.safetensors, torchvision keys); default: torchvision's cache")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Export AlexNet LPIPS v0.1 to ONNX so the runtime scores LPIPS without torch."""
    from srgan.export.lpips_onnx import export_lpips
    from srgan.runtime.lpips import default_lpips_path

    _setup_logging(verbose)
    with _export_failures():
        report = export_lpips(output or default_lpips_path(), weights)
    typer.echo(report.parity.table())
    mean = report.set5_bicubic_mean
    typer.echo(f"trunk: {report.source}")
    typer.echo("Set5 bicubic x4 LPIPS: " + (f"{mean:.4f} (published 0.3407)" if mean is not None
                                             else "not measured (../shared/data/Set5 absent)"))
    typer.echo(f"written: {report.path}")



# ---- benchmarks (torch-free: the base install runs them) -----------------------------------
bench_app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                        help="Latency and quality benchmarks: CSV, Markdown and PNG charts in -o OUT.")
app.add_typer(bench_app, name="bench")

BenchOutOpt = Annotated[Path, typer.Option("--output", "-o", file_okay=False,
                                           help="folder for the CSV, Markdown and PNG results")]


def _peer_names() -> list[str]:
    from srgan.runtime.peers import PEERS

    return [*PEERS, "all"]


@bench_app.command("latency")
def bench_latency_cmd(
    model: ModelOpt = DEFAULT_MODEL,
    output: BenchOutOpt = Path("runs/bench"),
    tile_size: Annotated[Optional[list[int]], typer.Option(
        "--tile-size", min=0, help="tile side in LR pixels, repeatable; 0 = whole image (default 64 128 256 0)"),
    ] = None,
    threads: Annotated[Optional[list[int]], typer.Option(
        "--threads", min=1, max=1024, help="CPU thread count, repeatable (default 1 and all cores)")] = None,
    device: DeviceOpt = Device.auto,
    size: Annotated[int, typer.Option("--size", min=8, max=8192, help="side of the square LR test image")] = 320,
    runs: Annotated[int, typer.Option("--runs", min=1, help="timed runs per setting (the median is reported)")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="untimed runs first")] = 1,
    verbose: VerboseOpt = False,
) -> None:
    """Latency of a model per tile size x threads x provider, with the fraction of fp32 matmul peak."""
    from srgan.runtime.bench import DEFAULT_TILES, bench_latency, latency_markdown, write_latency
    from srgan.runtime.errors import SRError
    from srgan.runtime.registry import resolve_model

    _setup_logging(verbose)
    providers = {"auto": [], "cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider"]}[device.value]
    try:
        report = bench_latency(resolve_model(model), tiles=tile_size or DEFAULT_TILES, threads=threads or (),
                               providers=providers, lr_size=(size, size), runs=runs, warmup=warmup,
                               progress=lambda text: typer.echo(text, err=True))
        written = write_latency(report, output)
    except SRError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(latency_markdown(report), nl=False)
    typer.echo("written: " + ", ".join(map(str, written)))


@bench_app.command("quality")
def bench_quality_cmd(
    datasets: Annotated[Optional[list[Path]], typer.Argument(
        exists=True, file_okay=False, show_default=False,
        help="dataset folders with HR/ (+ LR_bicubic_x4/); default Set5, Set14, BSD100 from ../shared/data")] = None,
    output: BenchOutOpt = Path("runs/bench"),
    model: ModelOpt = DEFAULT_MODEL,
    no_model: Annotated[bool, typer.Option("--no-model", help="score only bicubic and the peers")] = False,
    peer: Annotated[Optional[list[str]], typer.Option(
        "--peer", help="peer to compare, repeatable: " + ", ".join(_peer_names()) + " (all = every one that loads)",
        autocompletion=_peer_names)] = None,
    peers_dir: Annotated[Optional[Path], typer.Option(
        "--peers-dir", exists=True, file_okay=False, help="folder of the peer model files "
        "(default ../shared/peers/models)")] = None,
    lpips: Annotated[Optional[Path], typer.Option(
        "--lpips", exists=True, dir_okay=False, help="LPIPS ONNX file (default models/lpips_alex.onnx when present)")
    ] = None,
    tile: Annotated[int, typer.Option("--tile", min=0, help="model tile side in LR pixels; 0 = whole image")] = 0,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
    verbose: VerboseOpt = False,
) -> None:
    """PSNR / SSIM (Y, border 4), LPIPS and speed of the model, bicubic and peers on the same LR images."""
    from srgan.runtime.bench import bench_quality, load_dataset, quality_markdown, write_quality
    from srgan.runtime.errors import SRError
    from srgan.runtime.grids import bicubic_baseline
    from srgan.runtime.lpips import available_lpips, load_lpips
    from srgan.runtime.peers import PEERS, PeerUnavailableError, load_peer
    from srgan.runtime.pipeline import upscale_image
    from srgan.runtime.registry import resolve_model
    from srgan.runtime.session import load_model

    _setup_logging(verbose)
    names = list(dict.fromkeys(n for p in peer or [] for n in (PEERS if p == "all" else [p])))
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        typer.echo(f"error: unknown peer {', '.join(unknown)}; choose from {', '.join(_peer_names())}", err=True)
        raise typer.Exit(2)
    sets = datasets or _default_eval_sets()
    if not sets:
        typer.echo(f"error: no DATASET_DIR given and no Set5/Set14/BSD100 under {data_dir()}", err=True)
        raise typer.Exit(2)
    try:
        methods, descriptions, skipped = {}, {}, {}
        scale = 4
        if not no_model:
            sr_model = load_model(resolve_model(model), device=device.value, threads=threads)
            if sr_model.scale != 4 and names:
                raise PeerUnavailableError(f"the peers are x4 but {sr_model.path.name} is x{sr_model.scale}")
            scale = sr_model.scale
            methods[sr_model.path.stem] = lambda lr, m=sr_model: upscale_image(lr, m, tile=tile)
            descriptions[sr_model.path.stem] = f"{sr_model.path} on {sr_model.provider}, tile {tile or 'whole'}"
        methods["bicubic"] = lambda lr: bicubic_baseline(lr, scale)
        descriptions["bicubic"] = "MATLAB-compatible bicubic (runtime.resize.imresize)"
        for n in names:
            try:
                methods[n] = load_peer(n, folder=peers_dir, device=device.value, threads=threads)
                descriptions[n] = PEERS[n].description
            except PeerUnavailableError as e:
                if peer and "all" not in peer:
                    raise
                skipped[n] = str(e)
                typer.echo(f"skipping peer {n}: {e}", err=True)
        lpips_fn = load_lpips(lpips) if lpips else available_lpips()
        samples = [load_dataset(d, scale) for d in sets]
        report = bench_quality(samples, methods, scale=scale, lpips=lpips_fn)  # progress: INFO log, -v
        report.skipped, report.descriptions = skipped, descriptions
        written = write_quality(report, output)
    except SRError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(quality_markdown(report), nl=False)
    typer.echo("written: " + ", ".join(map(str, written)))


if __name__ == "__main__":
    app()

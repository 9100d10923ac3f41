"""Command line for the SRGAN x4 toolkit: thin typer commands, one library call each.

Options shared between commands are defined once below as ``Annotated`` aliases
(with their ranges), so ``watch``, ``bench``, ``train``, ``eval`` and ``export``
reuse them. Heavy modules (numpy, onnxruntime, torch) are imported inside the
commands, so ``--help`` and ``--version`` stay fast.

Exit codes: 0 all files ok (or skipped), 1 some files failed (or a failed
parity check), 2 usage or setup error (bad option, no images, missing model,
unavailable device, a missing install extra). One mapping does it: every command
is wrapped by :func:`_exits`, which turns the package's errors (:class:`SRGANError`)
into a one-line message on stderr and exit code 2.

Options are spelled alike everywhere: ``-o/--output``, ``--tile`` (one default),
``--threads`` (0 = all cores), repeated flags for lists, ``--json`` (a machine-readable
report on stdout; human output then goes to stderr) and ``-q/--quiet``. Old spellings
(``--out``, ``--tile-size``, comma lists) still work for one release, with a warning.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from srgan.runtime import __version__
from srgan.runtime.defaults import (
    DEFAULT_MAX_MEMORY,
    DEFAULT_MAX_PIXELS,
    DEFAULT_QUALITY,
    DEFAULT_TILE,
)
from srgan.runtime.formats import FORMATS
from srgan.runtime.registry import DEFAULT_MODEL, MODELS
from srgan.trainer.config import LR_MODELS, PRESETS  # torch-free: the config module is dataclasses only

if TYPE_CHECKING:
    from srgan.runtime.pipeline import BatchReport

app = typer.Typer(
    name="srgan", no_args_is_help=True, add_completion=True, rich_markup_mode=None,
    help="SRGAN x4 super-resolution: upscale images with an ONNX model (no PyTorch needed).",
)


class Device(enum.StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Engine(enum.StrEnum):  # runtime.engines.ENGINE_CHOICES (not imported: --help stays fast)
    auto = "auto"
    onnxruntime = "onnxruntime"
    openvino = "openvino"


class Precision(enum.StrEnum):  # runtime.engines.PRECISION_CHOICES
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class AlphaMode(enum.StrEnum):
    bicubic = "bicubic"
    model = "model"


OutputFormat = enum.Enum("OutputFormat", {name: name for name in FORMATS}, type=str)  # type: ignore[misc]

# ---- shared options: one definition each ------------------------------------------------
ModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help=f"model name ({', '.join(MODELS)}) or path to an .onnx file",
    autocompletion=lambda: list(MODELS))]
_DENOISE = {e.name: e.denoise_partner for e in MODELS.values() if e.denoise_partner}
DenoiseOpt = Annotated[float | None, typer.Option(
    "--denoise", min=0.0, max=1.0, help="0..1, only for " + ", ".join(f"-m {m} (0 = {p})" for m, p in _DENOISE.items())
    + ": how much JPEG blocks, noise and blur are removed; 1 = the model itself, in between a weight blend of the "
    "two, made once and cached")]
TileOpt = Annotated[int, typer.Option("--tile", min=0, max=16384,
                                      help="tile side in LR pixels; 0 = whole image at once")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto = CUDA if onnxruntime-gpu sees a GPU, else CPU")]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=0, max=1024, help="CPU threads; 0 = one per core")]
EngineOpt = Annotated[Engine, typer.Option(
    "--engine", help="auto = openvino on the CPU (onnxruntime if openvino is missing), onnxruntime for CUDA")]
PrecisionOpt = Annotated[Precision, typer.Option(
    "--precision", help="auto = bf16 where the CPU has it and the model's recorded bf16 loss is within "
    "0.01 dB PSNR-Y / 0.002 LPIPS, else the graph's own (fp32); an explicit choice that cannot run is an error")]
InputsArg = Annotated[list[Path], typer.Argument(exists=True, show_default=False,
                                                 help="image files and folders")]
OutDirOpt = Annotated[Path, typer.Option("--output", "-o", file_okay=False, show_default=False,
                                         help="output folder (subfolders are mirrored)")]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="also scan subfolders")]
GlobOpt = Annotated[str | None, typer.Option("--glob", help="file pattern in folders, e.g. '*.png' "
                                                "(default: all PNG/JPEG/WebP/TIFF/BMP files)")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="replace outputs that exist (default: skip)")]
FormatOpt = Annotated[OutputFormat | None, typer.Option("--format", "-f",
                                                           help="output format (default: the input's)")]
QualityOpt = Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality")]
OutscaleOpt = Annotated[float | None, typer.Option(
    "--outscale", min=0.01, max=64.0,
    help="final size factor vs the input, e.g. 2 or 3.5 (Lanczos from the x4 result)")]
AlphaOpt = Annotated[AlphaMode, typer.Option("--alpha", help="how the alpha channel is upscaled")]
MaxPixelsOpt = Annotated[int, typer.Option("--max-pixels", min=1, help="refuse inputs with more pixels than this")]
MaxMemoryOpt = Annotated[int, typer.Option(
    "--max-memory", min=0, help="MiB one CPU inference call may use: tiles larger than that are split "
    "(same result, from the model's measured bytes per pixel); 0 = no cap")]
EnsembleOpt = Annotated[bool, typer.Option(
    "--ensemble", help="x8 self-ensemble: average the 8 flips/rotations (higher PSNR, 8x the time)")]
ColorFixOpt = Annotated[bool, typer.Option(
    "--color-fix", help="keep the input's broad colour and brightness (undoes the colour casts of models "
    "trained for degraded photos; ~0.06 s per output megapixel on this project's 2-core CPU)")]
GridOpt = Annotated[bool, typer.Option("--grid", help="write comparison figures to OUT/grids")]
HrOpt = Annotated[Path | None, typer.Option("--hr", exists=True, file_okay=False,
                                               help="folder of HR references (same names) for PSNR/SSIM")]
MetricsOpt = Annotated[Path | None, typer.Option("--metrics", dir_okay=False,
                                                    help="metrics CSV path (default with --hr: OUT/metrics.csv)")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="log more detail")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress and no summary; errors only")]
JsonOpt = Annotated[bool, typer.Option("--json", help="write a machine-readable JSON report to stdout "
                                                      "(human output goes to stderr)")]

F = TypeVar("F", bound=Callable[..., Any])


def _exits(fn: F) -> F:
    """The one error-to-exit-code mapping: the package's errors (:class:`SRGANError`, with the
    install command for a missing extra) print one line on stderr and exit 2; a failed export
    parity check prints its table and exits 1. SIGINT/SIGTERM that reach here (while a model loads
    or files are planned: a running batch reports them itself) exit 130/143 without a traceback.
    Anything else is a bug and keeps its traceback."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from srgan.runtime import errors

        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as e:
            name = "SIGTERM" if str(e) == "SIGTERM" else "SIGINT"
            typer.echo(f"interrupted by {name}", err=True)
            raise typer.Exit(143 if name == "SIGTERM" else 130) from None
        except errors.SRGANError as e:
            from srgan.export.errors import ParityError  # torch-free

            report = getattr(e, "report", None)
            if isinstance(e, ParityError) and report is not None:
                typer.echo(report.table())
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1 if isinstance(e, ParityError) else 2) from None
    return wrapper  # type: ignore[return-value]


def _deprecated(new: Any, old: Any, old_name: str, new_name: str) -> Any:
    """``new``, or ``old`` (given under its deprecated spelling ``old_name``) with a warning on stderr."""
    if old is None or old == []:
        return new
    typer.echo(f"warning: {old_name} is deprecated and goes away in the next release; use {new_name}", err=True)
    return new if new not in (None, []) else old


def _split_commas(values: list[str], name: str) -> list[str]:
    """Repeated ``name`` values; an old comma list (``a,b``) is split, with a deprecation warning."""
    if any("," in v for v in values):
        typer.echo(f"warning: comma lists for {name} are deprecated; repeat the flag ({name} a {name} b)",
                   err=True)
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def _jsonable(obj: Any) -> Any:
    """Dataclasses, paths, tuples and non-finite floats as plain JSON values (NaN/inf -> null)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if not f.name.startswith("_")})
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(_jsonable(obj), indent=2))


def _console(stderr: bool = False) -> Any:
    """A rich console; when the stream is not a terminal, as wide as a line needs (tables never wrap)."""
    from rich.console import Console

    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=100_000, soft_wrap=True)


def _say(text: str, *, quiet: bool, json_mode: bool) -> None:
    """Human output: stdout, stderr when stdout carries JSON, nothing when quiet."""
    if not quiet:
        typer.echo(text, nl=not text.endswith("\n"), err=json_mode)


def _say_engine(model: object, *, quiet: bool) -> None:
    """One stderr line naming the engine and precision a run uses (e.g. ``openvino bf16 on OpenVINO CPU``)."""
    if not quiet:
        typer.echo(f"{model.path.name}: {model.runs_on}", err=True)  # type: ignore[attr-defined]


def _require_torch(what: str) -> None:
    """Exit 2 naming the install command when torch (the ``train`` extra) is missing."""
    from srgan.runtime.extras import require_extra

    require_extra("train", what, ("torch",))


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
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Speed(ProgressColumn):
            def render(self, task):  # type: ignore[no-untyped-def]
                return Text(f"{(task.speed or 0) / 1e6:6.2f} MP/s")

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[files]}"), Speed(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                                 transient=False)
        self.task: Any = None  # rich's TaskID once started
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


def _render(report: BatchReport, stderr: bool = False) -> None:
    from rich.table import Table

    console = _console(stderr)
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
    if getattr(report, "interrupted", ""):
        console.print(f"{report.interrupted}: stopped early, {c.get('not done', 0)} file(s) not started "
                      f"(exit {report.exit_code})")


def _sigterm_interrupts() -> None:
    """Make SIGTERM stop a batch the way Ctrl-C does (KeyboardInterrupt, named, so the exit code is 143)."""
    import signal

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)


def _ray_options(address: str | None, actors: str | None, threads: int, gpus: float, *, hr: Path | None,
                 grid: bool, metrics: Path | None, local_threads: int) -> Any:
    """The :class:`~runtime.distributed.RayOptions` of ``upscale --ray``, or None for a local run."""
    from srgan.runtime.errors import UsageError

    if address is None:
        if actors is not None or threads != 1 or gpus:
            raise UsageError("--ray-actors, --ray-threads and --ray-gpus need --ray ADDRESS")
        return None
    if hr is not None or grid or metrics is not None:
        raise UsageError("--hr, --grid and --metrics are not supported with --ray; run them locally")
    if local_threads:
        raise UsageError("--threads is for local runs; with --ray use --ray-threads (threads per actor)")
    from srgan.runtime.distributed import RayOptions, parse_actors

    lo, hi = parse_actors(actors) if actors is not None else (None, None)
    return RayOptions(address=address, min_actors=lo, max_actors=hi, threads=threads, gpus=gpus)


@app.command()
@_exits
def upscale(
    inputs: InputsArg,
    output: OutDirOpt,
    model: ModelOpt = DEFAULT_MODEL,
    denoise: DenoiseOpt = None,
    tile: TileOpt = DEFAULT_TILE,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
    engine: EngineOpt = Engine.auto,
    precision: PrecisionOpt = Precision.auto,
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
    color_fix: ColorFixOpt = False,
    grid: GridOpt = False,
    hr: HrOpt = None,
    metrics: MetricsOpt = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="ADDRESS", help="run on a Ray cluster: local (start one here), auto or HOST:PORT (join "
        "one); OUT must be on a filesystem all nodes share (needs the 'ray' extra)")] = None,
    ray_actors: Annotated[str | None, typer.Option(
        "--ray-actors", metavar="MIN,MAX", help="Ray actor pool, N or MIN,MAX (default: as many as the cluster's "
        "CPUs allow)")] = None,
    ray_threads: Annotated[int, typer.Option("--ray-threads", min=1, max=1024,
                                             help="CPUs and inference threads per Ray actor")] = 1,
    ray_gpus: Annotated[float, typer.Option("--ray-gpus", min=0.0, max=64.0,
                                            help="GPUs per Ray actor (the model then runs on CUDA)")] = 0.0,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Upscale image files and folders x4 (or --outscale) into OUT."""
    from srgan.runtime.api import load, upscale_files
    from srgan.runtime.registry import resolve_model
    from srgan.runtime.session import release_freed_memory

    _setup_logging(verbose)
    release_freed_memory()
    if denoise is not None:
        model = str(resolve_model(model, denoise=denoise))
    bar = None if quiet or json_ else _Bar()
    _sigterm_interrupts()  # SIGINT/SIGTERM: the file in progress is dropped (atomic), a summary, exit 130/143
    on_ray = _ray_options(ray, ray_actors, ray_threads, ray_gpus, hr=hr, grid=grid, metrics=metrics,
                          local_threads=threads)
    if on_ray is not None:
        from srgan.runtime.distributed import upscale_ray
        from srgan.runtime.pipeline import UpscaleOptions

        try:
            options = UpscaleOptions(tile=tile, alpha=alpha.value, outscale=outscale,
                                     format=format.value if format else None, quality=quality, overwrite=overwrite,
                                     max_pixels=max_pixels, max_memory=(max_memory << 20) or None, ensemble=ensemble,
                                     color_fix=color_fix)
            done = upscale_ray(inputs, output, model=model, device=device.value, engine=engine.value,
                               precision=precision.value, options=options, ray_options=on_ray, recursive=recursive,
                               glob=glob, progress=bar, verbose=verbose)
        finally:
            if bar is not None:
                bar.stop()
        if json_:
            _print_json({**_jsonable(done.report), "exit_code": done.report.exit_code,
                         "ray": {"status": done.status, "summary": done.summary, "actors": done.actors,
                                 "nodes": done.nodes}})
        if not quiet:
            _render(done.report, stderr=json_)
            _say(f"ray: {done.actors} actors on {done.nodes} nodes; status table {done.status}",
                 quiet=quiet, json_mode=json_)
        raise typer.Exit(done.report.exit_code)
    try:  # setup errors raise (exit 2, see _exits); per-file errors are in the report
        sr_model = load(model, device=device.value, threads=threads, engine=engine.value, precision=precision.value)
        _say_engine(sr_model, quiet=quiet)
        report = upscale_files(inputs, output, sr_model, recursive=recursive, glob=glob, hr_dir=hr, grid=grid,
                               metrics_csv=metrics, progress=bar, tile=tile, alpha=alpha.value, outscale=outscale,
                               format=format.value if format else None, quality=quality, overwrite=overwrite,
                               max_pixels=max_pixels, max_memory=(max_memory << 20) or None, ensemble=ensemble,
                               color_fix=color_fix)
    finally:
        if bar is not None:
            bar.stop()
    if json_:
        _print_json({**_jsonable(report), "exit_code": report.exit_code})
    if not quiet:
        _render(report, stderr=json_)
    raise typer.Exit(report.exit_code)


@app.command()
@_exits
def watch(
    in_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, show_default=False,
                                           help="folder to watch")],
    output: OutDirOpt,
    model: ModelOpt = DEFAULT_MODEL,
    denoise: DenoiseOpt = None,
    tile: TileOpt = DEFAULT_TILE,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
    engine: EngineOpt = Engine.auto,
    precision: PrecisionOpt = Precision.auto,
    recursive: RecursiveOpt = False,
    glob: Annotated[str | None, typer.Option("--glob", help="file name pattern, e.g. '*.png' "
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
    color_fix: ColorFixOpt = False,
    settle: Annotated[float, typer.Option("--settle", min=0.0, max=3600.0,
                                          help="seconds a file must stay unchanged before it is read")] = 1.0,
    polling: Annotated[bool, typer.Option("--polling", help="poll the folder (network shares without "
                                                            "change notifications)")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Upscale every image that appears in IN_DIR into OUT, once per content version; Ctrl-C stops."""
    import signal

    from srgan.runtime.api import load
    from srgan.runtime.pipeline import FileResult, UpscaleOptions
    from srgan.runtime.session import release_freed_memory
    from srgan.runtime.watch import FolderWatcher

    _setup_logging(verbose)
    release_freed_memory()

    def show(r: FileResult) -> None:  # failures are logged with their reason by the watcher
        if r.status != "failed":
            detail = r.reason if r.status != "ok" else f"{r.seconds:.2f} s"
            typer.echo(f"{r.status:7} {r.src} -> {r.dst} ({detail})")

    options = UpscaleOptions(tile=tile, alpha=alpha.value, outscale=outscale,
                             format=format.value if format else None, quality=quality,
                             overwrite=overwrite, max_pixels=max_pixels, max_memory=(max_memory << 20) or None,
                             ensemble=ensemble, color_fix=color_fix)
    sr_model = load(model, device=device.value, threads=threads, engine=engine.value, precision=precision.value,
                    denoise=denoise)
    _say_engine(sr_model, quiet=False)
    watcher = FolderWatcher(in_dir, output, sr_model, options, recursive=recursive, new_only=new_only,
                            glob=glob, settle=settle, polling=polling, on_result=show)

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
    except KeyboardInterrupt:
        typer.echo("aborted", err=True)
        raise typer.Exit(130) from None
    c = watcher.counts
    typer.echo(f"stopped: {c['ok']} ok, {c['skipped']} skipped, {c['failed']} failed, "
               f"{c['unchanged']} unchanged", err=True)


# ---- training and evaluation (torch; installed with the `train` extra) ----------------------


Preset = enum.Enum("Preset", {name: name for name in PRESETS}, type=str)  # type: ignore[misc]


#: How ``train`` makes LR from HR when no official LR exists (``TrainConfig.degradation``).
Degradation = enum.Enum("Degradation", {name: name for name in LR_MODELS}, type=str)  # type: ignore[misc]


RunOutOpt = Annotated[Path | None, typer.Option("--output", "-o", file_okay=False, show_default=False,
                                                   help="run folder (checkpoints, logs, grids)")]
OldOutOpt = Annotated[Path | None, typer.Option("--out", file_okay=False, hidden=True,
                                                   help="deprecated spelling of --output")]


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


@app.command()
@_exits
def train(
    data: Annotated[list[Path] | None, typer.Option(
        "--data", exists=True, file_okay=False, show_default=False,
        help="training folder (DIV2K layout, HR/ + LR_bicubic_x4/, or any folder of images); repeatable. "
             "--resume reads it from the run")] = None,
    output: RunOutOpt = None,
    out_old: OldOutOpt = None,
    preset: Annotated[Preset | None, typer.Option("--preset", help="training recipe (trainer/config.py)",
                                                     show_default=False)] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=0, help="total steps (resume continues to it)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in -o from its checkpoint, with its "
                                                          "saved config and data")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="start over the run in -o (deletes its checkpoints "
                                                                "and logs); without it an existing run is refused")
                         ] = False,
    allow_changes: Annotated[bool, typer.Option(
        "--allow-changes", help="with --resume: apply --steps/--set/--data that differ from the run's own (recorded "
                                "in its config.json history); without it they are refused")] = False,
    device: Annotated[Device, typer.Option("--device", help="auto = CUDA when torch sees a GPU")] = Device.auto,
    vgg_weights: Annotated[Path | None, typer.Option(
        "--vgg-weights", exists=True, dir_okay=False,
        help="VGG-19 or VGG-16 features state dict (.pth/.safetensors, torchvision keys)")] = None,
    random_vgg: Annotated[bool, typer.Option(
        "--random-vgg-weights-not-a-perceptual-loss",
        help="use an untrained VGG for the content loss (tests only: the loss is then meaningless)")] = False,
    init: Annotated[Path | None, typer.Option(
        "--init", exists=True, dir_okay=False,
        help="start G from this checkpoint (fine-tuning), or from one of our ONNX exports "
             "(models/NAME.onnx: its weights, proven against the graph)")] = None,
    val: Annotated[list[Path] | None, typer.Option(
        "--val", exists=True, file_okay=False, help="validation set folder(s) scored at each checkpoint")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", file_okay=False,
                                                  help="cache of decoded HR/LR pairs (.npz)")] = None,
    degradation: Annotated[Degradation | None, typer.Option(
        "--degradation", help="how LR is made when no official LR exists: matlab (default, bicubic imresize) "
                              "or pil (Pillow bicubic); real = made per sample from HR crops by random blur, "
                              "resize, noise and JPEG, twice (trainer/degradations.py; official LR files are "
                              "ignored); real-mean = real with each LR channel's mean kept at the HR's (no "
                              "colour correction to learn); real-mix = real-mean with a fifth of the samples "
                              "clean (MATLAB bicubic, as the academic LR); real-orders = real-mix with half "
                              "the degraded samples first-order (blur, shrink, noise, one JPEG); real-first = the same "
                              "with four fifths of them first-order",
        show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="config override KEY=VALUE, repeatable "
                                                      "(e.g. --set lr_g=2e-4 --set blocks=8)")] = None,
    threads: ThreadsOpt = 0,
    verbose: VerboseOpt = False,
) -> None:
    """Train or fine-tune a generator (two-phase SRGAN; presets in trainer/config.py)."""
    _require_torch("srgan train")
    import torch

    from srgan.trainer.run import run_training

    out = _deprecated(output, out_old, "--out", "-o/--output")
    if out is None:
        raise typer.BadParameter("give the run folder with -o/--output", param_hint="-o/--output")
    _setup_logging(True)
    if threads:
        torch.set_num_threads(threads)

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

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

    overrides = _parse_sets(set_ or []) | ({"degradation": degradation.value} if degradation else {})
    try:
        result, cfg = run_training(preset_name=preset.value if preset else None, data=data, out=out, steps=steps,
                                   resume=resume, overwrite=overwrite, allow_changes=allow_changes,
                                   device=device.value, vgg_weights=vgg_weights, random_vgg=random_vgg,
                                   init_from=init, val=val, cache_dir=cache, overrides=overrides, on_log=show)
    finally:
        bar.stop()
    typer.echo(f"{cfg.preset}: step {result.step}/{result.steps} (phase 1 = first {result.warmup_steps} steps, "
               f"1 epoch = {result.epoch_steps} steps); checkpoint {result.checkpoint}")
    if result.stopped_by:  # the checkpoint is at result.step; exit as the signal would (128 + its number)
        import signal

        typer.echo(f"stopped by {result.stopped_by}: continue with `srgan train --resume -o {out}`", err=True)
        raise typer.Exit(128 + signal.Signals[result.stopped_by].value)


@app.command("average")
@_exits
def average_cmd(
    checkpoints: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False,
                                                      help="two or more checkpoints fine-tuned from one model")],
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, help="generator file to write (.pt)")],
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="average the EMA weights where a checkpoint has them")
                   ] = True,
) -> None:
    """Average generator weights of several runs into one checkpoint (a model soup; export it as usual)."""
    _require_torch("srgan average")
    from srgan.trainer.checkpoint import average_generators

    state = average_generators(checkpoints, output, use_ema=ema)
    for src in state["averaged_from"]:
        typer.echo(f"  {src['path']} (step {src['step']}, {src['weights']} weights)")
    typer.echo(f"written: {output} ({state['arch']}, the mean of {len(checkpoints)} generators)")


@app.command("eval")
@_exits
def eval_(
    model: Annotated[str, typer.Argument(
        help=f"registry name ({', '.join(MODELS)}), ONNX file, or trainer checkpoint (.pt; needs torch)",
        autocompletion=lambda: list(MODELS), show_default=False)],
    data: Annotated[list[Path] | None, typer.Option(
        "--data", exists=True, file_okay=False,
        help="benchmark folder(s) with HR/ (+ LR_bicubic_x4/), repeatable; default Set5, Set14, BSD100 "
             "under the data folder ($SRGAN_DATA_DIR)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", file_okay=False, show_default=False,
                                                   help="folder for CSV/TXT, grids and patches")] = None,
    out_old: OldOutOpt = None,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
    engine: EngineOpt = Engine.auto,
    precision: PrecisionOpt = Precision.auto,
    tile: TileOpt = DEFAULT_TILE,
    no_ema: Annotated[bool, typer.Option("--no-ema", help="use the raw G weights, not the EMA")] = False,
    ensemble: EnsembleOpt = False,
    color_fix: ColorFixOpt = False,
    grids: Annotated[int, typer.Option("--grids", min=0, help="comparison grids per set")] = 5,
    record: Annotated[bool, typer.Option("--record", help="write the means into the ONNX model's metadata "
                                         "and model card (needs -o and an ONNX MODEL)")] = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """PSNR/SSIM (Y, border 4) and LPIPS of a model and of bicubic, per image and mean (ONNX: no torch)."""
    from srgan.runtime.api import evaluate
    from srgan.runtime.errors import UsageError

    _setup_logging(verbose)
    out = _deprecated(output, out_old, "--out", "-o/--output")
    checkpoint = Path(model).suffix == ".pt"
    if record and (ensemble or color_fix):
        raise UsageError("--record writes the model's own numbers; drop --ensemble and --color-fix to record them")
    if record and (out is None or checkpoint):
        raise UsageError("--record needs -o/--output and an ONNX model (not a .pt checkpoint)")
    if record and precision not in (Precision.auto, Precision.fp32):
        raise UsageError("--record writes the model's own (fp32) numbers; drop --precision")
    if record:
        precision = Precision.fp32  # the recorded quality is fp32's; the bf16 loss is measured against it below
    if checkpoint:
        _require_torch(f"srgan eval of the checkpoint {model}")
        if engine != Engine.auto or precision != Precision.auto:
            raise UsageError("--engine/--precision apply to ONNX models; a .pt checkpoint runs in torch fp32")
    net: object = model
    if not checkpoint:
        from srgan.runtime.api import load

        net = load(model, device=device.value, threads=threads, engine=engine.value, precision=precision.value)
        _say_engine(net, quiet=quiet)
    report = evaluate(net, data, out, tile=tile, ensemble=ensemble, color_fix=color_fix, device=device.value,
                      threads=threads, use_ema=not no_ema, grids_per_set=grids)
    if json_:
        _print_json(report.to_dict())
    _say(report.table(), quiet=quiet, json_mode=json_)
    if out is not None:
        _say(f"written: {out}/summary.csv, summary.txt, <set>.csv, grids/, patches/", quiet=quiet, json_mode=json_)
    if record:
        from srgan.runtime.extras import require_extra
        from srgan.runtime.registry import resolve_model

        require_extra("export", "srgan eval --record", ("onnx",))
        from srgan.export.model_card import quality_from_csv, record_quality

        path = resolve_model(model)
        card = record_quality(path, quality_from_csv(out / "summary.csv"))
        from srgan.export.model_card import write_model_card
        from srgan.runtime.precision import record_engine_facts

        facts = record_engine_facts(path, threads=threads)  # the bf16 gate and memory per engine
        card = write_model_card(path)
        _say(f"recorded in {path.name} metadata and {', '.join(p.name for p in card)}; bf16 gate: "
             f"{facts['bf16']}; bytes per LR pixel: {facts['memory']}", quiet=quiet, json_mode=json_)


@app.command("fetch-div2k")
@_exits
def fetch_div2k_cmd(
    root: Annotated[Path, typer.Argument(file_okay=False, help="folder to download and unpack DIV2K into")],
    part: Annotated[list[str] | None, typer.Option("--part", help="train_hr, train_lr_x4, valid_hr, "
                                                      "valid_lr_x4 (default: train_hr + train_lr_x4)")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="a mirror of the official archives")] = None,
) -> None:
    """Download DIV2K (cached, sha256 recorded and verified) for `train --data ROOT`."""
    _require_torch("srgan fetch-div2k")
    from srgan.trainer.div2k import DEFAULT_BASE_URL, fetch_div2k

    _setup_logging(True)
    fetch_div2k(root, tuple(part or ("train_hr", "train_lr_x4")), base_url=base_url or DEFAULT_BASE_URL)
    typer.echo(f"DIV2K ready in {root}: train with --data {root}")


# ---- export (torch + onnx; installed with the `export` extra) ------------------------------
@app.command("export")
@_exits
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="trainer checkpoint (.pt)")],
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False,
                                         help="ONNX file to write, e.g. models/srresnet_x4.onnx")],
    variants: Annotated[list[str] | None, typer.Option(
        "--variant", "--variants", help="extra file, repeatable: fp16 (GPU), int8; each measured against fp32")
    ] = None,
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="use the EMA weights when the checkpoint has them")
                   ] = True,
    opset: Annotated[int, typer.Option("--opset", min=18, help="ONNX opset (18 = the exporter's native one)")
                     ] = 18,
    calib: Annotated[list[Path] | None, typer.Option(
        "--calib", exists=True, file_okay=False,
        help="training image folder for int8 calibration (default: the run's training data)")] = None,
    eval_csv: Annotated[list[Path] | None, typer.Option(
        "--eval-csv", exists=True, dir_okay=False,
        help="cli.py eval summary.csv whose numbers go into the metadata and model card")] = None,
    trained_on: Annotated[str | None, typer.Option(
        "--trained-on", help="training data description (default: from the run's config.json)")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Export a checkpoint to ONNX with metadata, a parity report and a model card."""
    _require_torch("srgan export")
    from srgan.export.onnx_export import export_generator

    _setup_logging(verbose)
    kinds = _split_commas(variants or [], "--variant")
    report = export_generator(checkpoint, output, opset=opset, use_ema=ema, variants=kinds,
                              calibration_dirs=calib, eval_csv=eval_csv, trained_on=trained_on, engine_facts=True)
    typer.echo(report.parity.table())
    typer.echo(f"receptive radius: {report.receptive_radius} LR px (measured {report.measured_radius}); "
               f"opset {report.opset}")
    for v in report.variants:
        loss = ", ".join(f"{s} {d['loss_db']:+.3f} dB" for s, d in v.psnr.items()) or "PSNR not measured"
        typer.echo(f"variant {v.name}: {v.path.name}; {loss}; {v.verdict}")
    typer.echo(f"written: {report.path}, {report.parity_json.name}, {report.card_json.name}, {report.card_md.name}")


@app.command("export-lpips")
@_exits
def export_lpips_cmd(
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", dir_okay=False, help="ONNX file to write (default: models/lpips_alex.onnx)")] = None,
    weights: Annotated[Path | None, typer.Option(
        "--weights", "--lpips-weights", exists=True, dir_okay=False,
        help="AlexNet trunk (.pth/.safetensors, torchvision keys); default: torchvision's cache")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Export AlexNet LPIPS v0.1 to ONNX so the runtime scores LPIPS without torch."""
    _require_torch("srgan export-lpips")
    from srgan.export.lpips_onnx import export_lpips
    from srgan.runtime.lpips import default_lpips_path

    _setup_logging(verbose)
    report = export_lpips(output or default_lpips_path(), weights)
    typer.echo(report.parity.table())
    mean = report.set5_bicubic_mean
    typer.echo(f"trunk: {report.source}")
    typer.echo("Set5 bicubic x4 LPIPS: " + (f"{mean:.4f} (published 0.3407)" if mean is not None
                                             else "not measured (../shared/data/Set5 absent)"))
    typer.echo(f"written: {report.path}")


# ---- benchmarks (torch-free: the base install runs them) -----------------------------------
bench_app = typer.Typer(no_args_is_help=True, add_completion=True, rich_markup_mode=None,
                        help="Latency and quality benchmarks: CSV, Markdown and PNG charts in -o OUT.")
app.add_typer(bench_app, name="bench")

BenchOutOpt = Annotated[Path, typer.Option("--output", "-o", file_okay=False,
                                           help="folder for the CSV, Markdown and PNG results")]


def _peer_names() -> list[str]:
    from srgan.runtime.peers import PEERS  # stdlib only: cheap at start-up

    return [*PEERS, "all"]


PeerChoice = enum.Enum("PeerChoice", {name: name for name in _peer_names()}, type=str)  # type: ignore[misc]


@bench_app.command("latency")
@_exits
def bench_latency_cmd(
    model: ModelOpt = DEFAULT_MODEL,
    output: BenchOutOpt = Path("runs/bench"),
    tile: Annotated[list[int] | None, typer.Option(
        "--tile", min=0, max=16384, help="tile side in LR pixels, repeatable; 0 = whole image "
        "(default 64 128 256 0)", show_default=False)] = None,
    tile_size: Annotated[list[int] | None, typer.Option(
        "--tile-size", min=0, hidden=True, help="deprecated spelling of --tile")] = None,
    threads: Annotated[list[int] | None, typer.Option(
        "--threads", min=0, max=1024, help="CPU thread count, repeatable; 0 = all cores "
        "(default 1 and all cores)", show_default=False)] = None,
    device: DeviceOpt = Device.auto,
    engine: Annotated[list[Engine] | None, typer.Option(
        "--engine", help="CPU engine, repeatable (default onnxruntime and openvino)", show_default=False)] = None,
    precision: Annotated[list[Precision] | None, typer.Option(
        "--precision", help="precision, repeatable; each --engine runs each --precision "
        "(default fp32, and bf16 on openvino where the CPU has it)", show_default=False)] = None,
    size: Annotated[int, typer.Option("--size", min=8, max=8192, help="side of the square LR test image")] = 320,
    runs: Annotated[int, typer.Option("--runs", min=1, help="timed runs per setting (the median is reported)")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="untimed runs first")] = 1,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Latency of a model per tile size x threads x engine/precision, with the fraction of the matching GEMM peak."""
    import os

    from srgan.runtime.bench import (
        DEFAULT_TILES,
        bench_latency,
        latency_markdown,
        write_latency,
    )
    from srgan.runtime.registry import resolve_model

    _setup_logging(verbose)
    tiles = _deprecated(tile, tile_size, "--tile-size", "--tile")
    counts = [n or os.cpu_count() or 1 for n in threads or []]  # 0 = all cores, as everywhere
    providers = {"auto": [], "cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider"]}[device.value]
    pairs = [(e.value, p.value) for e in engine or [] for p in precision or [Precision.auto]]
    if precision and not engine:
        pairs = [(e.value, p.value) for e in (Engine.onnxruntime, Engine.openvino) for p in precision
                 if not (e == Engine.onnxruntime and p not in (Precision.fp32, Precision.auto))]
    report = bench_latency(resolve_model(model), tiles=tiles or DEFAULT_TILES, threads=counts,
                           providers=providers, lr_size=(size, size), runs=runs, warmup=warmup, engines=pairs,
                           progress=None if quiet or json_ else lambda text: typer.echo(text, err=True))
    written = write_latency(report, output)
    if json_:
        _print_json({**_jsonable(report), "written": written})
    _say(latency_markdown(report), quiet=quiet, json_mode=json_)
    _say("written: " + ", ".join(map(str, written)), quiet=quiet, json_mode=json_)


@bench_app.command("quality")
@_exits
def bench_quality_cmd(
    datasets: Annotated[list[Path] | None, typer.Argument(
        exists=True, file_okay=False, show_default=False,
        help="dataset folders with HR/ (+ LR_bicubic_x4/); default Set5, Set14, BSD100 under the data "
             "folder ($SRGAN_DATA_DIR)")] = None,
    output: BenchOutOpt = Path("runs/bench"),
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help=f"model name ({', '.join(MODELS)}) or path to an .onnx file, repeatable: every model, "
        f"bicubic and the peers are timed image by image in turn [default: {DEFAULT_MODEL}]", show_default=False,
        autocompletion=lambda: list(MODELS))] = None,
    no_model: Annotated[bool, typer.Option("--no-model", help="score only bicubic and the peers")] = False,
    peer: Annotated[list[PeerChoice] | None, typer.Option(
        "--peer", help="peer to compare, repeatable (all = every one that loads)", show_default=False)] = None,
    peers_dir: Annotated[Path | None, typer.Option(
        "--peers-dir", exists=True, file_okay=False, help="folder of the peer model files "
        "(default: the peers folder, $SRGAN_PEERS_DIR)")] = None,
    lpips: Annotated[Path | None, typer.Option(
        "--lpips", exists=True, dir_okay=False, help="LPIPS ONNX file (default models/lpips_alex.onnx when present)")
    ] = None,
    tile: TileOpt = DEFAULT_TILE,
    color_fix: Annotated[bool, typer.Option(
        "--color-fix", help="also score every model and peer with the colour fix, as NAME+fix")] = False,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
    engine: EngineOpt = Engine.auto,
    precision: PrecisionOpt = Precision.auto,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """PSNR / SSIM (Y, border 4), LPIPS, colour cast and speed of the models, bicubic and peers on the same LR
    images."""
    from srgan.runtime.api import load
    from srgan.runtime.bench import quality_markdown, write_quality
    from srgan.runtime.errors import UsageError
    from srgan.runtime.quality import run_quality

    _setup_logging(verbose)
    if no_model and model:
        raise UsageError("--no-model and --model exclude each other; drop one")
    names = [] if no_model else list(dict.fromkeys(model or [DEFAULT_MODEL]))
    sr_models = [load(name, device=device.value, threads=threads, engine=engine.value, precision=precision.value)
                 for name in names]
    report = run_quality(datasets, models=sr_models, peers=[p.value for p in peer or []], peers_dir=peers_dir,
                         lpips=lpips, tile=tile, device=device.value, threads=threads, color_fix=color_fix,
                         progress=None if quiet or json_ else lambda text: typer.echo(text, err=True))
    written = write_quality(report, output)
    if json_:
        _print_json({"summary": _jsonable(report.summary()), **_jsonable(report), "written": written})
    _say(quality_markdown(report), quiet=quiet, json_mode=json_)
    _say("written: " + ", ".join(map(str, written)), quiet=quiet, json_mode=json_)


if __name__ == "__main__":
    app()

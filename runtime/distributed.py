"""Batch upscaling on a Ray cluster (Ray Data), idempotent and exactly once per output.

The local pipeline does the work; this module only spreads it. The driver plans
the job with :func:`~runtime.pipeline.plan_jobs` (same output names as the local
``upscale``), writes a manifest of the inputs (``OUT/.srgan-ray/manifest.parquet``:
key, src, dst, size, mtime_ns, pixels, whether dst existed, planning error) and
feeds its rows, never pixels, to ``map_batches`` over a pool of stateful actors.
Each actor loads the model once and runs :func:`~runtime.pipeline.process_one` per
row: it reads the file, tiles, runs and writes the output atomically into the
shared output folder, and returns one small status row (key, status, reason,
sizes, seconds, input and output sha256, pid, node). The driver collects the rows
into ``status.parquet`` and ``summary.json`` next to the manifest.

Exactly once: outputs are written with ``os.replace`` (whole or absent). When an
actor dies, Ray restarts it and retries its batch; a retried row whose output now
exists but did not when the job was planned was written by the lost attempt and is
reported ``ok`` without redoing it. A rerun verifies recorded outputs by sha256
(and inputs by size and mtime) and skips them; outputs missing after any failure
are done then. Temporary files left by a killed writer are removed at the start
and the end (the pipeline's ``remove_stale_temps``), and ``ok`` outputs go into the
pipeline's output -> input record (``OUT/.srgan-outputs.jsonl``, written by the
driver alone), so name collisions are caught as in a local run.

Ray is optional (``pip install 'srgan-toolkit[ray]'``); it is imported only here,
inside the functions that need it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SRError, UsageError
from .imageio import remove_stale_temps
from .pipeline import (
    BatchProgress,
    BatchReport,
    FileResult,
    Job,
    UpscaleOptions,
    check_model,
    plan_jobs,
    process_one,
)
from .session import Device

__all__ = ["STATE_DIR", "RayOptions", "RayReport", "parse_actors", "sha256_file", "upscale_ray"]

log = logging.getLogger(__name__)

STATE_DIR = ".srgan-ray"  # under OUT; hidden, so folder scans never read it as input
_MAX_BLOCKS = 10_000  # dataset blocks at most: bounds scheduling overhead for millions of rows

_STATUS_COLUMNS: dict[str, str] = {  # name -> pyarrow type name; one row per key
    "key": "string", "src": "string", "dst": "string", "status": "string", "reason": "string",
    "in_w": "int64", "in_h": "int64", "out_w": "int64", "out_h": "int64", "seconds": "float64",
    "in_size": "int64", "in_mtime_ns": "int64", "in_sha256": "string", "out_sha256": "string",
    "transient": "bool_", "note": "string", "pid": "int64", "node": "string", "finished_at": "float64",
}


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a Ray job runs. Raises :class:`~runtime.errors.UsageError` for bad values.

    ``address``: ``local`` (start an in-process Ray on this machine), ``auto`` or
    ``HOST:PORT`` (join a running cluster, as ``ray.init(address=...)``).
    ``min_actors``/``max_actors``: the actor pool (None = as many as the cluster's
    CPUs, or GPUs, allow for one actor's share; a fixed pool). ``threads``: CPUs
    reserved per actor and its onnxruntime intra-op threads. ``gpus``: GPUs per
    actor (then the model runs on CUDA, or the job stops). ``batch_size``: files per
    actor call. ``in_flight``: calls queued per actor (backpressure: memory is
    bounded by actors x in_flight x batch_size files, not by the dataset size).
    """

    address: str = "local"
    min_actors: int | None = None
    max_actors: int | None = None
    threads: int = 1
    gpus: float = 0.0
    batch_size: int = 1
    in_flight: int = 2

    def __post_init__(self) -> None:
        if not self.address:
            raise UsageError("--ray needs an address: local, auto or HOST:PORT")
        if self.min_actors is not None and self.min_actors < 1:
            raise UsageError(f"--ray-actors: the minimum must be >= 1, got {self.min_actors}")
        if self.max_actors is not None and self.max_actors < (self.min_actors or 1):
            raise UsageError(f"--ray-actors: the maximum {self.max_actors} is below the minimum {self.min_actors}")
        if self.threads < 1:
            raise UsageError(f"--ray-threads must be >= 1, got {self.threads}")
        if self.gpus < 0:
            raise UsageError(f"--ray-gpus must be >= 0, got {self.gpus}")
        if self.batch_size < 1 or self.in_flight < 1:
            raise UsageError(f"batch_size and in_flight must be >= 1, got {self.batch_size}, {self.in_flight}")


@dataclass(frozen=True)
class RayReport:
    """A finished Ray job: the same :class:`~runtime.pipeline.BatchReport` as a local run, plus
    where the manifest, status table and summary went, and what the cluster did."""

    report: BatchReport
    manifest: Path
    status: Path
    summary: Path
    actors: int  # distinct actor processes that returned rows
    nodes: int
    duplicates: int  # rows returned more than once for a key (0 unless Ray re-ran a finished batch)
    leftovers_removed: int  # temporary files of killed writers removed at the end


def parse_actors(text: str) -> tuple[int, int]:
    """``"N"`` -> (N, N); ``"MIN,MAX"`` -> (MIN, MAX). Raises :class:`UsageError` otherwise."""
    parts = text.split(",")
    try:
        lo, hi = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except (ValueError, IndexError):
        raise UsageError(f"--ray-actors takes N or MIN,MAX (e.g. 2,8), got {text!r}") from None
    if len(parts) > 2 or lo < 1 or hi < lo:
        raise UsageError(f"--ray-actors takes N or MIN,MAX with 1 <= MIN <= MAX, got {text!r}")
    return lo, hi


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- one row, inside an actor

def _run_row(row: dict[str, Any], model: Any, options: UpscaleOptions, root: str) -> dict[str, Any]:
    """Do one manifest row (joined with its previous record) and return its status row; never raises."""
    src, dst = Path(row["src"]), Path(row["dst"])
    out: dict[str, Any] = {k: row[k] for k in ("key", "src", "dst")}
    out.update(status="failed", reason="", in_w=0, in_h=0, out_w=0, out_h=0, seconds=0.0, in_size=0,
               in_mtime_ns=0, in_sha256="", out_sha256="", transient=False, note="", pid=os.getpid(), node=_node_id(),
               finished_at=0.0)
    t0 = time.perf_counter()
    try:
        if row["error"]:
            out["reason"] = row["error"]
            return out
        try:
            st = src.stat()
            out.update(in_size=st.st_size, in_mtime_ns=st.st_mtime_ns)
        except OSError:
            st = None  # gone or unreadable: process_one reports it as the local run does
        recorded = row["prev_out_sha256"] or ""
        if st is not None and dst.exists() and not row["existed"]:
            # Not there when the job was planned: a lost attempt of this job wrote it (whole, by os.replace).
            out.update(status="ok", note="written by an attempt whose actor was lost; not redone",
                       in_sha256=sha256_file(src), out_sha256=sha256_file(dst))
            out["in_w"], out["in_h"] = _probe(src)
            out["out_w"], out["out_h"] = _probe(dst)
            return out
        if st is not None and dst.exists() and recorded and not options.overwrite:
            now = sha256_file(dst)
            same_input = (row["prev_in_size"], row["prev_in_mtime_ns"]) == (st.st_size, st.st_mtime_ns)
            out.update(in_sha256=row["prev_in_sha256"] or "", out_sha256=now)
            if now == recorded and same_input:
                out.update(status="skipped", reason="done by an earlier run (output sha256 verified)")
            else:
                what = "the output changed" if now != recorded else "the input changed"
                out["reason"] = (f"{dst}: {what} since the earlier run recorded it (sha256 {recorded[:12]}); "
                                 "use --overwrite to redo it")
            return out
        result = process_one(src, dst, model, options, root=root)
        out.update(status=result.status, reason=result.reason, transient=result.transient)
        if result.in_size:
            out["in_w"], out["in_h"] = result.in_size
        if result.out_size:
            out["out_w"], out["out_h"] = result.out_size
        if result.status != "failed":
            out.update(in_sha256=sha256_file(src), out_sha256=sha256_file(dst) if dst.is_file() else "")
    except Exception as e:  # one bad row must not stop the job (as in upscale_batch); logged in full
        log.exception("unexpected error on %s", src)
        out.update(status="failed", reason=f"internal error {type(e).__name__}: {e}")
    finally:
        out["seconds"] = time.perf_counter() - t0
        out["finished_at"] = time.time()
    return out


def _probe(path: Path) -> tuple[int, int]:
    from .imageio import probe_size

    return probe_size(path)


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


class _Upscaler:
    """The callable class of ``map_batches``: one model per actor, rows in, status rows out."""

    def __init__(self, model: dict[str, Any], options: UpscaleOptions, root: str) -> None:
        from .api import load

        logging.basicConfig(level=logging.WARNING)
        self.model = load(**model)  # the same factory and engine/precision/device options as a local run
        self.options = options
        self.root = root

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = [_run_row(r, self.model, self.options, self.root) for r in batch.to_pylist()]
        return pa.Table.from_pylist(rows, schema=_status_schema())


# ---------------------------------------------------------------- tables

def _status_schema() -> Any:
    import pyarrow as pa

    return pa.schema([(k, getattr(pa, t)()) for k, t in _STATUS_COLUMNS.items()])


def _write_parquet(table: Any, path: Path) -> None:
    """Write ``table`` to ``path`` atomically (the one :func:`~runtime.imageio.atomic_write`)."""
    import pyarrow.parquet as pq

    from .imageio import atomic_write

    with atomic_write(path) as fh:
        pq.write_table(table, fh)


def _read_records(path: Path) -> dict[str, dict[str, Any]]:
    """The previous status table by key (empty if none). Raises :class:`UsageError` if unreadable."""
    if not path.is_file():
        return {}
    import pyarrow.parquet as pq

    try:
        return {r["key"]: r for r in pq.read_table(path).to_pylist()}
    except Exception as e:  # pyarrow raises several untyped errors for a damaged file
        raise UsageError(f"{path}: the status table of an earlier run is unreadable ({e}); "
                         "move it away to start the job afresh") from e


def _manifest(jobs: list[Job], out: Path) -> list[dict[str, Any]]:
    """One manifest row per planned job: key = output path relative to ``out`` (posix)."""
    rows = []
    for job in jobs:
        try:
            st = job.src.stat()
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime = -1  # the reason is reported when the row is processed
        rows.append({"key": job.dst.relative_to(out).as_posix(), "src": str(job.src.absolute()),
                     "src_id": str(job.src.resolve()), "dst": str(job.dst.absolute()), "size": size,
                     "mtime_ns": mtime, "pixels": job.pixels, "existed": job.dst.exists(), "error": job.error})
    return rows


# ---------------------------------------------------------------- the job

def _import_ray() -> Any:
    """The ray module with Ray Data and pyarrow. Raises :class:`~runtime.errors.UsageError` (exit 2)
    naming the install command if the ``ray`` extra is not installed."""
    from .extras import MissingExtraError, install_command

    try:
        import pyarrow  # noqa: F401  (Ray Data and pyarrow make the extra)
        import ray
        import ray.data
    except ImportError:
        raise MissingExtraError(f"--ray needs Ray Data and pyarrow from the 'ray' extra, which is not installed: "
                                f"{install_command('ray')}") from None
    return ray


def _check_address(address: str) -> None:
    """Raise :class:`UsageError` if nothing answers at a ``HOST:PORT`` address (a 10 s TCP connect;
    Ray itself retries for minutes). Other addresses (local, auto, ray://) pass."""
    host, sep, port = address.rpartition(":")
    if sep and host and port.isdigit() and "://" not in address:
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as e:
            raise UsageError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one with "
                             "`ray start --head --port PORT` or use --ray local") from None


def _connect(address: str, verbose: bool) -> tuple[Any, bool]:
    """Join (or start) the cluster; returns (the ray module, whether this call connected it).

    Raises :class:`UsageError` if nothing answers at ``HOST:PORT`` or Ray cannot join.
    """
    ray = _import_ray()
    if ray.is_initialized():  # a caller that manages Ray itself
        return ray, False
    _check_address(address)
    for name in ("ray", "ray.data"):  # Ray's own INFO chatter; warnings and errors stay
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    kwargs: dict[str, Any] = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    if address == "local":
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError... for a bad address
        raise UsageError(f"cannot join the Ray cluster at {address!r} ({type(e).__name__}: {e}); "
                         "start one with `ray start --head` or use --ray local") from None
    return ray, True


def upscale_ray(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    model: str | Path,
    device: Device = "auto",
    engine: str | None = None,
    precision: str | None = None,
    options: UpscaleOptions | None = None,
    ray_options: RayOptions = RayOptions(),
    recursive: bool = False,
    glob: str | None = None,
    progress: BatchProgress | None = None,
    verbose: bool = False,
) -> RayReport:
    """Upscale files and folders into ``out_dir`` on a Ray cluster; same outputs as
    :func:`~runtime.pipeline.upscale_batch` (byte-identical files, same per-file results).

    ``options``: per-file options (None = defaults). ``model``/``device``/``engine``/``precision``
    as :func:`runtime.api.load` (each actor
    loads it so). ``out_dir``, the inputs and the model file must be on a filesystem
    every node sees at the same path. Raises :class:`UsageError` (Ray not installed,
    no cluster at the address, no images, bad options), :class:`~runtime.errors.ModelError`
    or :class:`~runtime.errors.DeviceError` before any file is processed; per-file
    problems are in the results. If the cluster itself fails mid-job, raises
    :class:`UsageError` saying so; finished outputs stay and a rerun does the rest.
    """
    from .api import load
    from .pipeline import (
        _Outputs,  # the local batch's output -> input record: same file, same rule
    )
    from .registry import resolve_model

    t0 = time.perf_counter()
    _import_ray()  # before any work: without the extra, exit 2 with the install command
    _check_address(ray_options.address)
    options = options if options is not None else UpscaleOptions()
    if ray_options.gpus > 0:
        if device == "cpu":
            raise UsageError("--ray-gpus with --device cpu: drop one of them")
        device = "cuda"  # an actor given a GPU runs on it or fails; never a silent CPU fallback
    out = Path(out_dir).absolute()
    jobs = plan_jobs(inputs, out_dir, recursive=recursive, glob=glob, fmt=options.format)
    if not jobs:
        raise UsageError(f"no images found in {', '.join(map(str, inputs))}"
                         + ("" if recursive else " (add --recursive for subfolders)"))
    model_path = resolve_model(model).absolute()
    spec: dict[str, Any] = {"name_or_path": str(model_path), "device": device, "threads": ray_options.threads,
                            **{k: v for k, v in (("engine", engine), ("precision", precision)) if v is not None}}
    probe = load(**{**spec, "device": "cpu" if device == "cuda" else device})  # a bad model stops the job here
    check_model(probe)
    scale2 = probe.scale ** 2
    provider = "CUDAExecutionProvider" if device == "cuda" else probe.provider
    del probe

    ray, connected = _connect(ray_options.address, verbose)
    import pyarrow as pa
    from ray.data import ActorPoolStrategy, DataContext

    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
        state = out / STATE_DIR
        state.mkdir(exist_ok=True)
        manifest_path, status_path, summary_path = (state / "manifest.parquet", state / "status.parquet",
                                                    state / "summary.json")
        rows = _manifest(jobs, Path(out_dir))
        _write_parquet(pa.Table.from_pylist(rows), manifest_path)
        records = _read_records(status_path)
        outputs = _Outputs(out)
        for r, job in zip(rows, jobs, strict=True):
            rec = records.get(r["key"], {})
            ok = rec.get("status") in ("ok", "skipped") and rec.get("out_sha256")
            r.update(prev_out_sha256=rec["out_sha256"] if ok else "", prev_in_sha256=rec.get("in_sha256") or "",
                     prev_in_size=rec.get("in_size", -1), prev_in_mtime_ns=rec.get("in_mtime_ns", -1))
            writer = outputs.writer_of(r["key"])
            if not r["error"] and not options.overwrite and r["existed"] and writer not in (None, r["src_id"]):
                r["error"] = (f"{job.dst}: name collision: this output was written from {writer}, not from "
                              f"{job.src}; use another -o, rename one input, or --overwrite to replace it")
        table = pa.Table.from_pylist(rows)

        resources = ray.cluster_resources()
        per_actor = ("GPU", ray_options.gpus) if ray_options.gpus > 0 else ("CPU", float(ray_options.threads))
        fits = max(1, int(resources.get(per_actor[0], 0.0) // per_actor[1]))
        hi = ray_options.max_actors or min(fits, len(rows))
        lo = min(ray_options.min_actors or hi, hi)
        per_block = max(ray_options.batch_size, math.ceil(len(rows) / _MAX_BLOCKS))
        DataContext.get_current().enable_progress_bars = False  # the caller's progress is ours, per file
        ds = ray.data.from_arrow([table.slice(i, per_block) for i in range(0, len(rows), per_block)])
        ds = ds.map_batches(
            _Upscaler, batch_size=ray_options.batch_size, batch_format="pyarrow",
            fn_constructor_kwargs={"model": spec, "options": options, "root": str(out)},
            compute=ActorPoolStrategy(min_size=lo, max_size=hi,
                                      max_tasks_in_flight_per_actor=ray_options.in_flight),
            num_cpus=ray_options.threads, **({"num_gpus": ray_options.gpus} if ray_options.gpus > 0 else {}),
        )
        log.info("ray job: %d files, %d-%d actors (%s %g each), %d rows per block", len(rows), lo, hi,
                 *per_actor, per_block)

        by_key = {r["key"]: j for r, j in zip(rows, jobs, strict=True)}
        src_ids = {r["key"]: r["src_id"] for r in rows}
        got: dict[str, dict[str, Any]] = {}
        duplicates = 0
        if progress is not None:
            progress.start(sum(j.pixels for j in jobs) * scale2, len(jobs))
        try:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                for r in batch.to_pylist():
                    duplicates += r["key"] in got
                    got[r["key"]] = r
                    if r["status"] == "ok":
                        outputs.record(r["key"], src_ids[r["key"]])
                    if progress is not None:
                        progress.advance(by_key[r["key"]].pixels * scale2)
                        progress.done(_file_result(by_key[r["key"]], r))
        except SRError:
            raise
        except Exception as e:  # the cluster failed (a batch's retries spent, nodes lost...)
            raise UsageError(f"the Ray job failed ({type(e).__name__}: {e}); finished outputs are kept and "
                             "recorded on the next run, which does the rest") from e
        finally:
            outputs.close()
    finally:
        if connected:
            ray.shutdown()

    missing = [k for k in by_key if k not in got]
    if missing:  # Ray Data returned without some rows: never reported as done
        raise UsageError(f"the Ray job returned no status for {len(missing)} files (first: {missing[0]}); "
                         "rerun to finish them")
    leftovers = len(remove_stale_temps(out))  # writers killed mid-file (their pid is gone)
    seconds = time.perf_counter() - t0
    keep = [rec for k, rec in records.items() if k not in got]  # other inputs an earlier run wrote into OUT
    status_rows = [{c: rec.get(c) for c in _STATUS_COLUMNS} for rec in keep] + [got[k] for k in by_key]
    _write_parquet(pa.Table.from_pylist(status_rows, schema=_status_schema()), status_path)
    results = [_file_result(by_key[k], got[k]) for k in by_key]
    counts = {k: sum(r.status == k for r in results) for k in ("ok", "skipped", "failed")}
    done = [got[k] for k in by_key if got[k]["status"] == "ok"]
    pids, nodes = {r["pid"] for r in got.values()}, {r["node"] for r in got.values()}
    summary = {
        "address": ray_options.address, "files": len(results), "counts": counts, "seconds": round(seconds, 3),
        "files_per_s": round(counts["ok"] / seconds, 3),
        "output_megapixels_per_s": round(sum(r["out_w"] * r["out_h"] for r in done) / 1e6 / seconds, 3),
        "mean_item_seconds": round(sum(r["seconds"] for r in done) / max(1, len(done)), 4),
        "actors": len(pids), "nodes": len(nodes), "duplicates": duplicates, "leftovers_removed": leftovers,
        "failures": [{"key": k, "reason": got[k]["reason"]} for k in by_key if got[k]["status"] == "failed"],
    }
    tmp = summary_path.with_name(f".{summary_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, summary_path)
    report = BatchReport(results, model_path, provider, seconds, None, counts)
    return RayReport(report, manifest_path, status_path, summary_path, len(pids), len(nodes), duplicates, leftovers)


def _file_result(job: Job, row: dict[str, Any]) -> FileResult:
    """The status row as the local pipeline's :class:`FileResult` (same paths as planned)."""
    in_size = (row["in_w"], row["in_h"]) if row["in_w"] else None
    out_size = (row["out_w"], row["out_h"]) if row["out_w"] else None
    return FileResult(job.src, job.dst, row["status"], row["reason"], in_size, out_size, row["seconds"])

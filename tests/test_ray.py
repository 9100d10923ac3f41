"""upscale --ray on a real two-node Ray cluster on this machine (head + worker node, 1 CPU each).

The cluster is started once per module with ``ray start --block`` (one process group
per node, so teardown kills exactly what this module started) and stopped at the
end, whatever happens. Jobs run through the CLI in a subprocess, as a user runs
them, with the tiny ONNX model; the local ``upscale`` is the reference.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import photo

pytest.importorskip("ray.data", reason="the 'ray' extra is not installed")
pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START_TIMEOUT = 90  # seconds for both nodes to join (2 shared cores)
JOB_TIMEOUT = 300
# Ray turns on token auth when ~/.ray/auth_token exists; this loopback-only test cluster and its drivers
# agree on no auth whatever the home folder holds.
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the node's process group, SIGKILL it after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").is_dir() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def _actor_pids() -> list[int]:
    """Processes whose title is a Ray Data actor of our callable class (Ray sets the title)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapBatches(_Upscaler)" in cmd:
                found.append(int(d.name))
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a running head node plus one worker node, 1 CPU each."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("raylogs")
    common = ["--num-cpus=1", "--block", "--disable-usage-stats"]
    nodes: list[subprocess.Popen[bytes]] = []
    seen: set[int] = set()
    try:
        head = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                "--include-dashboard=false", *common]
        nodes.append(subprocess.Popen(head, stdout=open(logs / "head.log", "wb"), stderr=subprocess.STDOUT,
                                      start_new_session=True, env=ENV))
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # the GCS port answers once the head is up
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert nodes[0].poll() is None, (logs / "head.log").read_text()
                assert time.monotonic() < deadline, "the Ray head did not come up"
                time.sleep(0.5)
        worker = [str(BIN / "ray"), "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common]
        nodes.append(subprocess.Popen(worker, stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT,
                                      start_new_session=True, env=ENV))
        probe = (f"import ray; ray.init(address={address!r}, log_to_driver=False); "
                 "print(sum(n['Alive'] for n in ray.nodes()), ray.cluster_resources().get('CPU', 0))")
        while True:  # both nodes registered with one CPU each
            out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV,
                                 timeout=max(5, deadline - time.monotonic()))
            if out.stdout.split() == ["2", "2.0"]:
                break
            assert all(n.poll() is None for n in nodes), (logs / "worker.log").read_text()
            assert time.monotonic() < deadline, f"the two Ray nodes did not join: {out.stdout} {out.stderr[-2000:]}"
            time.sleep(1)
        yield address
        seen.update(_actor_pids())
    finally:
        for n in reversed(nodes):
            _stop(n)
        end = time.monotonic() + 20  # actor processes exit when their raylet is gone
        while any(_alive(p) for p in seen) and time.monotonic() < end:
            time.sleep(0.5)
        for p in seen:  # ours, by pid: never left running
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def _cli(*args: str, timeout: int = JOB_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "upscale", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=ENV)


def _results(proc: subprocess.CompletedProcess[str]) -> list[tuple[str, str, str, object, object]]:
    """(src, dst, status, in_size, out_size) of each file from ``--json``."""
    rep = json.loads(proc.stdout)
    return [(r["src"], r["dst"], r["status"], r["in_size"], r["out_size"]) for r in rep["results"]]


def _images(folder: Path, n: int, size: int) -> Path:
    from srgan.runtime.imageio import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_image(folder / f"img_{i:03d}.png", photo(size, size + 8 * (i % 3), seed=i))
    return folder


def _outputs(out: Path) -> dict[str, bytes]:
    """Visible files under ``out`` (relative path -> bytes); our hidden records are not outputs."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(out).parts)}


def _temps(out: Path) -> list[Path]:
    """Temporary files of the writers (the pipeline's) and of our tables, anywhere under ``out``."""
    from srgan.runtime.imageio import TEMP_PREFIX

    return [p for p in out.rglob(".*") if p.name.startswith(TEMP_PREFIX) or p.suffix == ".tmp"]


# ---------------------------------------------------------------- without a cluster (fast)

def test_parse_actors_and_options() -> None:
    from srgan.runtime.distributed import RayOptions, parse_actors
    from srgan.runtime.errors import UsageError

    assert parse_actors("3") == (3, 3)
    assert parse_actors("1,8") == (1, 8)
    for bad in ("0", "4,2", "a", "1,2,3", ""):
        with pytest.raises(UsageError, match="--ray-actors"):
            parse_actors(bad)
    with pytest.raises(UsageError, match="--ray-threads"):
        RayOptions(threads=0)


def test_without_ray_installed_exits_2_with_install_command(tmp_path: Path, tiny_path: Path) -> None:
    code = ("import sys; sys.modules['ray'] = None; sys.argv[0] = 'srgan'; from srgan.cli import app; "
            "app(prog_name='srgan')")
    proc = subprocess.run([sys.executable, "-c", code, "upscale", str(ROOT / "examples"), "-o", str(tmp_path / "o"),
                           "-m", str(tiny_path), "--ray", "local"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'srgan-toolkit[ray]'" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_ray_flags_need_ray_and_a_live_address(tmp_path: Path, tiny_path: Path) -> None:
    proc = _cli(str(ROOT / "examples"), "-o", str(tmp_path / "o"), "-m", str(tiny_path), "--ray-actors", "2")
    assert proc.returncode == 2 and "need --ray" in proc.stderr
    proc = _cli(str(ROOT / "examples"), "-o", str(tmp_path / "o"), "-m", str(tiny_path), "--ray", "local",
                "--threads", "2")
    assert proc.returncode == 2 and "--ray-threads" in proc.stderr  # never silently ignored
    proc = _cli(str(ROOT / "examples"), "-o", str(tmp_path / "o"), "-m", str(tiny_path), "--ray", "local", "--grid")
    assert proc.returncode == 2 and "not supported with --ray" in proc.stderr
    assert not (tmp_path / "o").exists()
    t0 = time.monotonic()
    proc = _cli(str(ROOT / "examples"), "-o", str(tmp_path / "o"), "-m", str(tiny_path),
                "--ray", f"127.0.0.1:{_free_port()}")
    assert proc.returncode == 2 and "no Ray cluster answers" in proc.stderr, proc.stderr
    assert time.monotonic() - t0 < 60  # a clear error, not Ray's minutes of retrying


# ---------------------------------------------------------------- on the two-node cluster

@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled examples (PNG gray/RGB/RGBA, JPEG), a subfolder and a corrupt PNG."""
    d = tmp_path_factory.mktemp("mixed")
    for p in (ROOT / "examples").iterdir():
        if p.suffix in (".png", ".jpg"):
            (d / p.name).write_bytes(p.read_bytes())
    _images(d / "sub", 3, 40)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    return d


def test_same_outputs_and_exit_code_as_local_then_rerun_verifies(cluster: str, mixed: Path, tmp_path: Path,
                                                                 tiny_path: Path) -> None:
    common = [str(mixed), "-r", "-m", str(tiny_path), "--device", "cpu", "--json", "-q"]
    local = _cli(*common, "-o", str(tmp_path / "local"))
    ray = _cli(*common, "-o", str(tmp_path / "ray"), "--ray", cluster, "--ray-actors", "2")
    assert local.returncode == ray.returncode == 1, ray.stderr[-3000:]  # the corrupt file fails, the rest go on
    strip = [(Path(s).name, Path(d).relative_to(tmp_path / w).as_posix(), st, i, o)
             for w, proc in (("local", local), ("ray", ray)) for s, d, st, i, o in _results(proc)]
    half = len(strip) // 2
    assert strip[:half] == strip[half:]  # same files, same statuses and sizes, same order
    failed = [r for r in json.loads(ray.stdout)["results"] if r["status"] == "failed"]
    assert [Path(r["src"]).name for r in failed] == ["broken.png"] and "broken.png" in failed[0]["reason"]
    local_files, ray_files = _outputs(tmp_path / "local"), _outputs(tmp_path / "ray")
    assert sorted(local_files) == sorted(ray_files) and len(ray_files) == 7
    assert local_files == ray_files  # byte-identical PNG/JPEG

    state = tmp_path / "ray" / ".srgan-ray"
    manifest = pq.read_table(state / "manifest.parquet").to_pylist()
    assert [m["key"] for m in manifest] == [Path(d).relative_to(tmp_path / "ray").as_posix()
                                            for _, d, *_ in _results(ray)]
    summary = json.loads((state / "summary.json").read_text())
    assert summary["counts"] == {"ok": 7, "skipped": 0, "failed": 1}
    assert 1 <= summary["nodes"] <= 2 and 1 <= summary["actors"] <= 2 and summary["duplicates"] == 0
    assert [f["key"] for f in summary["failures"]] == ["broken.png"]

    # A rerun verifies every recorded output by sha256 and skips it; a changed output is reported, not trusted.
    tampered = tmp_path / "ray" / "astronaut.png"
    tampered.write_bytes(tampered.read_bytes()[:-10] + b"0123456789")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*.png")}
    again = _cli(*common, "-o", str(tmp_path / "ray"), "--ray", cluster)
    assert again.returncode == 1
    status = {Path(s).name: st for s, _, st, *_ in _results(again)}
    assert status.pop("broken.png") == "failed" and status.pop("astronaut.png") == "failed"
    assert set(status.values()) == {"skipped"}
    reasons = {Path(r["src"]).name: r["reason"] for r in json.loads(again.stdout)["results"]}
    assert "the output changed" in reasons["astronaut.png"] and "verified" in reasons["coffee.jpg"]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing rewritten


def test_actor_killed_mid_job_every_file_exactly_once(cluster: str, tmp_path: Path, tiny_path: Path) -> None:
    n = 24
    src = _images(tmp_path / "in", n, 160)
    out = tmp_path / "out"
    job = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "upscale", str(src), "-o", str(out), "-m",
                            str(tiny_path), "--device", "cpu", "--json", "-q", "--ray", cluster, "--ray-actors", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        victim, done_at_kill = 0, 0
        while job.poll() is None and time.monotonic() < deadline:
            done_at_kill = len(_outputs(out)) if out.is_dir() else 0
            pids = _actor_pids()
            if done_at_kill >= 1 and pids:  # the actors are working: kill one mid-job
                victim = pids[0]
                os.kill(victim, signal.SIGKILL)
                break
            time.sleep(0.05)
        stdout, stderr = job.communicate(timeout=max(1, deadline - time.monotonic()))
    finally:
        if job.poll() is None:
            job.kill()
    assert victim, f"no actor was seen working before the job ended: {stderr[-3000:]}"
    assert done_at_kill < n, "the job finished before the kill; make the images larger"
    assert job.returncode == 0, stderr[-3000:]  # Ray restarted the actor and retried its batch

    rows = pq.read_table(out / ".srgan-ray" / "status.parquet").to_pylist()
    assert sorted(r["key"] for r in rows) == [f"img_{i:03d}.png" for i in range(n)]  # once each
    assert {r["status"] for r in rows} == {"ok"}
    summary = json.loads((out / ".srgan-ray" / "summary.json").read_text())
    assert summary["counts"]["ok"] == n and summary["duplicates"] == 0
    assert not _temps(out)  # no torn or temporary file left by the killed writer
    print(f"killed actor {victim} with {done_at_kill}/{n} outputs written; {summary['actors']} actors on "
          f"{summary['nodes']} nodes; {sum(bool(r['note']) for r in rows)} rows kept from the lost attempt")
    assert victim not in {r["pid"] for r in rows} or not _alive(victim)

    from srgan.runtime.api import load, upscale_files
    from srgan.runtime.distributed import sha256_file

    ref = upscale_files(src, tmp_path / "ref", load(tiny_path, device="cpu", threads=1))
    assert ref.exit_code == 0
    assert _outputs(out) == _outputs(tmp_path / "ref")  # complete and byte-identical to a local run
    assert all(r["out_sha256"] == sha256_file(out / r["key"]) for r in rows)

    # The rerun skips everything (verified) and writes nothing.
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    again = _cli(str(src), "-o", str(out), "-m", str(tiny_path), "--device", "cpu", "--json", "-q", "--ray", cluster)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {st for _, _, st, *_ in _results(again)} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.slow
def test_ray_local_50_images_byte_identical(tmp_path: Path, tiny_path: Path) -> None:
    """``--ray local`` (an in-process Ray) on 50 images and the examples: same bytes as local."""
    src = _images(tmp_path / "in", 50, 48)
    for p in (ROOT / "examples").iterdir():
        if p.suffix in (".png", ".jpg"):
            (src / p.name).write_bytes(p.read_bytes())
    common = [str(src), "-m", str(tiny_path), "--device", "cpu", "-q"]
    local = _cli(*common, "-o", str(tmp_path / "local"))
    ray = _cli(*common, "-o", str(tmp_path / "ray"), "--ray", "local")
    assert local.returncode == ray.returncode == 0, ray.stderr[-3000:]
    files = _outputs(tmp_path / "ray")
    assert len(files) == 54 and files == _outputs(tmp_path / "local")
    assert np.isfinite(json.loads((tmp_path / "ray" / ".srgan-ray" / "summary.json").read_text())["seconds"])

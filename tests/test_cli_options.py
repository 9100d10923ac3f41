"""One option vocabulary across commands: -o/--output, --tile, --threads, --json, -q, deprecated spellings,
one error-to-exit-code mapping, torch-only commands on a torch-less install, tables that do not wrap."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from conftest import ROOT, photo
from typer.testing import CliRunner

from srgan import cli
from srgan.runtime.extras import install_command
from srgan.runtime.imageio import write_image

runner = CliRunner()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    write_image(d / "a.png", photo(12, 16, seed=1))
    write_image(d / "b.png", photo(10, 10, seed=2))
    return d


@pytest.fixture
def bench_set(tmp_path: Path) -> Path:
    d = tmp_path / "Tiny"
    (d / "HR").mkdir(parents=True)
    write_image(d / "HR" / "x.png", photo(40, 48, seed=3))
    return d


def test_every_command_goes_through_the_one_error_mapping() -> None:
    group = typer.main.get_command(cli.app)
    commands = {**group.commands}  # type: ignore[attr-defined]
    bench = commands.pop("bench")
    commands |= {f"bench {k}": v for k, v in bench.commands.items()}
    assert len(commands) >= 10
    for name, cmd in commands.items():
        chain, fn = [], cmd.callback
        while fn is not None:  # typer's own wrapper, then ours, then the command function
            chain.append(fn.__code__.co_qualname)
            fn = getattr(fn, "__wrapped__", None)
        assert "_exits.<locals>.wrapper" in chain, (name, chain)
    source = (ROOT / "cli.py").read_text()
    assert "Exit(2)" not in source and source.count('"error: {e}"') == 1  # only inside _exits


def test_help_has_completion_and_the_shared_options() -> None:
    r = runner.invoke(cli.app, ["--help"])
    assert r.exit_code == 0 and "--install-completion" in r.stdout
    for command in (["upscale"], ["eval"], ["bench", "quality"], ["bench", "latency"]):
        r = runner.invoke(cli.app, [*command, "--help"])
        assert r.exit_code == 0 and "--json" in r.stdout and "--quiet" in r.stdout and "--output" in r.stdout, command
    for command in (["train"], ["eval"], ["export"], ["average"]):
        r = runner.invoke(cli.app, [*command, "--help"])
        assert "-o, --output" in r.stdout and "--out " not in r.stdout, command  # --out: hidden, deprecated


def test_upscale_json_report_on_stdout_and_quiet(images: Path, tiny_path: Path, tmp_path: Path) -> None:
    r = runner.invoke(cli.app, ["upscale", str(images), "-o", str(tmp_path / "o"), "-m", str(tiny_path),
                                "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["counts"] == {"ok": 2, "skipped": 0, "failed": 0} and report["exit_code"] == 0
    assert {Path(x["src"]).name: x["out_size"] for x in report["results"]} == {"a.png": [64, 48],
                                                                               "b.png": [40, 40]}
    assert "upscale summary" in r.stderr  # the human table went to stderr
    r = runner.invoke(cli.app, ["upscale", str(images), "-o", str(tmp_path / "q"), "-m", str(tiny_path),
                                "--device", "cpu", "-q"])
    assert r.exit_code == 0 and r.stdout == "" and (tmp_path / "q" / "a.png").is_file()


def test_summary_table_does_not_wrap_when_piped(tiny_path: Path, tmp_path: Path) -> None:
    name = "a_long_file_name_" + "x" * 90 + ".png"
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / name, photo(8, 8))
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "upscale", str(src), "-o", str(tmp_path / "o"),
                        "-m", str(tiny_path), "--device", "cpu"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": ""})
    assert r.returncode == 0, r.stderr
    assert any(str(src / name) in line for line in r.stdout.splitlines()), r.stdout


def test_eval_registry_name_json_and_deprecated_out(bench_set: Path, tiny_path: Path, tmp_path: Path) -> None:
    r = runner.invoke(cli.app, ["eval", "srgan", "--data", str(bench_set), "--json", "--device", "cpu",
                                "--grids", "0"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)["sets"]
    assert row["set"] == "Tiny" and row["images"] == 1 and row["psnr_y"] > 15
    assert "srgan_x4.onnx" in json.loads(r.stdout)["model"] and "PSNR-Y" in r.stderr
    r = runner.invoke(cli.app, ["eval", str(tiny_path), "--data", str(bench_set), "--out", str(tmp_path / "ev"),
                                "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "--out is deprecated" in r.stderr and (tmp_path / "ev" / "summary.csv").is_file()
    r = runner.invoke(cli.app, ["eval", "nonexistent-model", "--data", str(bench_set)])
    assert r.exit_code == 2 and "unknown model name" in r.stderr


def test_bench_latency_tile_threads_and_deprecated_tile_size(tiny_path: Path, tmp_path: Path) -> None:
    r = runner.invoke(cli.app, ["bench", "latency", "-m", str(tiny_path), "--tile-size", "8", "--threads", "0",
                                "--size", "16", "--runs", "1", "--warmup", "0", "--device", "cpu",
                                "-o", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    assert "--tile-size is deprecated" in r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert rows and {(row["tile"], row["threads"]) for row in rows} == {(8, os.cpu_count())}  # 0 = all cores


def test_comma_lists_still_split_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._split_commas(["fp16,int8", "int8"], "--variant") == ["fp16", "int8", "int8"]
    assert "deprecated" in capsys.readouterr().err
    assert cli._split_commas(["int8"], "--variant") == ["int8"]
    assert capsys.readouterr().err == ""


def test_torch_only_commands_name_the_extra(torchless_env: dict[str, str], tiny_path: Path, bench_set: Path,
                                            tmp_path: Path) -> None:
    fake = tmp_path / "g.pt"
    fake.write_bytes(b"x")
    cli_py = str(ROOT / "cli.py")
    for args in (["train", "--data", str(bench_set), "-o", str(tmp_path / "run")],
                 ["export", str(fake), "-o", str(tmp_path / "x.onnx")],
                 ["export-lpips", "-o", str(tmp_path / "l.onnx")],
                 ["fetch-div2k", str(tmp_path / "d")],
                 ["average", str(fake), str(fake), "-o", str(tmp_path / "avg.pt")],
                 ["eval", str(fake), "--data", str(bench_set)]):
        r = subprocess.run([sys.executable, cli_py, *args], env=torchless_env, capture_output=True, text=True,
                           cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert install_command("train") in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    r = subprocess.run([sys.executable, cli_py, "eval", str(tiny_path), "--data", str(bench_set), "--device", "cpu",
                        "-q"], env=torchless_env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "", r.stderr  # ONNX evaluation: no torch needed


@pytest.mark.parametrize("signal_name, code", [("SIGINT", 130), ("", 130), ("SIGTERM", 143)])
def test_a_signal_before_the_batch_loop_exits_like_one_during_it(signal_name: str, code: int,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A signal while the model loads or files are planned (before the batch reports it) maps to 130/143."""
    def loading() -> None:
        raise KeyboardInterrupt(signal_name)

    with pytest.raises(typer.Exit) as exc:
        cli._exits(loading)()
    assert exc.value.exit_code == code
    assert f"interrupted by {signal_name or 'SIGINT'}" in capsys.readouterr().err

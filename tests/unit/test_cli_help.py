"""Every subcommand's --help works from a plain install (no `exchange` extra),
and running the local exchange without it says which extra to install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Runs the CLI as a plain `pip install .` would: importing websockets fails.
WITHOUT_WEBSOCKETS = ("import sys; sys.modules['websockets'] = None; "
                      "from connector.cli import main; sys.exit(main(sys.argv[1:]))")


def cli(*args: str, without_websockets: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = ["-c", WITHOUT_WEBSOCKETS] if without_websockets else ["-m", "connector"]
    return subprocess.run([sys.executable, *prefix, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


@pytest.mark.parametrize("args", [
    ["--help"], ["run", "--help"], ["validate", "--help"], ["schema", "--help"],
    ["exchange", "--help"], ["--log-format", "json", "exchange", "--help"],
    ["--log-level", "DEBUG", "exchange", "-h"],
], ids=" ".join)
def test_help_works_without_the_exchange_extra(args: list[str]) -> None:
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: bybit-kafka-connector")
    assert "Traceback" not in done.stderr


def test_exchange_without_the_extra_says_what_to_install() -> None:
    done = cli("exchange", "--port", "0")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: the local exchange needs the 'exchange' extra: "
        "pip install 'bybit-kafka-connector[exchange]'"]


def test_exchange_module_help_without_the_extra() -> None:
    done = subprocess.run([sys.executable, "-c", "import sys, runpy; "
                           "sys.modules['websockets'] = None; sys.argv[1:] = ['--help']; "
                           "runpy.run_module('connector.exchange', run_name='__main__')"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_json_log_format_runs_the_exchange() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "connector", "--log-format", "json",
                             "exchange", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("local exchange at ws://127.0.0.1:"), proc.stderr
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    for entry in err.splitlines():
        json.loads(entry)  # every log line is JSON

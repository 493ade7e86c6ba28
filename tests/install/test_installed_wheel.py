"""What users install must run: the wheel, built as the Dockerfile builds it,
installed into a fresh virtualenv and run from outside the checkout.

The build repeats the Dockerfile's build stage (its COPYs into an empty
folder, its one build script), so the image and this wheel cannot drift. The
virtualenv gets the wheel with only its declared extras (``exchange``, which
the installed ``exchange`` command needs) and nothing from the source tree:
every command runs with a clean environment (no PYTHONPATH) from a temp dir,
and the test checks the modules it imports are the virtualenv's. pip may
reach PyPI for the dependencies; its cache makes that fast after the first run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerfile import ROOT, Stage, parse
from kafka import KafkaConsumer

from connector.dev.kafka_broker import KafkaBroker, free_port

pytestmark = pytest.mark.integration

SUBCOMMANDS = ("run", "validate", "exchange", "consume", "schema")
PIP_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "http_proxy", "https_proxy", "HTTP_PROXY",
           "HTTPS_PROXY", "no_proxy", "NO_PROXY")


def clean_env(venv: Path, pip: bool = False) -> dict[str, str]:
    """The virtualenv's bin first, no PYTHONPATH; pip's settings only for pip."""
    env = {"PATH": f"{venv / 'bin'}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
           "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    if pip:
        env.update({k: v for k, v in os.environ.items()
                    if (k.startswith("PIP_") and k != "PIP_NO_CACHE_DIR") or k in PIP_ENV})
    return env


def build_stage() -> Stage:
    return next(s for s in parse() if s.name == "build")


def copy_like_docker(stage: Stage, context: Path) -> None:
    """The stage's COPY instructions, from the checkout into ``context`` (its WORKDIR)."""
    for ins in stage.all("COPY"):
        *sources, dest = ins.words()
        assert not any(s.startswith("--") for s in sources), ins
        target = context / dest
        for source in sources:
            src = ROOT / source
            if src.is_dir():  # Docker copies a folder's contents into dest
                shutil.copytree(src, target, dirs_exist_ok=True)
            else:
                to = target / src.name if dest.endswith("/") or len(sources) > 1 else target
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, to)


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory outside the checkout."""
    path = tmp_path_factory.mktemp("installed")
    assert ROOT not in path.resolve().parents
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built by the Dockerfile's build stage from only what it COPYs."""
    stage = build_stage()
    context = tmp_path_factory.mktemp("build") / "src"
    context.mkdir()
    copy_like_docker(stage, context)
    [run] = stage.all("RUN")
    words = run.words()
    assert words[:2] == ["sh", "scripts/build_wheel.sh"], run
    wheels = context.parent / words[2].strip("/")
    env = {**clean_env(Path(sys.executable).parent.parent, pip=True), "PYTHON": sys.executable}
    done = subprocess.run(["sh", "scripts/build_wheel.sh", str(wheels)], cwd=context, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    [built] = wheels.glob("bybit_kafka_connector-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, outside: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel and its ``exchange`` extra, nothing else."""
    final = parse()[-1]
    assert any("pip install" in r.args and "/wheels/*.whl" in r.args for r in final.all("RUN"))
    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, cwd=outside,
                   env=clean_env(path), timeout=120)
    done = subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q",
                           f"{wheel}[exchange]"], cwd=outside, env=clean_env(path, pip=True),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return path


def installed(venv: Path, outside: Path, *args: str, timeout: float = 60,
              **kwargs: object) -> subprocess.CompletedProcess[str]:
    """``bybit-kafka-connector ARGS`` from the virtualenv, in ``outside``."""
    return subprocess.run([str(venv / "bin" / "bybit-kafka-connector"), *args], cwd=outside,
                          env=clean_env(venv), capture_output=True, text=True,
                          timeout=timeout, **kwargs)  # type: ignore[call-overload]


def test_wheel_carries_every_module_schema_and_typing_marker(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "connector").rglob("*.py")}
    schemas = {f"connector/avro/{p.name}" for p in (ROOT / "avro").glob("*.avsc")}
    assert modules and schemas
    assert sorted(modules - names) == []
    assert sorted(schemas - names) == []
    assert {"connector/config/config.schema.json", "connector/py.typed"} <= names
    # Nothing outside the package: no top-level avro/ to collide with Apache Avro's.
    name, version = wheel.name.split("-")[:2]
    assert {n.split("/")[0] for n in names} == {"connector", f"{name}-{version}.dist-info"}


def test_imports_come_from_the_virtualenv(venv: Path, outside: Path) -> None:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import connector, connector.bybit.v5.protocol, connector.records as r; "
         "print(connector.__file__); print(r.schema_dir())"],
        cwd=outside, env=clean_env(venv), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    module, schemas = (Path(line) for line in done.stdout.splitlines())
    assert venv in module.parents and venv in schemas.parents
    assert sorted(p.name for p in schemas.glob("*.avsc")) == sorted(
        p.name for p in (ROOT / "avro").glob("*.avsc"))


def test_schemas_are_the_packages_own_beside_apache_avro(venv: Path, outside: Path) -> None:
    """Apache Avro's Python package installs ``<site-packages>/avro``; ours must not be it."""
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    done = subprocess.run([*pip, "install", "-q", "avro"], cwd=outside,
                          env=clean_env(venv, pip=True), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c",
             "import connector.records as r; print(r.schema_dir()); r.load_schema('v5_wallet')"],
            cwd=outside, env=clean_env(venv), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert Path(done.stdout.strip()).parent.name == "connector"
    finally:
        subprocess.run([*pip, "uninstall", "-q", "-y", "avro"], cwd=outside,
                       env=clean_env(venv, pip=True), capture_output=True, timeout=120)


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_every_subcommand_has_help(venv: Path, outside: Path, command: str | None) -> None:
    done = installed(venv, outside, *([command] if command else []), "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: bybit-kafka-connector"), done.stdout
    assert "Traceback" not in done.stderr


def test_schema_prints_the_config_schema(venv: Path, outside: Path) -> None:
    done = installed(venv, outside, "schema")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["type"] == "object"


def test_validate_the_shipped_config(venv: Path, outside: Path) -> None:
    shutil.copy2(ROOT / "config.yaml", outside / "config.yaml")
    done = installed(venv, outside, "validate", "--config", "config.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("config OK"), done.stdout
    assert "Traceback" not in done.stderr


def test_a_bad_config_exits_2_in_one_line(venv: Path, outside: Path) -> None:
    (outside / "bad.yaml").write_text("kafka: {bootstrap_servers: []}\nsubscriptions: []\n")
    done = installed(venv, outside, "validate", "--config", "bad.yaml")
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: bad.yaml: ")


@pytest.fixture
def exchange(venv: Path, outside: Path) -> Iterator[str]:
    """The installed local exchange on a free port; its ws:// URL."""
    log = open(outside / "exchange.log", "w")  # noqa: SIM115 (owned by the process)
    proc = subprocess.Popen([str(venv / "bin" / "bybit-kafka-connector"), "exchange", "--port",
                             "0", "--rate", "20", "--private-interval", "0.1"],
                            cwd=outside, env=clean_env(venv), stdout=subprocess.PIPE,
                            stderr=log, text=True)
    log.close()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("local exchange at ws://"), line + (
            outside / "exchange.log").read_text()
        yield line.split()[3]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_run_streams_v5_into_kafka_and_consume_reads_it_back(
        venv: Path, outside: Path, exchange: str, kafka_broker: KafkaBroker) -> None:
    prefix = f"installed.{uuid.uuid4().hex[:8]}"
    metrics_port = free_port()
    config = outside / "run.yaml"
    config.write_text(f"""
bybit:
  urls:
    v5: {exchange}/v5/public/spot
    v5-private: {exchange}/v5/private
  credentials: {{api_key: demo-key, api_secret: demo-secret}}
kafka:
  bootstrap_servers: ["{kafka_broker.bootstrap_servers}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
metrics: {{host: 127.0.0.1, port: {metrics_port}}}
subscriptions:
  - {{stream: v5, topic: publicTrade, symbols: [BTCUSDT, ETHUSDT]}}
  - {{stream: v5, topic: orderbook, depth: 50, symbols: [BTCUSDT]}}
  - {{stream: v5, topic: tickers, symbols: [BTCUSDT]}}
  - {{stream: v5-private, topic: order.spot}}
  - {{stream: v5-private, topic: execution.spot}}
  - {{stream: v5-private, topic: wallet}}
""")
    plan = json.loads(installed(venv, outside, "validate", "--config", str(config),
                                "--json").stdout)
    topics = sorted({s["kafka_topic"] for s in plan["subscriptions"]})
    assert len(topics) == 6
    log = open(outside / "run.log", "w")  # noqa: SIM115 (owned by the process)
    proc = subprocess.Popen([str(venv / "bin" / "bybit-kafka-connector"), "run", "--config",
                             str(config)], cwd=outside, env=clean_env(venv),
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        wait_for(lambda: ready(metrics_port) or proc.poll() is not None, 60, "/readyz 200")
        assert proc.poll() is None, (outside / "run.log").read_text()
        wait_for(lambda: set(topics) <= consumer.topics(), 60, f"topics {topics}")
        for topic in topics:
            done = installed(venv, outside, "consume", "--topic", topic, "--bootstrap-servers",
                             kafka_broker.bootstrap_servers, "--from-beginning",
                             "--max-messages", "3", "--timeout", "30")
            assert done.returncode == 0, done.stderr
            lines = [json.loads(line) for line in done.stdout.splitlines()]
            assert len(lines) == 3, done.stdout
            assert all(line["topic"] == topic and isinstance(line["value"], dict)
                       for line in lines), lines
        assert proc.poll() is None, (outside / "run.log").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, (outside / "run.log").read_text()
    finally:
        consumer.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (outside / "run.log").read_text()
    assert "Traceback" not in output and "demo-secret" not in output, output

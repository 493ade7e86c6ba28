"""Fetch Java artifacts from Maven Central with Maven, into a git-ignored cache.

This machine class reaches Maven Central and no other download site, so the
Kafka broker and the schema registry come from there as jars.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def rss_bytes(pid: int | None) -> int:
    """Resident memory of a process (0 if unknown), for the start-up figures."""
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cache_dir() -> Path:
    """``$BYBIT_CONNECTOR_CACHE``, else ``<checkout>/.cache``, else ``~/.cache/...``."""
    env = os.environ.get("BYBIT_CONNECTOR_CACHE")
    if env:
        path = Path(env)
    elif (REPO_ROOT / "pyproject.toml").exists():
        path = REPO_ROOT / ".cache"
    else:
        path = Path.home() / ".cache" / "bybit-kafka-connector"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (`mvn`) is not on PATH; it is needed to fetch Kafka")
    return mvn


def fetch_classpath(name: str, dependencies: list[tuple[str, str, str]]) -> Path:
    """Copy ``dependencies`` (group, artifact, version) and their runtime
    dependencies into ``<cache>/<name>/lib`` once; return that folder."""
    target = cache_dir() / name
    lib = target / "lib"
    marker = target / ".complete"
    with _locked(cache_dir() / f".{name}.lock"):
        if marker.exists():
            return lib
        deps = "\n".join(
            f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
            f"<version>{v}</version></dependency>" for g, a, v in dependencies)
        pom = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.fetch</groupId><artifactId>{name}</artifactId><version>1</version>
  <dependencies>{deps}</dependencies>
</project>"""
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "pom.xml").write_text(pom)
            if lib.exists():
                shutil.rmtree(lib)
            log.info("fetching %s from Maven Central...", name)
            result = subprocess.run(
                [_mvn(), "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
                 f"-DoutputDirectory={lib}"], cwd=tmp, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"Maven could not fetch {name}:\n{result.stdout[-3000:]}"
                                   f"{result.stderr[-2000:]}")
        marker.write_text("ok\n")
        return lib


def fetch_artifact(name: str, coordinate: str) -> Path:
    """Download one artifact (``group:artifact:version:type[:classifier]``) into
    ``<cache>/<name>/``; return the file's path."""
    target = cache_dir() / name
    marker = target / ".complete"
    with _locked(cache_dir() / f".{name}.lock"):
        if marker.exists():
            return Path(marker.read_text().strip())
        target.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [_mvn(), "-q", "-B", "dependency:copy", f"-Dartifact={coordinate}",
             f"-DoutputDirectory={target}"], cwd=target, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"Maven could not fetch {coordinate}:\n{result.stdout[-3000:]}"
                               f"{result.stderr[-2000:]}")
        files = [p for p in target.iterdir() if p.is_file() and not p.name.startswith(".")]
        if len(files) != 1:
            raise RuntimeError(f"expected one file for {coordinate}, got {files}")
        marker.write_text(str(files[0]))
        return files[0]

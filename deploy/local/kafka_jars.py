"""The Apache Kafka broker's jars, resolved from Maven Central into a cache outside the repo.

`pom.xml` beside this file pins the broker's version; `tools-pom.xml` pins Kafka's command-line
tools (JmxTool), resolved into a folder of their own so that the broker's stays unchanged.
`resolved_jars` does the same for any other pom (the tests' Avro client). Maven copies the
runtime jars into a scratch folder which is renamed into place only when complete, and a
marker file records which pom produced it, so an interrupted copy or a changed pin is
resolved again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from deploy.local import binaries
from deploy.local.errors import StackError

ENV_CACHE_DIR = "CQRS_CACHE_DIR"
ENV_MAVEN_REPO = "CQRS_MAVEN_REPO"
POM = Path(__file__).with_name("pom.xml")
TOOLS_POM = Path(__file__).with_name("tools-pom.xml")
MARKER = ".complete"
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "kafka-cqrs")


def kafka_version(pom: Path = POM) -> str:
    return pinned_version(pom, "kafka.version")


def pinned_version(pom: Path, prop: str) -> str:
    """The value of the pom's `<properties><prop>`."""
    node = ET.parse(pom).getroot().find(f"m:properties/m:{prop}", _POM_NS)
    if node is None or not (node.text or "").strip():
        raise StackError(f"{pom} does not pin <{prop}>")
    return node.text.strip()


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def jars_dir(pom: Path = POM) -> Path:
    """The folder with the broker's jars, resolving them with Maven on first use."""
    return resolved_jars(pom, f"kafka-{kafka_version(pom)}", "kafka_2.13-*.jar")


def tools_jars_dir(pom: Path = TOOLS_POM) -> Path:
    """The folder with Kafka's tools (`org.apache.kafka.tools.*`) and everything they need on
    the classpath, resolving them with Maven on first use."""
    return resolved_jars(pom, f"kafka-tools-{kafka_version(pom)}", "kafka-tools-[0-9]*.jar")


def resolved_jars(pom: Path, name: str, expect: str) -> Path:
    """The folder `name` of the cache with the runtime jars of `pom`'s dependencies,
    resolving them with Maven on first use; `expect` is a glob that must match a jar there."""
    target = cache_dir() / name
    digest = _pom_digest(pom)
    if _is_complete(target, digest):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two `up`s (or `up` and a test session) on a cold machine must not race one download.
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_complete(target, digest):
            _resolve(pom, target, digest, expect)
    return target


def _is_complete(target: Path, digest: str) -> bool:
    marker = target / MARKER
    return marker.is_file() and marker.read_text().strip() == digest


def _resolve(pom: Path, target: Path, digest: str, expect: str) -> None:
    mvn = binaries.mvn()
    scratch = Path(tempfile.mkdtemp(prefix=f"{target.name}.partial-", dir=target.parent))
    cmd = [
        str(mvn),
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={scratch}",
        "-DincludeScope=runtime",
    ]
    if os.environ.get(ENV_MAVEN_REPO):
        cmd.append(f"-Dmaven.repo.local={os.environ[ENV_MAVEN_REPO]}")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            out = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise StackError(
                f"Maven could not resolve the jars of {pom} (exit {done.returncode}):\n" + out
            )
        if not any(scratch.glob(expect)):
            raise StackError(f"Maven finished but no {expect} appeared in {scratch}")
        (scratch / MARKER).write_text(digest + "\n")
        if target.exists():
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)

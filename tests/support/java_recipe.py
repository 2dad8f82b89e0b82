"""The Java client built from docs/wire-format.md's recipe (java/RecipeDecoder.java beside this
file), compiled with the JDK's javac against Avro's Java library, which Maven resolves from
`java/pom.xml` into the cache that holds the Kafka jars."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import shop

import bank
import schemas
from deploy.local import kafka_jars

JAVA_DIR = Path(__file__).with_name("java")
POM = JAVA_DIR / "pom.xml"
SOURCE = JAVA_DIR / "RecipeDecoder.java"
# Where the doc says the schema files are: each context's package, and the runtime's own.
SCHEMA_ROOTS = (
    Path(bank.__file__).parent,
    Path(shop.__file__).parent,
    Path(schemas.__file__).parent / "cqrs",
)


def missing_jdk() -> str | None:
    """Why the client cannot be built here, or None when it can."""
    for program in ("javac", "java"):
        if shutil.which(program) is None:
            return f"{program} not on PATH (Debian: apt-get install openjdk-17-jdk-headless)"
    return None


class RecipeDecoder:
    """Compiles the client into `build_dir` and runs it on values."""

    def __init__(self, build_dir: Path) -> None:
        version = kafka_jars.pinned_version(POM, "avro.version")
        jars = kafka_jars.resolved_jars(POM, f"avro-{version}", "avro-[0-9]*.jar")
        self.classpath = f"{build_dir}:{jars}/*"
        javac = ["javac", "-d", str(build_dir), "-cp", self.classpath, str(SOURCE)]
        done = subprocess.run(javac, capture_output=True, text=True)
        assert done.returncode == 0, f"javac failed:\n{done.stderr[-3000:]}"

    def decode(self, values: list[bytes]) -> list[dict[str, Any]]:
        """One answer per value, in order: {"type", "record"} (and "state" for a snapshot),
        records read into the latest version of their schema, or {"error"}."""
        done = subprocess.run(
            ["java", "-cp", self.classpath, "RecipeDecoder", *map(str, SCHEMA_ROOTS)],
            input="".join(v.hex() + "\n" for v in values),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        answers = [json.loads(line) for line in done.stdout.splitlines()]
        assert len(answers) == len(values), done.stdout[-3000:]
        return answers

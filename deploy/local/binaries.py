"""Find the programs the local stack runs, naming the Debian package when one is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from deploy.local.errors import StackError

ENV_JAVA = "CQRS_JAVA"
ENV_MVN = "CQRS_MVN"
ENV_PG_BIN = "CQRS_PG_BIN"
DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")

JAVA_PACKAGE = "openjdk-17-jre-headless"
MAVEN_PACKAGE = "maven"
POSTGRES_PACKAGE = "postgresql-15"


def require_binary(
    name: str, package: str, *, override: str | None = None, env_var: str | None = None
) -> Path:
    """The path of `name`: `override` when given, else the first one on PATH.

    Raises StackError naming the Debian package that installs it.
    """
    if override:
        path = Path(override)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        where = f"{env_var}={override}" if env_var else override
        raise StackError(
            f"{name} not found at {where}: install the Debian package {package} "
            f"(apt-get install {package}) or fix {env_var or 'the path'}"
        )
    found = shutil.which(name)
    if found is None:
        hint = f" or set {env_var}" if env_var else ""
        raise StackError(
            f"{name} not found on PATH: install the Debian package {package} "
            f"(apt-get install {package}){hint}"
        )
    return Path(found)


def java() -> Path:
    override = os.environ.get(ENV_JAVA)
    if not override and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        if candidate.is_file():
            return candidate
    return require_binary("java", JAVA_PACKAGE, override=override, env_var=ENV_JAVA)


def mvn() -> Path:
    return require_binary("mvn", MAVEN_PACKAGE, override=os.environ.get(ENV_MVN), env_var=ENV_MVN)


def postgres_bin(program: str) -> Path:
    """A PostgreSQL 15 server program (initdb, pg_ctl, postgres) from Debian's layout."""
    path = Path(os.environ.get(ENV_PG_BIN) or DEFAULT_PG_BIN) / program
    if path.is_file() and os.access(path, os.X_OK):
        return path
    raise StackError(
        f"PostgreSQL 15 program {path} not found: install the Debian package {POSTGRES_PACKAGE} "
        f"(apt-get install {POSTGRES_PACKAGE}) or set {ENV_PG_BIN} to its bin folder"
    )

"""The import graph flows one way: `schemas` imports nothing of ours, the runtime
(processors, producers, sinks, schemas) imports no deployment, benchmark or test code, and
the CLI imports no benchmark or test code. Read from the sources' ASTs, lazy imports inside
functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = {"bench", "cqrsctl", "deploy", "processors", "producers", "schemas", "sinks", "tests"}
RUNTIME = ("processors", "producers", "sinks", "schemas")
# package -> top-level packages of ours it must not import
FORBIDDEN = {
    **{package: {"bench", "cqrsctl", "deploy", "tests"} for package in RUNTIME},
    "schemas": OURS - {"schemas"},
    "cqrsctl": {"bench", "tests"},
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name `path` imports (`import a.b`, `from a.b import c`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def sources(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "tests" not in p.parts[1:])


def violations(package: str, forbidden: set[str]) -> list[str]:
    bad = []
    for path in sources(package):
        for module in sorted(imported_modules(path)):
            if module.split(".", 1)[0] in forbidden:
                bad.append(f"{path.relative_to(REPO)} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_the_package_imports_nothing_it_must_not(package: str) -> None:
    assert sources(package), f"no sources found under {package}/"
    assert violations(package, FORBIDDEN[package]) == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from deploy.local import stack\n    import bench.run\n")
    assert imported_modules(module) == {"deploy.local", "bench.run"}


@pytest.mark.parametrize("module", ["command_client", "command_results", "results_listener"])
def test_the_command_client_needs_no_database(module: str) -> None:
    """Read your writes is given to the client (sinks.checkpoints), not imported by it."""
    imported = imported_modules(REPO / "producers" / f"{module}.py")
    assert not {m for m in imported if m.split(".", 1)[0] in {"psycopg", "psycopg_pool", "sinks"}}

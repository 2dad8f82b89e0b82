"""A writable copy of the installed schemas, laid out as one folder per context."""

from __future__ import annotations

import shutil
from pathlib import Path

from schemas.catalog import default_roots


def copy_schemas(destination: Path) -> Path:
    """Copy the runtime's and every installed context's `.avsc` files to
    `destination/<context>/...`, a tree `Catalog.load(destination)` reads."""
    for root in default_roots():
        shutil.copytree(
            root.folder,
            destination / root.context,
            ignore=shutil.ignore_patterns("*.py", "__pycache__"),
        )
    return destination

"""Upcasters: functions that turn a record of version N into version N+1 of the same schema.

Avro schema resolution handles added fields with defaults, removed fields, promotions and
renames through aliases. It cannot express a change of meaning, such as splitting one field
into two. For such a step, register an upcaster; the codec then decodes an old message with
its own writer schema and applies the upcaster (after resolving, by Avro's rules, to the
version the upcaster starts from). Such a step usually breaks FULL compatibility, so the new
schema file declares `"compatibility": "NONE"` (or a weaker level) to say so on purpose.

    from schemas.upcasters import upcaster

    @upcaster("bank.AccountOpened", from_version=1)
    def split_owner(record):
        first, _, last = record.pop("owner").partition(" ")
        return {**record, "first_name": first, "last_name": last}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Record = dict[str, Any]
Upcaster = Callable[[Record], Record]


class UpcasterRegistry:
    """Upcasters keyed by (schema full name, version they read)."""

    def __init__(self) -> None:
        self._functions: dict[tuple[str, int], Upcaster] = {}
        # Bumped on every registration, so codecs know their cached decode plans are stale.
        self.generation = 0

    def register(self, name: str, from_version: int, function: Upcaster) -> Upcaster:
        if from_version < 1:
            raise ValueError(f"from_version must be >= 1, got {from_version}")
        key = (name, from_version)
        if key in self._functions:
            raise ValueError(f"an upcaster from {name} v{from_version} is already registered")
        self._functions[key] = function
        self.generation += 1
        return function

    def upcaster(self, name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator form of `register`."""

        def decorate(function: Upcaster) -> Upcaster:
            return self.register(name, from_version, function)

        return decorate

    def get(self, name: str, from_version: int) -> Upcaster | None:
        return self._functions.get((name, from_version))

    def steps(self, name: str, from_version: int, to_version: int) -> list[int]:
        """The versions in [from_version, to_version) that have an upcaster, ascending."""
        return [v for v in range(from_version, to_version) if (name, v) in self._functions]

    def __len__(self) -> int:
        return len(self._functions)


_DEFAULT = UpcasterRegistry()


def default_upcasters() -> UpcasterRegistry:
    """The process-wide registry the default codec uses."""
    return _DEFAULT


def upcaster(name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function in the default registry: `@upcaster("bank.X", from_version=1)`."""
    return _DEFAULT.upcaster(name, from_version)

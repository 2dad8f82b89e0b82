"""What the generated Avro writer and reader (schemas/avro_writer.py, schemas/avro_reader.py)
share: the walk over a parsed schema that names one generated function per type, the set of
schema constructs they handle, and the compiling of the generated module.

A `CodeGenerator` subclass says how to write or read each kind of type (`record`, `enum`,
`array`, `map`, `fixed`, `union` of null and one type) and names the helper functions for
primitive and logical types; `generate` returns the module's source, or None when the schema
uses a construct neither handles (unions other than null plus one type, logical types other
than timestamp-millis on long and date on int): the codec then uses fastavro.
"""

from __future__ import annotations

from typing import Any

PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
# The helper function of each primitive type, in both modules: `_long`, `_string`, ...
PRIMITIVE_HELPERS = {kind: f"_{kind}" for kind in PRIMITIVES}
LOGICAL_HELPERS = {("long", "timestamp-millis"): "_timestamp_millis", ("int", "date"): "_date"}


class Unsupported(Exception):
    """A schema the generators do not handle (the writer also raises it for a value)."""


class CodeGenerator:
    """Names a generated function per type of a schema, generating it on first use."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.functions: dict[str, list[str]] = {}  # function name -> its lines
        self.names: dict[str, str] = {}  # record name -> function name
        self.constants: dict[str, Any] = {}
        self.count = 0

    def fresh(self, kind: str) -> str:
        self.count += 1
        return f"_{kind}{self.count}"

    def constant(self, value: Any) -> str:
        name = self.fresh("c")
        self.constants[name] = value
        return name

    def function_for(self, schema: Any) -> str:
        """The name of the function that writes or reads `schema`."""
        if isinstance(schema, str):
            if schema in PRIMITIVE_HELPERS:
                return PRIMITIVE_HELPERS[schema]
            if schema not in self.named:
                raise Unsupported(f"unknown type {schema}")
            return self.function_for(self.named[schema])
        if isinstance(schema, list):
            null_index, other = self.nullable(schema)
            return self.union(null_index, self.function_for(other))
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if logical is not None:
            found = LOGICAL_HELPERS.get((kind, logical))
            if found is None:
                raise Unsupported(f"logical type {logical} on {kind}")
            return found
        if kind in PRIMITIVE_HELPERS:
            return PRIMITIVE_HELPERS[kind]
        if kind == "record":
            full = schema["name"]
            if full not in self.names:
                self.names[full] = self.fresh("record")  # first: a recursive type finds it
                self.record(self.names[full], schema)
            return self.names[full]
        if kind == "enum":
            return self.enum(schema)
        if kind == "array":
            return self.array(self.function_for(schema["items"]))
        if kind == "map":
            return self.map(self.function_for(schema["values"]))
        if kind == "fixed":
            return self.fixed(int(schema["size"]))
        raise Unsupported(f"type {kind}")

    @staticmethod
    def nullable(branches: list[Any]) -> tuple[int, Any]:
        """(the index of null, the other type) of a union of null and one type."""
        if len(branches) != 2 or "null" not in branches:
            raise Unsupported("a union other than null and one type")
        null_index = branches.index("null")
        other = branches[1 - null_index]
        if other == "null" or isinstance(other, list):
            raise Unsupported("a union other than null and one type")
        return null_index, other

    # -- what a subclass generates -------------------------------------------------------------

    def union(self, null_index: int, other: str) -> str:
        raise NotImplementedError

    def record(self, name: str, schema: dict[str, Any]) -> None:
        """Define function `name` (set `self.functions[name]` before walking the fields)."""
        raise NotImplementedError

    def enum(self, schema: dict[str, Any]) -> str:
        raise NotImplementedError

    def array(self, items: str) -> str:
        raise NotImplementedError

    def map(self, values: str) -> str:
        raise NotImplementedError

    def fixed(self, size: int) -> str:
        raise NotImplementedError


def generate(generator: CodeGenerator, parsed: Any, tail: list[str]) -> tuple[str, str] | None:
    """(the module's source: every function, then `tail` formatted with `top`, the schema's
    function; the name of the top function), or None if the schema is unsupported."""
    try:
        top = generator.function_for(parsed)
    except Unsupported:
        return None
    lines: list[str] = []
    for function in generator.functions.values():
        lines.extend(function)
        lines.append("")
    lines += [line.format(top=top) for line in tail]
    return "\n".join(lines) + "\n", top


def compile_module(source: str, label: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run the generated `source` in `namespace` (the helpers and constants it names)."""
    exec(compile(source, label, "exec"), namespace)
    return namespace

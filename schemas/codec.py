"""Avro single-object encoding: `C3 01`, the writer schema's 8-byte little-endian CRC-64-AVRO
fingerprint, then the Avro binary body (spec: "Single-object encoding").

Decoding finds the writer schema by fingerprint in the catalog and resolves the body into the
reader schema the caller asks for. Every failure is a `CodecError` subclass whose message
names what was wrong, so a consumer can send any undecodable message to its DLQ with a reason
and carry on. The hot paths keep per-call work small: schemas are parsed once by the catalog,
each (writer fingerprint, reader) pair is planned once and cached, and records are written by
a writer generated once per schema (schemas/avro_writer.py; fastavro for what it leaves),
and read without resolution by a generated reader (schemas/avro_reader.py; likewise).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from io import BytesIO
from typing import Any, NamedTuple

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError as _FastavroResolutionError

from schemas.avro_reader import compile_reader
from schemas.avro_writer import compile_writer
from schemas.catalog import Catalog, SchemaEntry, UnknownSchema, default_catalog
from schemas.compatibility import resolution_problems
from schemas.upcasters import UpcasterRegistry, default_upcasters
from schemas.validation import ValidationError

__all__ = [
    "HEADER_SIZE",
    "LATEST",
    "MAGIC",
    "BadMagic",
    "Codec",
    "CodecError",
    "Decoded",
    "EncodeError",
    "MalformedBody",
    "SchemaResolutionError",
    "TruncatedBody",
    "UnknownFingerprint",
    "UpcastError",
    "default_codec",
]

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8


class CodecError(Exception):
    """Base of every error the codec raises for bad bytes or an impossible read."""


class BadMagic(CodecError):
    """The message does not start with C3 01: not single-object encoded Avro."""


class TruncatedBody(CodecError):
    """The message ends before its header or body is complete (includes empty messages)."""


class UnknownFingerprint(CodecError):
    """No schema in the catalog has the message's writer fingerprint."""

    def __init__(self, message: str, fingerprint: bytes) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint


class MalformedBody(CodecError):
    """The body is not valid Avro for its writer schema (bad UTF-8, a union or enum index out
    of range, trailing bytes, ...)."""


class SchemaResolutionError(CodecError):
    """The writer's data cannot be read with the requested reader schema."""


class UpcastError(CodecError):
    """A registered upcaster failed or returned a record that does not fit its target."""


class EncodeError(CodecError, ValueError):
    """The record does not fit the schema; `validation` names the field when it can."""

    def __init__(self, message: str, validation: ValidationError | None = None) -> None:
        super().__init__(message)
        self.validation = validation


class _Latest:
    def __repr__(self) -> str:
        return "LATEST"


LATEST: Any = _Latest()
"""Reader choice: the latest version of the writer's own schema name."""


class Decoded(NamedTuple):
    schema: SchemaEntry  # the schema the record now conforms to (the reader's)
    writer: SchemaEntry
    record: dict[str, Any]


class _Upcast(NamedTuple):
    function: Any
    source: SchemaEntry  # the version the function reads
    target: SchemaEntry  # the version it returns


class _Plan:
    """How to read one writer fingerprint into one reader choice, worked out once."""

    __slots__ = ("fast", "first_reader", "reader", "reader_parsed", "upcasts", "writer")

    def __init__(
        self,
        writer: SchemaEntry,
        first_reader: SchemaEntry,
        reader: SchemaEntry,
        upcasts: tuple[_Upcast, ...],
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.first_reader = first_reader
        # fastavro skips resolution entirely when no reader schema is given.
        same = first_reader.fingerprint == writer.fingerprint
        self.reader_parsed = None if same else first_reader.parsed
        self.upcasts = upcasts
        # The writer's generated reader, when no resolution is needed and there is one.
        self.fast: Any = None


class Codec:
    """Encode records to, and decode them from, single-object encoded Avro.

    `reader` arguments: None reads with the writer's own schema; a full name reads into the
    latest version of that name; a `SchemaEntry` reads into exactly that version; `LATEST`
    reads into the latest version of whatever the writer's name is.
    """

    def __init__(
        self, catalog: Catalog | None = None, upcasters: UpcasterRegistry | None = None
    ) -> None:
        self.catalog = catalog if catalog is not None else default_catalog()
        self.upcasters = upcasters if upcasters is not None else default_upcasters()
        self._by_fingerprint = self.catalog.fingerprints
        self._latest = {name: self.catalog.latest(name) for name in self.catalog.names()}
        self._plans: dict[tuple[bytes, Any], _Plan] = {}
        self._generation = self.upcasters.generation
        # Per schema entry (by identity; kept alive here): its generated writer, or None.
        self._writers: dict[int, tuple[SchemaEntry, Any]] = {}
        self._readers: dict[int, tuple[SchemaEntry, Any]] = {}

    # -- encoding -------------------------------------------------------------------------

    def encode(self, schema: str | SchemaEntry, record: Mapping[str, Any]) -> bytes:
        """Encode `record` with `schema` (a full name means its latest version).

        The schema's generated writer writes it, or when it leaves the record (or the
        schema) to fastavro, fastavro, without a separate validation pass, for speed; when
        that fails, the record is validated to name the field at fault."""
        entry = self._latest.get(schema)  # type: ignore[arg-type]
        if entry is None:
            entry = schema if isinstance(schema, SchemaEntry) else self.catalog.latest(schema)
        found = self._writers.get(id(entry))
        if found is None:
            prefix = MAGIC + entry.fingerprint_bytes
            writer = self._writer_for_parsed(entry.parsed, prefix)
            found = self._writers[id(entry)] = (entry, writer)
        if found[1] is not None:
            try:
                return found[1](record)  # type: ignore[no-any-return]
            except Exception:  # a value it does not write: fastavro writes it or says why
                pass
        buffer = BytesIO()
        buffer.write(MAGIC)
        buffer.write(entry.fingerprint_bytes)
        try:
            schemaless_writer(buffer, entry.parsed, record)
        except Exception as exc:  # fastavro raises TypeError, ValueError, struct.error, ...
            raise _encode_error(entry, record, exc) from exc
        return buffer.getvalue()

    def _writer_for_parsed(self, parsed: Any, prefix: bytes) -> Any:
        """The generated writer of a parsed schema, None where fastavro writes it all."""
        return compile_writer(parsed, prefix)

    # -- decoding -------------------------------------------------------------------------

    def decode(self, data: bytes, reader: str | SchemaEntry | None = None) -> dict[str, Any]:
        """The record in `data`, resolved into `reader` (see the class docstring)."""
        return self._decode(data, reader)[1]

    def decode_message(self, data: bytes, reader: str | SchemaEntry | None = None) -> Decoded:
        """Like `decode`, also returning the writer's and the reader's schema entries."""
        plan, record = self._decode(data, reader)
        return Decoded(plan.reader, plan.writer, record)

    def _decode(self, data: bytes, reader: Any) -> tuple[_Plan, dict[str, Any]]:
        if type(data) is not bytes:
            data = _as_bytes(data)
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            _raise_bad_header(data)
        if self._generation != self.upcasters.generation:
            self._plans.clear()
            self._generation = self.upcasters.generation
        fingerprint = data[2:HEADER_SIZE]
        plan = self._plans.get((fingerprint, reader))
        if plan is None:
            plan = self._plan(fingerprint, reader)
        fast = plan.fast
        if fast is None:
            record = _read(data, plan.writer, plan.first_reader, plan.reader_parsed)
        else:
            try:
                record, end = fast(data, HEADER_SIZE)
                if end != len(data):
                    raise ValueError("trailing bytes")
            except Exception:  # a body it cannot read: fastavro reads it or says why not
                record = _read(data, plan.writer, plan.first_reader, plan.reader_parsed)
        if plan.upcasts:
            record = self._upcast(record, plan)
        return plan, record

    def writer_schema(self, data: bytes) -> SchemaEntry:
        """The writer schema a message names, from its header alone (the body is not read)."""
        data = _as_bytes(data)
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            _raise_bad_header(data)
        return self._writer(data[2:HEADER_SIZE])

    # -- planning -------------------------------------------------------------------------

    def _writer(self, fingerprint: bytes) -> SchemaEntry:
        writer = self._by_fingerprint.get(fingerprint)
        if writer is None:
            raise UnknownFingerprint(
                f"unknown writer schema fingerprint {fingerprint.hex()} (wire order): none of "
                f"the {len(self.catalog)} schemas in the catalog has it; was the message "
                "written with a schema version not deployed here?",
                fingerprint,
            )
        return writer

    def _plan(self, fingerprint: bytes, reader: Any) -> _Plan:
        writer = self._writer(fingerprint)
        target = self._reader_entry(writer, reader)
        first_reader = target
        upcasts: list[_Upcast] = []
        if target.name == writer.name and target.version > writer.version:
            steps = self.upcasters.steps(writer.name, writer.version, target.version)
            if steps:
                # Resolve by Avro's rules up to the first upcaster, then hand over.
                first_reader = self.catalog.get(writer.name, steps[0])
                for step in steps:
                    upcasts.append(
                        _Upcast(
                            self.upcasters.get(writer.name, step),
                            self.catalog.get(writer.name, step),
                            self.catalog.get(writer.name, step + 1),
                        )
                    )
        plan = _Plan(writer, first_reader, target, tuple(upcasts))
        if plan.reader_parsed is None:
            found = self._readers.get(id(writer))
            if found is None:
                found = self._readers[id(writer)] = (writer, compile_reader(writer.parsed))
            plan.fast = found[1]
        self._plans[(fingerprint, reader)] = plan
        return plan

    def _reader_entry(self, writer: SchemaEntry, reader: Any) -> SchemaEntry:
        if reader is None:
            return writer
        if reader is LATEST:
            return self.catalog.latest(writer.name)
        if isinstance(reader, SchemaEntry):
            return reader
        try:
            return self.catalog.latest(reader)
        except UnknownSchema as exc:
            raise SchemaResolutionError(
                f"cannot read {writer.label}: reader schema: {exc}"
            ) from None

    def _upcast(self, record: dict[str, Any], plan: _Plan) -> dict[str, Any]:
        for index, step in enumerate(plan.upcasts):
            try:
                record = step.function(record)
                step.target.validate(record)
            except Exception as exc:  # a user function: anything may go wrong
                raise UpcastError(
                    f"upcaster {step.source.label} -> v{step.target.version} failed on a "
                    f"message written as {plan.writer.label}: {type(exc).__name__}: {exc}"
                ) from exc
            following = plan.upcasts[index + 1].source if index + 1 < len(plan.upcasts) else None
            resolve_to = following or plan.reader
            if resolve_to is not step.target:
                # Avro resolution between upcasters: round-trip through the binary form.
                body = BytesIO()
                schemaless_writer(body, step.target.parsed, record)
                record = _read(
                    MAGIC + step.target.fingerprint_bytes + body.getvalue(),
                    step.target,
                    resolve_to,
                    resolve_to.parsed,
                )
        return record


@functools.cache
def default_codec() -> Codec:
    """A codec over the default catalog and the default upcaster registry."""
    return Codec()


def _as_bytes(data: Any) -> bytes:
    if data is None:
        raise TruncatedBody("no message value (None; a tombstone?)")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"expected bytes, got {type(data).__name__}")


def _raise_bad_header(data: bytes) -> None:
    seen = data[:2].hex(" ") or "nothing"
    if not MAGIC.startswith(data[:2]):
        raise BadMagic(
            f"not Avro single-object encoding: expected first bytes c3 01, got {seen} "
            f"({len(data)} bytes)"
        )
    raise TruncatedBody(
        f"message is {len(data)} bytes; the single-object header alone is {HEADER_SIZE}"
    )


def _read(
    data: bytes, writer: SchemaEntry, reader: SchemaEntry, reader_parsed: Any
) -> dict[str, Any]:
    """Read the body after the header; `reader_parsed` None means no resolution."""
    stream = BytesIO(data)
    stream.seek(HEADER_SIZE)
    try:
        record = schemaless_reader(stream, writer.parsed, reader_parsed)
    except EOFError as exc:
        detail = f": {exc}" if str(exc) else ""
        raise TruncatedBody(
            f"body of {writer.label} ends early ({len(data) - HEADER_SIZE} body bytes){detail}"
        ) from exc
    except _FastavroResolutionError as exc:
        raise SchemaResolutionError(_resolution_message(writer, reader, exc)) from exc
    except Exception as exc:  # garbage makes fastavro raise IndexError, UnicodeDecodeError, ...
        raise MalformedBody(
            f"body is not valid {writer.label}: {type(exc).__name__}: {exc}"
        ) from exc
    if stream.tell() != len(data):
        raise MalformedBody(
            f"{len(data) - stream.tell()} trailing bytes after a complete {writer.label} body"
        )
    return record


def _resolution_message(writer: SchemaEntry, reader: SchemaEntry, exc: Exception) -> str:
    # fastavro's message dumps both schemas whole; the checker names the field instead.
    problems = resolution_problems(reader=reader.schema, writer=writer.schema)
    if problems:
        detail = "; ".join(
            f"field '{path}': {reason}" if path else reason for path, reason in problems
        )
    else:
        detail = str(exc)[:200]
    return f"cannot read {writer.label} data as {reader.label}: {detail}"


def _encode_error(entry: SchemaEntry, record: Any, exc: Exception) -> EncodeError:
    try:
        entry.validate(record)
    except ValidationError as invalid:
        return EncodeError(f"cannot encode {entry.label}: {invalid}", invalid)
    return EncodeError(f"cannot encode {entry.label}: {type(exc).__name__}: {exc}")

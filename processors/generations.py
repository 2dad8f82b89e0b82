"""The names of one generation of a projection: its own projector, changelog, topic, sink,
table and checkpoints, so a rebuild runs beside the live generation (docs/read-side.md,
"Projection lifecycle").

Generation 1 is the projection as first deployed and keeps the names it has always had
(the shared projector and sink, `<ctx>.projection.<name>`, checkpoints under `<name>`),
except for its table, `<table>_g1`, behind the view readers query. A later generation N
gets its own projector app and sink group (so it starts at offset 0 of `<ctx>.events`),
its own topic and changelog, and its own table and checkpoint key.
"""

from __future__ import annotations

from dataclasses import dataclass

from processors.projections import Projection


@dataclass(frozen=True, slots=True)
class GenerationNames:
    prefix: str  # the context's topic prefix
    projection: str
    table: str  # the projection's table_name (its own name, or its per-partition table)
    generation: int

    def __post_init__(self) -> None:
        if self.generation < 1:
            raise ValueError(f"generation must be >= 1, got {self.generation}")

    @classmethod
    def of(cls, prefix: str, projection: Projection, generation: int) -> GenerationNames:
        return cls(prefix, projection.name, projection.table_name, generation)

    @property
    def first(self) -> bool:
        return self.generation == 1

    @property
    def tag(self) -> str:
        return f"g{self.generation}"

    @property
    def projector_app_id(self) -> str:
        """The Faust app id: consumer group and prefix of the projector's own topics."""
        base = f"{self.prefix}.projector"
        return base if self.first else f"{base}.{self.projection}.{self.tag}"

    @property
    def changelog(self) -> str:
        return f"{self.projector_app_id}-{self.projection}-changelog"

    @property
    def topic(self) -> str:
        base = f"{self.prefix}.projection.{self.projection}"
        return base if self.first else f"{base}.{self.tag}"

    @property
    def sink_group(self) -> str:
        base = f"{self.prefix}.sink"
        return base if self.first else f"{base}.{self.projection}.{self.tag}"

    @property
    def relation(self) -> str:
        """The generation's Postgres table."""
        return f"{self.table}_{self.tag}"

    @property
    def checkpoint_key(self) -> str:
        """Its rows' `projection` in `cqrs_checkpoints`."""
        return self.projection if self.first else f"{self.projection}.{self.tag}"

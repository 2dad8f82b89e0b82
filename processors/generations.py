"""The names of one generation of a projection: its own topic, Postgres table and checkpoint
key (its projector app and sink group: `projector_app_id`, `SinkConfig.group_id`), so a
rebuild runs beside the live generation (docs/read-side.md, "Projection lifecycle").

Generation 1 is the projection as first deployed and keeps the names it has always had
(the shared projector and sink, `<ctx>.projection.<name>`, checkpoints under `<name>`),
except for its table, `<table>_g1`, behind the view readers query. A later generation N
runs as the projection renamed `<name>_gN` (`at_generation`), in its own projector app and
sink group (so it starts at offset 0 of `<ctx>.events`): the runtime then derives its
topic (also its Faust table's changelog), Faust table, Postgres table and checkpoint key from
that name as usual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from processors.projections import Projection


def generation_name(name: str, generation: int) -> str:
    return name if generation == 1 else f"{name}_g{generation}"


def at_generation(projection: Projection, generation: int) -> Projection:
    """Generation `generation` (>= 2) of `projection`: the same rules under its own names."""
    if generation < 2:
        raise ValueError(f"a rebuilt generation is numbered from 2, got {generation}")
    return dataclasses.replace(
        projection,
        name=generation_name(projection.name, generation),
        table=f"{projection.table_name}_g{generation}",
    )


def projections_to_run(
    projections: Sequence[Projection], name: str | None, generation: int
) -> tuple[Projection, ...]:
    """Every projection, or, for a worker restricted to `name`, that one at `generation`."""
    if name is None:
        return tuple(projections)
    found = {p.name: p for p in projections}
    if name not in found:
        raise ValueError(f"no projection {name!r} (known: {', '.join(found)})")
    return (at_generation(found[name], generation),)


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
    def name(self) -> str:
        """The name the generation runs under."""
        return generation_name(self.projection, self.generation)

    @property
    def topic(self) -> str:
        return f"{self.prefix}.projection.{self.name}"

    @property
    def relation(self) -> str:
        """The generation's Postgres table."""
        return f"{self.table}_g{self.generation}"

    @property
    def checkpoint_key(self) -> str:
        """Its rows' `projection` in `cqrs_checkpoints`."""
        return self.name

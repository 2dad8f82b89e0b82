"""The reference bounded context: bank accounts and transfers between them."""

from pathlib import Path

from processors.bank.account import ACCOUNT
from processors.bank.projections import PROJECTIONS
from processors.bank.transfer import TRANSFER, TRANSFER_SAGA
from processors.domain import BoundedContext

context = BoundedContext(
    name="bank",
    aggregates=(ACCOUNT, TRANSFER),
    process_managers=(TRANSFER_SAGA,),
    partitions=6,
    projections=PROJECTIONS,
    schema_root=Path(__file__).resolve().parents[2] / "schemas" / "bank",
    migrations=Path(__file__).resolve().parents[2] / "sinks" / "migrations" / "bank",
)

"""The reference bounded context: bank accounts and transfers between them."""

from bank.account import ACCOUNT
from bank.projections import PROJECTIONS
from bank.transfer import TRANSFER, TRANSFER_SAGA
from processors.domain import BoundedContext

context = BoundedContext(
    name="bank",
    aggregates=(ACCOUNT, TRANSFER),
    process_managers=(TRANSFER_SAGA,),
    partitions=6,
    projections=PROJECTIONS,
    package=__name__,
)

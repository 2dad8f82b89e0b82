"""The reference bounded context: bank accounts and transfers between them."""

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
)

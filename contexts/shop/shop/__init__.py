"""A reference bounded context: orders that reserve stock per product and are paid by a bank
transfer, confirmed when bank publishes `bank.TransferCompleted`."""

from processors.domain import BoundedContext
from shop.order import ORDER
from shop.payment import PAYMENT
from shop.process import ORDER_PROCESS
from shop.projections import PROJECTIONS
from shop.stock import STOCK

context = BoundedContext(
    name="shop",
    aggregates=(ORDER, STOCK, PAYMENT),
    process_managers=(ORDER_PROCESS,),
    partitions=6,
    projections=PROJECTIONS,
    package=__name__,
)

"""The bank's commands as typed dicts: what its deciders read. The registry checks each
against its Avro schema when it loads the context, so a misspelt field fails at start-up."""

from __future__ import annotations

from typing import NotRequired, TypedDict


class Money(TypedDict):
    amount: int  # minor units
    currency: str  # ISO 4217


class OpenAccount(TypedDict):
    account_id: str
    owner: str
    currency: str


class Movement(TypedDict):
    """bank.Deposit and bank.Withdraw."""

    account_id: str
    amount: Money
    transfer_id: NotRequired[str | None]


class CloseAccount(TypedDict):
    account_id: str


class RequestTransfer(TypedDict):
    transfer_id: str
    from_account_id: str
    to_account_id: str
    amount: Money


class TransferStep(TypedDict):
    """bank.RecordTransferDebit and bank.CompleteTransfer."""

    transfer_id: str


class FailTransfer(TypedDict):
    transfer_id: str
    reason: str
    compensated: bool

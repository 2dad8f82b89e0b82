"""The account aggregate in the library's declarative style: `@event` methods whose bodies
check the rules and then mutate. A rule that fails raises before the event is recorded,
so a rejected command records nothing (as in the library's bank accounts example)."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event


class AccountRuleError(Exception):
    """A command the rules refuse; `reason` is named as our decider names it."""

    reason = "rejected"


class InvalidAmountError(AccountRuleError):
    reason = "invalid_amount"


class CurrencyMismatchError(AccountRuleError):
    reason = "currency_mismatch"


class InsufficientFundsError(AccountRuleError):
    reason = "insufficient_funds"


class AccountNotFoundError(AccountRuleError):
    reason = "account_not_found"


class Account(Aggregate):
    @event("Opened")
    def __init__(self, account_id: str, owner: str, currency: str) -> None:
        self.account_id = account_id
        self.owner = owner
        self.currency = currency
        self.balance = 0

    @classmethod
    def create_id(cls, account_id: str) -> UUID:
        # Named IDs, as the library's tutorial does, so commands can address accounts by name.
        return uuid5(NAMESPACE_URL, f"/bank/accounts/{account_id}")

    @event("Deposited")
    def deposit(self, amount: int, currency: str) -> None:
        self._check_movement(amount, currency)
        self.balance += amount

    @event("Withdrawn")
    def withdraw(self, amount: int, currency: str) -> None:
        self._check_movement(amount, currency)
        if amount > self.balance:
            raise InsufficientFundsError(
                f"withdrawing {amount} would overdraw balance {self.balance}"
            )
        self.balance -= amount

    def _check_movement(self, amount: int, currency: str) -> None:
        if amount <= 0:
            raise InvalidAmountError(f"amount must be positive, got {amount}")
        if currency != self.currency:
            raise CurrencyMismatchError(f"account holds {self.currency}, command is in {currency}")

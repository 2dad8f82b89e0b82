"""The write model: an `Application` with one command method per command type. Each method
returns the notification ID of the recorded event, which the library documents as the way
to wait until a read model has caught up with a command."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application

from bench.peer.domain import Account, AccountNotFoundError


class BankAccounts(Application[UUID]):
    def open_account(self, account_id: str, owner: str, currency: str) -> int:
        return self._save(Account(account_id=account_id, owner=owner, currency=currency))

    def deposit(self, account_id: str, amount: int, currency: str) -> int:
        account = self._get(account_id)
        account.deposit(amount=amount, currency=currency)
        return self._save(account)

    def withdraw(self, account_id: str, amount: int, currency: str) -> int:
        account = self._get(account_id)
        account.withdraw(amount=amount, currency=currency)
        return self._save(account)

    def get_balance(self, account_id: str) -> int:
        return self._get(account_id).balance

    def _get(self, account_id: str) -> Account:
        try:
            return self.repository.get(Account.create_id(account_id))
        except AggregateNotFoundError:
            raise AccountNotFoundError(f"account {account_id} is not open") from None

    def _save(self, account: Account) -> int:
        recordings = self.save(account)
        return recordings[-1].notification.id

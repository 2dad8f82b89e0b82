"""The read model, in the shape the library documents for a materialised view in Postgres:
a view class that extends `PostgresTrackingRecorder`, whose every update writes the
tracking record (application name, notification ID) in the same transaction as the row
change, and a `Projection` that maps each domain event to one view update. The
`ProjectionRunner` subscribes to the application from the view's last tracking position, so
a restart resumes where it stopped and an event is never applied twice."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from time import monotonic
from typing import Any
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from bench.peer.domain import Account

ACCOUNTS_TABLE = "accounts"


class AccountsView(TrackingRecorder, ABC):
    """The interface of the `accounts` read model."""

    @abstractmethod
    def open_account(
        self,
        *,
        id: UUID,
        account_id: str,
        owner: str,
        currency: str,
        version: int,
        updated_at: datetime,
        tracking: Tracking,
    ) -> None: ...

    @abstractmethod
    def add_to_balance(
        self,
        *,
        id: UUID,
        delta: int,
        version: int,
        updated_at: datetime,
        tracking: Tracking,
    ) -> None: ...

    @abstractmethod
    def balances(self) -> dict[str, int]: ...


class PostgresAccountsView(PostgresTrackingRecorder, AccountsView):
    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        table = SQL("{0}.{1}").format(Identifier(self.datastore.schema), Identifier(ACCOUNTS_TABLE))
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} ("
                "id uuid PRIMARY KEY, "
                "account_id text NOT NULL UNIQUE, "
                "owner text NOT NULL, "
                "currency text NOT NULL, "
                "balance bigint NOT NULL, "
                "version bigint NOT NULL, "
                "updated_at timestamptz NOT NULL)"
            ).format(table)
        )
        self.insert_account_statement = SQL(
            "INSERT INTO {0} VALUES (%s, %s, %s, %s, 0, %s, %s)"
        ).format(table)
        self.add_to_balance_statement = SQL(
            "UPDATE {0} SET balance = balance + %s, version = %s, updated_at = %s WHERE id = %s"
        ).format(table)
        self.select_balances_statement = SQL("SELECT account_id, balance FROM {0}").format(table)

    def open_account(
        self,
        *,
        id: UUID,
        account_id: str,
        owner: str,
        currency: str,
        version: int,
        updated_at: datetime,
        tracking: Tracking,
    ) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._insert_tracking(curs, tracking)
            curs.execute(
                self.insert_account_statement,
                (id, account_id, owner, currency, version, updated_at),
                prepare=True,
            )

    def add_to_balance(
        self,
        *,
        id: UUID,
        delta: int,
        version: int,
        updated_at: datetime,
        tracking: Tracking,
    ) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._insert_tracking(curs, tracking)
            curs.execute(
                self.add_to_balance_statement, (delta, version, updated_at, id), prepare=True
            )

    def balances(self) -> dict[str, int]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.select_balances_statement)
            return {row["account_id"]: row["balance"] for row in curs.fetchall()}


class AccountsProjection(Projection[AccountsView]):
    name = ACCOUNTS_TABLE
    topics = (
        get_topic(Account.Opened),
        get_topic(Account.Deposited),
        get_topic(Account.Withdrawn),
    )

    def __init__(self, view: AccountsView) -> None:
        super().__init__(view)
        # Measurement only: when each notification became visible (committed) in the view,
        # on the machine-wide monotonic clock so another process can compare against it.
        self.visible_at: dict[int, float] = {}

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Events of other types are filtered out by `topics` in the database."""

    @process_event.register(Account.Opened)
    def _opened(self, domain_event: Account.Opened, tracking: Tracking) -> None:
        self.view.open_account(
            id=domain_event.originator_id,
            account_id=domain_event.account_id,
            owner=domain_event.owner,
            currency=domain_event.currency,
            version=domain_event.originator_version,
            updated_at=domain_event.timestamp,
            tracking=tracking,
        )
        self.visible_at[tracking.notification_id] = monotonic()

    @process_event.register(Account.Deposited)
    def _deposited(self, domain_event: Account.Deposited, tracking: Tracking) -> None:
        self._move(domain_event, domain_event.amount, tracking)

    @process_event.register(Account.Withdrawn)
    def _withdrawn(self, domain_event: Account.Withdrawn, tracking: Tracking) -> None:
        self._move(domain_event, -domain_event.amount, tracking)

    def _move(self, domain_event: Any, delta: int, tracking: Tracking) -> None:
        self.view.add_to_balance(
            id=domain_event.originator_id,
            delta=delta,
            version=domain_event.originator_version,
            updated_at=domain_event.timestamp,
            tracking=tracking,
        )
        self.visible_at[tracking.notification_id] = monotonic()

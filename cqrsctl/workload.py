"""The demo's and the benchmark's workload (shared by our pipeline and the peer), and what it
must produce.

A accounts are opened first (owner, currency EUR), then C commands are drawn uniformly over
the accounts: 60% deposits of 1..10,000 and 40% withdrawals of 1..12,000 (minor units). A
withdrawal larger than the balance is rejected by the rules, so a run has both outcomes.

The commands are plain data shaped like our Avro records, so either side can send them:

    ("bank.OpenAccount", {"account_id", "owner", "currency"})
    ("bank.Deposit" | "bank.Withdraw", {"account_id", "amount": {"amount", "currency"}})

`expected_outcome` is an independent plain-Python model of the rules (it does not use our
decider), so both sides are checked for correctness against the same answer, not just timed.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

OPEN_ACCOUNT = "bank.OpenAccount"
DEPOSIT = "bank.Deposit"
WITHDRAW = "bank.Withdraw"
CURRENCY = "EUR"

DEPOSIT_SHARE = 0.6
DEPOSIT_MAX = 10_000
WITHDRAW_MAX = 12_000

DEFAULT_ACCOUNTS = 1_000
DEFAULT_COMMANDS = 100_000
DEFAULT_SEED = 6

Command = tuple[str, dict[str, Any]]


class WorkloadError(ValueError):
    """The workload was asked for with sizes it cannot have."""


@dataclass(frozen=True)
class WorkloadSpec:
    """Sizes and seed of one workload; equal specs give identical command sequences."""

    accounts: int = DEFAULT_ACCOUNTS
    commands: int = DEFAULT_COMMANDS
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if self.accounts < 1:
            raise WorkloadError(f"accounts must be at least 1, got {self.accounts}")
        if self.commands < 0:
            raise WorkloadError(f"commands must not be negative, got {self.commands}")

    @property
    def total(self) -> int:
        """Every command a run sends: the openings and then the movements."""
        return self.accounts + self.commands


def account_id(index: int) -> str:
    return f"acc-{index:06d}"


def iter_commands(spec: WorkloadSpec) -> Iterator[Command]:
    """The workload's commands in order, generated lazily so a driver holds none of them."""
    for index in range(spec.accounts):
        yield (
            OPEN_ACCOUNT,
            {"account_id": account_id(index), "owner": f"owner-{index}", "currency": CURRENCY},
        )
    rng = random.Random(spec.seed)
    for _ in range(spec.commands):
        target = account_id(rng.randrange(spec.accounts))
        if rng.random() < DEPOSIT_SHARE:
            kind, amount = DEPOSIT, rng.randint(1, DEPOSIT_MAX)
        else:
            kind, amount = WITHDRAW, rng.randint(1, WITHDRAW_MAX)
        yield kind, {"account_id": target, "amount": {"amount": amount, "currency": CURRENCY}}


def generate(spec: WorkloadSpec) -> list[Command]:
    return list(iter_commands(spec))


@dataclass
class _Account:
    currency: str
    balance: int = 0


@dataclass
class Outcome:
    """What a correct system ends with after the workload."""

    accepted: list[bool] = field(default_factory=list)  # one flag per command, in order
    balances: dict[str, int] = field(default_factory=dict)
    rejections: Counter[str] = field(default_factory=Counter)  # by reason

    @property
    def accepted_count(self) -> int:
        return sum(self.accepted)

    @property
    def rejected_count(self) -> int:
        return len(self.accepted) - self.accepted_count

    @property
    def events(self) -> int:
        """Each accepted command of this workload records exactly one event."""
        return self.accepted_count


def _reject(outcome: Outcome, reason: str) -> None:
    outcome.accepted.append(False)
    outcome.rejections[reason] += 1


def expected_outcome(commands: Iterable[Command]) -> Outcome:
    """Apply the bank rules (open once; positive amounts in the account's currency; no
    overdraft) to the commands, with reasons named as our decider names them."""
    accounts: dict[str, _Account] = {}
    outcome = Outcome()
    for kind, data in commands:
        target = data["account_id"]
        account = accounts.get(target)
        if kind == OPEN_ACCOUNT:
            if account is not None:
                _reject(outcome, "account_exists")
                continue
            accounts[target] = _Account(data["currency"])
            outcome.accepted.append(True)
            continue
        if kind not in (DEPOSIT, WITHDRAW):
            raise WorkloadError(f"the reference model does not know command type {kind!r}")
        amount, currency = data["amount"]["amount"], data["amount"]["currency"]
        if account is None:
            _reject(outcome, "account_not_found")
        elif amount <= 0:
            _reject(outcome, "invalid_amount")
        elif currency != account.currency:
            _reject(outcome, "currency_mismatch")
        elif kind == WITHDRAW and amount > account.balance:
            _reject(outcome, "insufficient_funds")
        else:
            account.balance += amount if kind == DEPOSIT else -amount
            outcome.accepted.append(True)
    outcome.balances = {name: account.balance for name, account in accounts.items()}
    return outcome

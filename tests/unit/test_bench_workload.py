"""The benchmark workload: deterministic per seed, the stated mix, and the reference model."""

from __future__ import annotations

import pytest

from cqrsctl.workload import (
    DEPOSIT,
    DEPOSIT_MAX,
    OPEN_ACCOUNT,
    WITHDRAW,
    WITHDRAW_MAX,
    WorkloadError,
    WorkloadSpec,
    expected_outcome,
    generate,
    iter_commands,
)


def movement(kind: str, account: str, amount: int, currency: str = "EUR"):
    return kind, {"account_id": account, "amount": {"amount": amount, "currency": currency}}


def opening(account: str, currency: str = "EUR"):
    return OPEN_ACCOUNT, {"account_id": account, "owner": "Ada", "currency": currency}


def test_same_seed_gives_the_same_commands_and_another_seed_does_not():
    spec = WorkloadSpec(accounts=20, commands=500, seed=1)
    assert generate(spec) == generate(WorkloadSpec(accounts=20, commands=500, seed=1))
    assert generate(spec) != generate(WorkloadSpec(accounts=20, commands=500, seed=2))


def test_accounts_are_opened_first_then_movements_over_those_accounts():
    spec = WorkloadSpec(accounts=50, commands=2_000)
    commands = generate(spec)
    assert len(commands) == spec.total == 2_050
    openings = commands[: spec.accounts]
    assert [kind for kind, _ in openings] == [OPEN_ACCOUNT] * spec.accounts
    opened = {data["account_id"] for _, data in openings}
    assert len(opened) == spec.accounts
    assert all(data["currency"] == "EUR" and data["owner"] for _, data in openings)
    for kind, data in commands[spec.accounts :]:
        assert kind in (DEPOSIT, WITHDRAW)
        assert data["account_id"] in opened
        assert data["amount"]["currency"] == "EUR"


def test_mix_is_about_sixty_forty_with_amounts_in_range():
    spec = WorkloadSpec(accounts=100, commands=20_000, seed=7)
    movements = generate(spec)[spec.accounts :]
    deposits = [data["amount"]["amount"] for kind, data in movements if kind == DEPOSIT]
    withdrawals = [data["amount"]["amount"] for kind, data in movements if kind == WITHDRAW]
    assert 0.58 < len(deposits) / len(movements) < 0.62
    assert min(deposits) >= 1 and max(deposits) <= DEPOSIT_MAX
    assert min(withdrawals) >= 1 and max(withdrawals) <= WITHDRAW_MAX
    # Withdrawals reach past the largest deposit, so some of them must overdraw.
    assert max(withdrawals) > DEPOSIT_MAX


def test_every_account_is_used_when_commands_outnumber_accounts():
    spec = WorkloadSpec(accounts=30, commands=3_000)
    used = {data["account_id"] for _, data in generate(spec)[spec.accounts :]}
    assert len(used) == spec.accounts


def test_iterator_and_list_agree():
    spec = WorkloadSpec(accounts=5, commands=100)
    assert list(iter_commands(spec)) == generate(spec)


@pytest.mark.parametrize(
    ("accounts", "commands", "named"),
    [(0, 10, "accounts"), (-1, 10, "accounts"), (5, -1, "commands")],
)
def test_impossible_sizes_are_refused_naming_the_field(accounts, commands, named):
    with pytest.raises(WorkloadError, match=f"^{named} must"):
        WorkloadSpec(accounts=accounts, commands=commands)


def test_model_rejects_an_overdraw_and_keeps_the_balance():
    outcome = expected_outcome(
        [
            opening("a"),
            movement(DEPOSIT, "a", 100),
            movement(WITHDRAW, "a", 101),
            movement(WITHDRAW, "a", 100),
            movement(WITHDRAW, "a", 1),
        ]
    )
    assert outcome.accepted == [True, True, False, True, False]
    assert outcome.balances == {"a": 0}
    assert outcome.rejections == {"insufficient_funds": 2}
    assert outcome.accepted_count == 3 and outcome.rejected_count == 2 and outcome.events == 3


def test_model_rejects_unknown_accounts_reopening_bad_amounts_and_other_currencies():
    outcome = expected_outcome(
        [
            movement(DEPOSIT, "ghost", 5),
            opening("a"),
            opening("a", currency="USD"),
            movement(DEPOSIT, "a", 0),
            movement(DEPOSIT, "a", 5, currency="USD"),
            movement(DEPOSIT, "a", 5),
        ]
    )
    assert outcome.accepted == [False, True, False, False, False, True]
    assert outcome.rejections == {
        "account_not_found": 1,
        "account_exists": 1,
        "invalid_amount": 1,
        "currency_mismatch": 1,
    }
    assert outcome.balances == {"a": 5}


def test_model_refuses_a_command_type_it_does_not_know():
    with pytest.raises(WorkloadError, match=r"bank\.CloseAccount"):
        expected_outcome([opening("a"), ("bank.CloseAccount", {"account_id": "a"})])


def test_generated_workload_has_rejections_and_balances_consistent_with_the_commands():
    spec = WorkloadSpec(accounts=100, commands=5_000)
    commands = generate(spec)
    outcome = expected_outcome(commands)
    assert len(outcome.accepted) == spec.total
    assert all(outcome.accepted[: spec.accounts])
    assert set(outcome.rejections) == {"insufficient_funds"}
    assert 0 < outcome.rejected_count < spec.commands
    # Balances equal accepted deposits minus accepted withdrawals, and none is negative.
    expected = {data["account_id"]: 0 for _, data in commands[: spec.accounts]}
    for (kind, data), accepted in zip(commands, outcome.accepted, strict=True):
        if accepted and kind != OPEN_ACCOUNT:
            sign = 1 if kind == DEPOSIT else -1
            expected[data["account_id"]] += sign * data["amount"]["amount"]
    assert outcome.balances == expected
    assert min(outcome.balances.values()) >= 0

"""Forged internal commands over HTTP: the transfer saga's steps are not offered whatever the
Idempotency-Key, and a public command whose Idempotency-Key mimics a saga's command id is the
client's own command; the saga runs its course and money is conserved."""

from __future__ import annotations

import time

import httpx

from tests.support.gateway_rig import GatewayRig, movement_body, open_account_body
from tests.support.write_side import StoredEvent, fold_balances, read_events

# Each step of the saga: its body and the id the saga gives it.
STEPS = {
    "bank.FailTransfer": (
        {"transfer_id": "t-h", "reason": "forged", "compensated": True},
        "pm:transfer:t-h:fail",
    ),
    "bank.RecordTransferDebit": ({"transfer_id": "t-h"}, "pm:transfer:t-h:debited"),
    "bank.CompleteTransfer": ({"transfer_id": "t-h"}, "pm:transfer:t-h:complete"),
}


def _events_once_settled(gateway: GatewayRig, timeout: float = 120.0) -> list[StoredEvent]:
    topic = f"{gateway.pipeline.prefix}.events"
    deadline = time.monotonic() + timeout
    while True:
        events = read_events(gateway.pipeline.kafka, topic)
        ended = [e for e in events if e.type in ("bank.TransferCompleted", "bank.TransferFailed")]
        if ended:
            return events
        assert time.monotonic() < deadline, "the transfer did not end"
        time.sleep(0.5)


def test_forged_transfer_steps_over_http_move_no_money(gateway: GatewayRig) -> None:
    def post(http: httpx.Client, command_type: str, body: dict, key: str | None = None) -> dict:
        headers = {"Idempotency-Key": key} if key else None
        answer = http.post(
            f"/commands/{command_type}", params={"wait": "result"}, json=body, headers=headers
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "ACCEPTED", answer.text
        return answer.json()

    with gateway.http() as http:
        for account in ("ha", "hb"):
            post(http, "bank.OpenAccount", open_account_body(account))
        post(http, "bank.Deposit", movement_body("ha", 1000))
        # Each step of the saga, with the saga's own id as the Idempotency-Key: not offered.
        for step, (body, saga_id) in STEPS.items():
            forged = http.post(f"/commands/{step}", json=body, headers={"Idempotency-Key": saga_id})
            assert (forged.status_code, forged.json()["error"]) == (404, "unknown_command_type")
        # A public Withdraw under the saga's debit id: the client's own 1, nothing more.
        borrowed = {**movement_body("ha", 1), "transfer_id": "t-h"}
        post(http, "bank.Withdraw", borrowed, key="pm:transfer:t-h:debit")
        transfer = {
            "transfer_id": "t-h",
            "from_account_id": "ha",
            "to_account_id": "hb",
            "amount": {"amount": 300, "currency": "EUR"},
        }
        post(http, "bank.RequestTransfer", transfer)
    events = _events_once_settled(gateway)
    steps = [e.type for e in events if e.aggregate_id == "t-h"]
    assert steps == ["bank.TransferRequested", "bank.TransferDebited", "bank.TransferCompleted"]
    # Both debits happened, each once: the client's 1 and the saga's own 300.
    withdrawn = [e.data["amount"]["amount"] for e in events if e.type == "bank.Withdrawn"]
    assert sorted(withdrawn) == [1, 300]
    balances = fold_balances(events)
    assert (balances["ha"], balances["hb"]) == (1000 - 1 - 300, 300)
    assert sum(balances.values()) == 1000 - 1

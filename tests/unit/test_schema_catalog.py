"""The catalog: the bank records as the wire contract lists them, look-ups, named-type
expansion, loading any context folder, and the errors a broken schema tree produces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from schemas.catalog import (
    RUNTIME_ROOT,
    Catalog,
    CatalogError,
    SchemaRoot,
    UnknownSchema,
    default_catalog,
)
from schemas.fingerprint import fingerprint, to_wire
from tests.support.schema_tree import copy_schemas

BANK_ROOT = default_catalog().get("bank.Deposit").path.parents[1]

# The wire contract (notes/common.md): record -> field names, in order.
BANK_RECORDS = {
    "bank.Money": ["amount", "currency"],
    "bank.OpenAccount": ["account_id", "owner", "currency"],
    "bank.Deposit": ["account_id", "amount", "transfer_id"],
    "bank.Withdraw": ["account_id", "amount", "transfer_id"],
    "bank.CloseAccount": ["account_id"],
    "bank.RequestTransfer": ["transfer_id", "from_account_id", "to_account_id", "amount"],
    "bank.RecordTransferDebit": ["transfer_id"],
    "bank.CompleteTransfer": ["transfer_id"],
    "bank.FailTransfer": ["transfer_id", "reason", "compensated"],
    "bank.AccountOpened": ["account_id", "owner", "currency"],
    "bank.Deposited": ["account_id", "amount", "balance", "transfer_id", "memo"],
    "bank.Withdrawn": ["account_id", "amount", "balance", "transfer_id"],
    "bank.AccountClosed": ["account_id"],
    "bank.TransferRequested": ["transfer_id", "from_account_id", "to_account_id", "amount"],
    "bank.TransferDebited": ["transfer_id", "from_account_id", "to_account_id", "amount"],
    "bank.TransferCompleted": ["transfer_id"],
    "bank.TransferFailed": ["transfer_id", "from_account_id", "amount", "reason", "compensated"],
    "bank.AccountState": ["account_id", "owner", "currency", "balance", "status", "version"],
    "bank.TransferState": [
        "transfer_id",
        "from_account_id",
        "to_account_id",
        "amount",
        "status",
        "version",
    ],
    "bank.AccountRow": [
        "account_id",
        "owner",
        "currency",
        "balance",
        "status",
        "version",
        "updated_at",
    ],
    # The read side (issue 5) added the fields after `count` / `payload_json`: the source
    # partition and offset (watermark rows, positions), the aggregate type and causation id.
    "bank.DailyTotalRow": [
        "currency",
        "day",
        "deposits",
        "withdrawals",
        "count",
        "source_partition",
        "source_offset",
    ],
    "bank.EventLogRow": [
        "event_id",
        "aggregate_id",
        "version",
        "type",
        "time",
        "correlation_id",
        "payload_json",
        "aggregate_type",
        "causation_id",
        "source_partition",
        "source_offset",
        "principal",
        "traceparent",
    ],
}


def copy_tree(tmp_path: Path) -> Path:
    return copy_schemas(tmp_path / "schemas")


def write(root: Path, relative: str, schema: dict[str, Any] | str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema if isinstance(schema, str) else json.dumps(schema))
    return path


def record(name: str, namespace: str, fields: list[dict[str, Any]], **extra: Any) -> dict:
    return {"type": "record", "name": name, "namespace": namespace, "fields": fields, **extra}


# -- the shipped schemas ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fields"), sorted(BANK_RECORDS.items()))
def test_bank_records_have_the_contracts_fields(name: str, fields: list[str]) -> None:
    entry = default_catalog().latest(name)
    assert [f["name"] for f in entry.schema["fields"]] == fields
    assert entry.context == "bank"


def test_files_sit_in_their_kind_folders() -> None:
    catalog = default_catalog()
    assert catalog.get("bank.Deposit").kind == "commands"
    assert catalog.get("bank.Deposited").kind == "events"
    assert catalog.get("bank.AccountState").kind == "state"
    assert catalog.get("bank.AccountRow").kind == "projections"
    assert catalog.get("bank.Money").kind == "types"
    assert catalog.get("bank.Deposited", 1).path == BANK_ROOT / "events/Deposited.v1.avsc"


def test_every_bank_record_and_field_has_a_doc() -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict) and node.get("type") == "record":
            assert node.get("doc"), f"{where}: record {node['name']} has no doc"
            for field in node["fields"]:
                assert field.get("doc"), f"{where}: field {field['name']} has no doc"
                walk(field["type"], where)

    for entry in default_catalog().in_context("bank"):
        walk(entry.schema, entry.label)


def test_money_is_referenced_by_name_and_inlined_by_the_catalog() -> None:
    raw = json.loads((BANK_ROOT / "commands/Deposit.v1.avsc").read_text())
    assert raw["fields"][1]["type"] == "bank.Money"  # the file only names the shared type
    entry = default_catalog().get("bank.Deposit")
    money = entry.schema["fields"][1]["type"]
    assert money["name"] == "bank.Money"
    assert [f["name"] for f in money["fields"]] == ["amount", "currency"]
    assert '"name":"bank.Money","type":"record"' in entry.canonical_form


def test_lookups_by_name_version_and_fingerprint() -> None:
    catalog = default_catalog()
    v1, v2 = catalog.versions("bank.Deposited")
    assert (v1.version, v2.version) == (1, 2)
    assert catalog.latest("bank.Deposited") is v2
    assert catalog.get("bank.Deposited") is v2
    assert catalog.get("bank.Deposited", 1) is v1
    assert catalog.by_fingerprint(v1.fingerprint) is v1
    assert catalog.by_fingerprint(v1.fingerprint_bytes) is v1
    assert v1.fingerprint == fingerprint(v1.canonical_form)
    assert v1.fingerprint_bytes == to_wire(v1.fingerprint)
    assert v1.fingerprint != v2.fingerprint
    assert "bank.Deposited" in catalog
    assert "bank" in catalog.contexts()


def test_unknown_lookups_raise_typed_errors_with_hints() -> None:
    catalog = default_catalog()
    with pytest.raises(UnknownSchema, match=r"did you mean bank\.Deposited\?"):
        catalog.latest("bank.Depositd")
    with pytest.raises(UnknownSchema, match=r"bank\.Deposited has no version 9 \(known: v1, v2\)"):
        catalog.get("bank.Deposited", 9)
    with pytest.raises(UnknownSchema, match="0102030405060708"):
        catalog.by_fingerprint(bytes(range(1, 9)))


def test_the_default_catalog_is_loaded_once_from_the_runtime_and_the_contexts() -> None:
    from processors.registry import default_registry

    assert default_catalog() is default_catalog()
    bank = default_registry().context("bank")
    assert default_catalog().roots[0] == RUNTIME_ROOT
    assert SchemaRoot("bank", bank.schema_root) in default_catalog().roots
    assert default_catalog().get("bank.Deposit").relative == "bank/commands/Deposit.v1.avsc"
    assert default_catalog().get("cqrs.CommandResult").context == "cqrs"


def test_roots_load_side_by_side_and_a_context_name_is_taken_once(tmp_path: Path) -> None:
    shop = tmp_path / "shop_pkg" / "schemas"
    write(shop, "events/ItemAdded.v1.avsc", record("ItemAdded", "shop", []))
    bank = default_catalog().get("bank.Deposit").path.parents[1]
    catalog = Catalog.from_roots([RUNTIME_ROOT, SchemaRoot("bank", bank), SchemaRoot("shop", shop)])
    assert catalog.get("shop.ItemAdded").kind == "events"
    assert catalog.get("shop.ItemAdded").relative == "shop/events/ItemAdded.v1.avsc"
    assert len(catalog) == len(Catalog.from_roots([RUNTIME_ROOT, SchemaRoot("bank", bank)])) + 1
    with pytest.raises(CatalogError, match="context 'bank' has two schema folders"):
        Catalog.from_roots([SchemaRoot("bank", bank), SchemaRoot("bank", shop)])
    with pytest.raises(CatalogError, match="namespace 'shop' must be the context name 'crm'"):
        Catalog.from_roots([SchemaRoot("crm", shop)])
    with pytest.raises(CatalogError, match=r"schema folder .* of context 'x' does not exist"):
        Catalog.from_roots([SchemaRoot("x", tmp_path / "nowhere")])


# -- validation ------------------------------------------------------------------------------

DEPOSIT = {"account_id": "acc-1", "amount": {"amount": 250, "currency": "EUR"}, "transfer_id": None}


def test_a_valid_command_passes_and_defaults_may_be_omitted() -> None:
    catalog = default_catalog()
    catalog.validate("bank.Deposit", DEPOSIT)
    catalog.validate("bank.Deposit", {k: v for k, v in DEPOSIT.items() if k != "transfer_id"})
    catalog.validate("bank.Deposit", {**DEPOSIT, "transfer_id": "t-1"})


@pytest.mark.parametrize(
    ("record", "path", "reason"),
    [
        (
            {**DEPOSIT, "amount": {"amount": "250", "currency": "EUR"}},
            "amount.amount",
            "expected long",
        ),
        ({**DEPOSIT, "amount": {"amount": True, "currency": "EUR"}}, "amount.amount", "got bool"),
        (
            {**DEPOSIT, "amount": {"amount": 2**63, "currency": "EUR"}},
            "amount.amount",
            "out of range",
        ),
        ({**DEPOSIT, "amount": {"amount": 1}}, "amount.currency", "missing"),
        ({**DEPOSIT, "amount": 250}, "amount", "expected a bank.Money record"),
        ({"amount": DEPOSIT["amount"]}, "account_id", "missing"),
        (
            {**DEPOSIT, "transfer_id": 7},
            "transfer_id",
            "matches no branch of the union [null, string]",
        ),
        ({**DEPOSIT, "acount_id": "x"}, "acount_id", "unknown field"),
        ({**DEPOSIT, "account_id": "\ud800"}, "account_id", "UTF-8"),
    ],
)
def test_validation_errors_name_the_field(record: dict, path: str, reason: str) -> None:
    from schemas.catalog import ValidationError

    with pytest.raises(ValidationError) as caught:
        default_catalog().validate("bank.Deposit", record)
    assert caught.value.path == path
    assert caught.value.schema == "bank.Deposit"
    assert f"field '{path}'" in str(caught.value)
    assert reason in str(caught.value)


def test_validation_of_enums_and_logical_types() -> None:
    from schemas.catalog import ValidationError

    catalog = default_catalog()
    state = {
        "account_id": "a",
        "owner": "o",
        "currency": "EUR",
        "balance": 0,
        "status": "OPEN",
        "version": 1,
    }
    catalog.validate("bank.AccountState", state)
    with pytest.raises(
        ValidationError, match=r"field 'status': expected one of bank\.AccountStatus"
    ):
        catalog.validate("bank.AccountState", {**state, "status": "FROZEN"})
    import datetime as dt

    row = {k: v for k, v in state.items()}
    row.update(status="OPEN", updated_at=dt.datetime.now(dt.UTC))
    catalog.validate("bank.AccountRow", row)  # datetime accepted for timestamp-millis
    catalog.validate("bank.AccountRow", {**row, "updated_at": 1_700_000_000_000})
    with pytest.raises(ValidationError, match=r"field 'updated_at'.*or datetime"):
        catalog.validate("bank.AccountRow", {**row, "updated_at": "yesterday"})


# -- loading any tree ------------------------------------------------------------------------


def test_any_context_folder_is_loaded_without_code_changes(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    write(
        root,
        "shop/types/Price.v1.avsc",
        record("Price", "shop", [{"name": "cents", "type": "long"}]),
    )
    write(
        root,
        "shop/events/ItemAdded.v1.avsc",
        record(
            "ItemAdded",
            "shop",
            [{"name": "sku", "type": "string"}, {"name": "price", "type": "Price"}],
        ),
    )
    write(root, "shop/Flat.v1.avsc", record("Flat", "shop", []))
    catalog = Catalog.load(root)
    assert "shop" in catalog.contexts()
    added = catalog.latest("shop.ItemAdded")
    assert added.kind == "events"
    assert added.schema["fields"][1]["type"]["name"] == "shop.Price"  # relative name resolved
    assert catalog.latest("shop.Flat").kind == ""
    assert len(catalog) == len(default_catalog()) + 3


def test_references_resolve_to_v1_unless_pinned(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    money_v2 = json.loads((root / "bank/types/Money.v1.avsc").read_text())
    money_v2["fields"].append({"name": "scale", "type": "int", "default": 2, "doc": "digits"})
    write(root, "bank/types/Money.v2.avsc", money_v2)
    withdraw_v2 = json.loads((root / "bank/commands/Withdraw.v1.avsc").read_text())
    withdraw_v2["references"] = {"bank.Money": 2}
    write(root, "bank/commands/Withdraw.v2.avsc", withdraw_v2)
    catalog = Catalog.load(root)
    # Publishing Money v2 does not change the fingerprint of anything already in use.
    assert (
        catalog.get("bank.Deposit").fingerprint == default_catalog().get("bank.Deposit").fingerprint
    )
    pinned = catalog.get("bank.Withdraw", 2).schema["fields"][1]["type"]
    assert [f["name"] for f in pinned["fields"]] == ["amount", "currency", "scale"]
    assert "references" not in catalog.get("bank.Withdraw", 2).schema


@pytest.mark.parametrize(
    ("relative", "content", "message"),
    [
        ("bank/events/Bad.avsc", "{}", r"Bad\.avsc: file name must be <Name>\.v<N>\.avsc"),
        ("bank/events/Bad.v1.avsc", "{not json", r"Bad\.v1\.avsc: not valid JSON"),
        (
            "bank/events/Bad.v1.avsc",
            '"string"',
            r"Bad\.v1\.avsc: the top level must be a named type",
        ),
        (
            "bank/events/Bad.v1.avsc",
            json.dumps(record("Other", "bank", [])),
            "file name says Bad but the schema is bank.Other",
        ),
        (
            "bank/events/Bad.v1.avsc",
            json.dumps(record("Bad", "shop", [])),
            "namespace 'shop' must be the context name 'bank'",
        ),
        (
            "bank/events/Bad.v1.avsc",
            json.dumps(record("Bad", "bank", [{"name": "x", "type": "bank.Mony"}])),
            r"Bad\.v1\.avsc: unknown type 'bank\.Mony'",
        ),
        (
            "bank/events/Bad.v1.avsc",
            json.dumps(
                record(
                    "Bad",
                    "bank",
                    [{"name": "x", "type": "bank.Money"}],
                    references={"bank.Money": 3},
                )
            ),
            r"refers to bank\.Money v3, which does not exist",
        ),
        (
            "bank/events/Bad.v1.avsc",
            json.dumps(record("Bad", "bank", [{"name": "x", "type": "long", "default": "no"}])),
            r"Bad\.v1\.avsc: invalid Avro schema",
        ),
        (
            "bank/events/Bad.v1.avsc",
            json.dumps(record("Bad", "bank", [], compatibility="SOMETIMES")),
            '"compatibility" must be one of',
        ),
        (
            "bank/events/Deposited.v4.avsc",
            "{}",
            r"bank\.Deposited: versions \[1, 2, 4\] .* \(missing: v3\)",
        ),
        ("Loose.v1.avsc", json.dumps(record("Loose", "", [])), "must live in a context folder"),
    ],
)
def test_a_broken_tree_raises_catalog_error_naming_the_file(
    tmp_path: Path, relative: str, content: str, message: str
) -> None:
    root = copy_tree(tmp_path)
    if relative.endswith("Deposited.v4.avsc"):
        content = (root / "bank/events/Deposited.v2.avsc").read_text()
    write(root, relative, content)
    with pytest.raises(CatalogError, match=message):
        Catalog.load(root)


def test_the_same_version_in_two_folders_is_rejected(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    shutil.copy(root / "bank/events/Deposited.v1.avsc", root / "bank/state/Deposited.v1.avsc")
    with pytest.raises(CatalogError, match=r"bank\.Deposited v1 is also defined in"):
        Catalog.load(root)

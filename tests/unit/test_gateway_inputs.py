"""Small input rules of the gateway that need no broker: Idempotency-Key, timeouts, JSON."""

from __future__ import annotations

import json

import pytest

from producers.gateway.commands import _valid_key
from producers.gateway.params import BadParameter, _reject_constant, parse_seconds


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("3f2c1a9e-8c1d-4d7e-9f00-1b2c3d4e5f60", True),
        ("order 42 / retry", True),  # inner spaces are printable ASCII
        ("k" * 1024, True),
        ("k" * 1025, False),
        ("", False),
        (" padded", False),
        ("tab\there", False),
        ("caf\u00e9", False),  # HTTP header values arrive as Latin-1: ASCII only
    ],
)
def test_an_idempotency_key_is_printable_ascii_within_the_id_limit(key: str, valid: bool) -> None:
    assert _valid_key(key) is valid


def test_timeouts_are_seconds_within_bounds() -> None:
    assert parse_seconds("timeout", "2.5", 60) == 2.5
    for bad in ("0.5", "61", "nan", "inf", "-1", "soon"):
        with pytest.raises(BadParameter, match="'timeout'"):
            parse_seconds("timeout", bad, 60)


def test_nan_and_infinity_are_not_json_numbers() -> None:
    for text in ('{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}'):
        with pytest.raises(ValueError, match="is not a JSON number"):
            json.loads(text, parse_constant=_reject_constant)

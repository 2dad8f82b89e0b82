"""Session fixtures: ONE real Kafka broker and ONE real Postgres for the whole test run.

Fixtures for tests (names are a contract other suites rely on):

- `stack` (session): the session stack's StackState; also exports CQRS_KAFKA_BOOTSTRAP_SERVERS,
  CQRS_POSTGRES_DSN and CQRS_STATE_DIR so subprocess workers reach the same stack.
- `kafka_config` (session): base librdkafka config `{"bootstrap.servers": ...}` (copy it
  before adding keys).
- `ctx_name` (function): a unique bounded-context-like prefix, e.g. `t3_test_name_ab12`,
  so topics `<ctx_name>.events` etc. are private to the test.
- `create_topics` (function): `create_topics({"name": partitions, ...}, config=None)` creates
  the topics and waits until every partition has a leader; returns the names.
- `pg_schema` (function): a fresh Postgres schema (named like ctx_name), dropped afterwards.
- `pg_conn` (function): an autocommit psycopg connection with search_path = pg_schema.
- `pg_dsn_for_schema` (function): a DSN whose options set search_path = pg_schema.

Every test under tests/integration gets the `integration` marker and the session stack.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import sql
from psycopg.conninfo import make_conninfo

from deploy.local.state import StackState
from tests.support.session_stack import SessionStack

INTEGRATION_DIR = Path(__file__).parent / "integration"
CTX_NAME_MAX = 40
_ctx_counter = itertools.count(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _integration_tests_get_the_stack(request: pytest.FixtureRequest) -> None:
    # Integration tests that only run subprocesses still need the stack and its env vars.
    if request.node.get_closest_marker("integration") is not None:
        request.getfixturevalue("stack")


@pytest.fixture(autouse=True)
def _default_metrics_registry_per_test() -> Iterator[None]:
    """Workers run in the test process register their metrics on prometheus-client's default
    registry, as they do in production (one worker per process). Unregister what a test added,
    so the next test's worker (or the metric-name reading) does not collide with it."""
    before = set(REGISTRY._collector_to_names)  # no public listing of collectors
    yield
    for collector in set(REGISTRY._collector_to_names) - before:
        REGISTRY.unregister(collector)


@pytest.fixture(scope="session")
def stack() -> Iterator[StackState]:
    session = SessionStack()
    try:
        yield session.start()
    finally:
        session.close()


@pytest.fixture(scope="session")
def kafka_config(stack: StackState) -> dict[str, Any]:
    return {"bootstrap.servers": stack.bootstrap_servers}


@pytest.fixture
def ctx_name(request: pytest.FixtureRequest) -> str:
    prefix = f"t{next(_ctx_counter)}_"
    suffix = f"_{uuid.uuid4().hex[:4]}"
    words = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
    words = words[: CTX_NAME_MAX - len(prefix) - len(suffix)].rstrip("_")
    return f"{prefix}{words}{suffix}"


@pytest.fixture
def create_topics(
    kafka_config: dict[str, Any],
) -> Callable[..., list[str]]:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka_config)

    def create(topics: Mapping[str, int], config: Mapping[str, str] | None = None) -> list[str]:
        new = [
            NewTopic(
                name, num_partitions=partitions, replication_factor=1, config=dict(config or {})
            )
            for name, partitions in topics.items()
        ]
        for future in admin.create_topics(new, operation_timeout=30).values():
            future.result(60)
        _wait_for_leaders(admin, topics)
        return list(topics)

    return create


def _wait_for_leaders(admin: Any, topics: Mapping[str, int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=10)
        missing = [
            name
            for name, partitions in topics.items()
            if name not in metadata.topics
            or len(metadata.topics[name].partitions) != partitions
            or any(p.leader < 0 for p in metadata.topics[name].partitions.values())
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"topics without leaders after {timeout} s: {missing}")
        time.sleep(0.1)


@pytest.fixture
def pg_schema(stack: StackState, ctx_name: str) -> Iterator[str]:
    schema = ctx_name
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield schema
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
        # A worker a test forgot to stop may still hold locks: fail loudly, do not hang.
        admin.execute("SET lock_timeout = '10s'")
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_dsn_for_schema(stack: StackState, pg_schema: str) -> str:
    return make_conninfo(stack.postgres_dsn, options=f"-csearch_path={pg_schema}")


@pytest.fixture
def pg_conn(pg_dsn_for_schema: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn_for_schema, autocommit=True) as conn:
        yield conn

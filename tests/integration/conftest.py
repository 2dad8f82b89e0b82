"""Fixtures for integration tests that run the pipeline's workers (the rigs themselves are in
tests/support/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from deploy.local.state import StackState
from processors.registry import default_registry
from processors.topic_admin import create_topics
from processors.topics import declared_topics
from sinks.migrate import roles
from tests.support.gateway_rig import GatewayRig, start_gateway, start_secured_gateway
from tests.support.read_side import ReadSideRig
from tests.support.write_side import BankRig


@pytest.fixture
def bank(kafka_config: dict[str, Any], ctx_name: str, tmp_path: Path) -> Iterator[BankRig]:
    create_topics(kafka_config, declared_topics(default_registry().context("bank"), ctx_name))
    rig = BankRig(kafka_config, ctx_name, tmp_path)
    try:
        yield rig
    finally:
        rig.stop_all()


@pytest.fixture
def read_side(bank: BankRig, pg_dsn_for_schema: str, pg_schema: str) -> Iterator[ReadSideRig]:
    rig = ReadSideRig(bank, pg_dsn_for_schema, pg_schema)
    try:
        yield rig
    finally:
        rig.stop_all()


@pytest.fixture(name="pipeline")
def pipeline_fixture(read_side: ReadSideRig) -> ReadSideRig:
    """Processor, sink (after the migration role has migrated) and projector, all ready."""
    read_side.bank.processor()
    read_side.sink()
    read_side.projector()
    return read_side


@pytest.fixture(name="query_role")
def query_role_fixture(stack: StackState, pipeline: ReadSideRig) -> Iterator[tuple[str, str]]:
    """(role, DSN): a login role whose only privileges are those of `<schema>_reader`."""
    reader, _ = roles(pipeline.schema)
    role = f"{pipeline.schema}_gateway"
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(reader), sql.Identifier(role))
        )
    dsn = make_conninfo(stack.postgres_dsn, user=role)
    try:
        yield role, dsn
    finally:
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(name="gateway")
def gateway_fixture(pipeline: ReadSideRig, query_role: tuple[str, str]) -> Iterator[GatewayRig]:
    role, dsn = query_role
    worker, url = start_gateway(pipeline, dsn, "--timeout", "30")
    try:
        yield GatewayRig(pipeline, worker, url, role)
    finally:
        worker.stop()  # before the role is dropped


@pytest.fixture(name="secured_gateway")
def secured_gateway_fixture(
    pipeline: ReadSideRig, query_role: tuple[str, str], tmp_path: Path
) -> Iterator[GatewayRig]:
    """`--auth jwt` with a JWKS file and no rate limit; `token` grants every permission."""
    role, dsn = query_role
    worker, url, key = start_secured_gateway(
        pipeline, dsn, tmp_path, "--timeout", "30", "--rate-limit", "0"
    )
    try:
        yield GatewayRig(pipeline, worker, url, role, token=key.token("ops", roles=["admin"]))
    finally:
        worker.stop()

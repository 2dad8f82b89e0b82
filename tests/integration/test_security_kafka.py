"""Kafka with authentication: a second, small broker of this module's own (the session's
broker stays PLAINTEXT for speed), started by deploy/local's code with a SASL_PLAINTEXT and a
SASL_SSL listener, SCRAM-SHA-512 credentials created when its storage is formatted, and a
throwaway CA made with openssl. Clients are configured from the environment alone, through
processors/settings.py, as the Kubernetes manifests configure the workers. The broker authorizes
with ACLs: the processor's user is a super user; the client's and the projector's users have
the ACLs of the Kubernetes manifests, the shop reactor's those of deploy/k8s/reactor_acls.py."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from prometheus_client import CollectorRegistry

from deploy.k8s.reactor_acls import reactor_acls
from deploy.local import kafka, kafka_jars
from deploy.local.pipeline import WorkerProcess
from deploy.local.processes import free_port
from deploy.local.state import StackState
from processors import settings as env_names
from processors.command_processor import CommandProcessor
from processors.processor_config import ProcessorConfig
from processors.reactor import Reactor, ReactorConfig
from processors.registry import default_registry
from processors.settings import load_settings
from processors.topic_admin import create_topics
from processors.topics import ContextTopics, declared_topics
from producers.command_client import CommandClient
from schemas.codec import default_codec
from schemas.wire import headers as ce
from tests.support.topics import read_until
from tests.support.write_side import movement, open_account, read_events

USER = "cqrs-processor"
CLIENT = "cqrs-client"  # bound by the ACLs of deploy/k8s/base/kafka/users.yaml
REACTOR = "cqrs-shop-reactor"  # bound by deploy/k8s/reactor_acls.py's ACLs
PROJECTOR = "cqrs-projector"  # bound by the ACLs of deploy/k8s/base/kafka/users.yaml
USERS_YAML = (
    Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "kafka" / "users.yaml"
)
PG_PASSWORD = "pg-" + secrets.token_hex(8)


@dataclass
class SecureBroker:
    state: StackState
    password: str
    ca: Path
    client_password: str = ""
    reactor_password: str = ""
    projector_password: str = ""

    def env(self, protocol: str = "SASL_PLAINTEXT", password: str | None = None) -> dict:
        ssl = protocol == "SASL_SSL"
        env = {
            env_names.ENV_BOOTSTRAP: (
                self.state.sasl_ssl_bootstrap_servers if ssl else self.state.sasl_bootstrap_servers
            ),
            env_names.ENV_SECURITY_PROTOCOL: protocol,
            env_names.ENV_SASL_MECHANISM: "SCRAM-SHA-512",
            env_names.ENV_SASL_USERNAME: USER,
            env_names.ENV_SASL_PASSWORD: self.password if password is None else password,
            env_names.ENV_PG_DSN: f"postgresql://cqrs:{PG_PASSWORD}@127.0.0.1:1/cqrs",
        }
        if ssl:
            env[env_names.ENV_SSL_CA] = str(self.ca)
        return env


def make_tls(folder: Path) -> tuple[Path, Path]:
    """A CA, and a broker key and certificate for 127.0.0.1 signed by it, as PEM files."""
    folder.mkdir(parents=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=kafka-cqrs test CA",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key",
        "-out", "broker.csr", "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "broker.pem",
    )  # fmt: skip
    # Kafka's PEM keystore: the private key, then the certificate chain.
    keystore = folder / "keystore.pem"
    keystore.write_text(
        "".join((folder / name).read_text() for name in ("broker.key", "broker.pem", "ca.pem"))
    )
    return folder / "ca.pem", keystore


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    root = tmp_path_factory.mktemp("secure-kafka")
    ca, keystore = make_tls(root / "tls")
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(free_port())
    plain, controller, sasl, sasl_ssl = sorted(ports)
    state = StackState(
        state_dir=str(root),
        started_by="test_security_kafka",
        kafka_version=kafka_jars.kafka_version(),
        kafka_port=plain,
        kafka_controller_port=controller,
        kafka_cluster_id=kafka.new_cluster_id(),
        kafka_dir=str(root / "kafka"),
        kafka_log=str(root / "kafka" / "logs" / "server.log"),
        postgres_port=0,
        postgres_dir="",
        postgres_data_dir="",
        postgres_socket_dir="",
        postgres_log="",
        kafka_sasl_port=sasl,
        kafka_sasl_ssl_port=sasl_ssl,
        kafka_ssl_keystore=str(keystore),
        # The processor's user may do anything; the client's only what its ACLs allow.
        kafka_acl_super_users=[USER],
    )
    password = secrets.token_urlsafe(18)
    client_password = secrets.token_urlsafe(18)
    reactor_password = secrets.token_urlsafe(18)
    projector_password = secrets.token_urlsafe(18)
    saved = os.environ.get(kafka.ENV_KAFKA_HEAP)
    os.environ[kafka.ENV_KAFKA_HEAP] = "-Xms128m -Xmx384m"  # a second JVM on a small machine
    try:
        users = {
            USER: password,
            CLIENT: client_password,
            REACTOR: reactor_password,
            PROJECTOR: projector_password,
        }
        state.kafka_pid = kafka.start(state, scram_users=users)
    finally:
        if saved is None:
            os.environ.pop(kafka.ENV_KAFKA_HEAP, None)
        else:
            os.environ[kafka.ENV_KAFKA_HEAP] = saved
    try:
        yield SecureBroker(
            state, password, ca, client_password, reactor_password, projector_password
        )
    finally:
        kafka.stop(state, timeout=20)


def errors_of(config: dict[str, Any]) -> list[KafkaError]:
    """What a client with `config` reports while trying to talk to the broker."""
    seen: list[KafkaError] = []
    admin = AdminClient({**config, "error_cb": seen.append, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=8)
    admin.poll(1)  # error callbacks are served by poll()
    return seen


def test_the_write_side_runs_over_sasl_scram_configured_from_env_alone(
    secure_kafka: SecureBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    env = secure_kafka.env()
    settings = load_settings(env)
    assert settings.kafka.security_protocol == "SASL_PLAINTEXT"
    config = settings.kafka.client_config()
    assert config["sasl.mechanism"] == "SCRAM-SHA-512" and config["sasl.username"] == USER
    prefix = f"sasl_{uuid.uuid4().hex[:6]}"
    create_topics(config, declared_topics(default_registry().context("bank"), prefix))

    for name, value in env.items():  # the worker gets the same variables, nothing else
        monkeypatch.setenv(name, value)
    worker = WorkerProcess(
        "processor",
        ["--prefix", prefix, "--instance-id", "sasl-0", "--log-level", "DEBUG"],
        tmp_path / "processor-sasl.log",
    ).start()
    try:
        worker.wait_ready(90)
        with CommandClient(config, "bank", topic_prefix=prefix) as client:
            assert client.send("bank.OpenAccount", open_account("s-1")).result(60).accepted
            deposit = client.send("bank.Deposit", movement("s-1", 42)).result(60)
    finally:
        assert worker.stop() == 0
    assert deposit.accepted and deposit.version == 2
    events = read_events(config, ContextTopics(prefix).events)  # consumed over SASL too
    assert [(e.type, e.version) for e in events] == [
        ("bank.AccountOpened", 1),
        ("bank.Deposited", 2),
    ]
    log = worker.log_path.read_text(errors="replace")
    assert "assigned [0, 1, 2, 3, 4, 5]" in log  # the log is there (at DEBUG level)
    assert secure_kafka.password not in log
    assert PG_PASSWORD not in log


def test_a_wrong_password_is_refused_with_a_clear_error(
    secure_kafka: SecureBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    wrong = "not-" + secure_kafka.password
    config = load_settings(secure_kafka.env(password=wrong)).kafka.client_config()
    seen = errors_of(config)
    auth = [e for e in seen if e.code() == KafkaError._AUTHENTICATION]
    assert auth, seen
    text = auth[0].str()
    print(f"\nwrong password: {text}")
    assert "SASL authentication error" in text and "SCRAM-SHA-512" in text, text
    assert wrong not in text and secure_kafka.password not in text
    # The PLAINTEXT listener of the same broker is not how a SASL client gets in either.
    plain = {**config, "bootstrap.servers": secure_kafka.state.bootstrap_servers}
    assert errors_of(plain)

    # In process: the refusal is named in the exit message, and both clients are gone
    # before run() returns. A Consumer left to interpreter exit may segfault there (-11).
    processor = CommandProcessor(
        ProcessorConfig(context="bank", kafka=config, instance_id="wrong-in-process"),
        default_registry(),
        CollectorRegistry(),  # the session may have built a processor already
    )
    with pytest.raises(SystemExit, match="SASL authentication error") as stopped:
        processor.run()
    assert wrong not in str(stopped.value)
    with pytest.raises(RuntimeError, match="closed"):
        processor._consumer.assignment()
    assert not hasattr(processor, "_producer")

    # A processor with the wrong password stops, saying why, without printing either one.
    for name, value in secure_kafka.env(password=wrong).items():
        monkeypatch.setenv(name, value)
    worker = WorkerProcess("processor", ["--instance-id", "wrong-0"], tmp_path / "wrong.log")
    worker.start()
    assert worker.proc is not None
    assert worker.proc.wait(90) == 1
    log = worker.log_path.read_text(errors="replace")
    assert "SASL authentication error" in log
    assert "command processor stopped: cannot start Kafka transactions" in log
    assert "Traceback" not in log
    assert wrong not in log and secure_kafka.password not in log and PG_PASSWORD not in log


def test_sasl_ssl_with_the_ca_from_env_works_and_without_it_fails_the_handshake(
    secure_kafka: SecureBroker,
):
    settings = load_settings(secure_kafka.env("SASL_SSL"))
    config = settings.kafka.client_config()
    assert config["security.protocol"] == "SASL_SSL"
    assert config["ssl.ca.location"] == str(secure_kafka.ca)
    topic = f"tls_{uuid.uuid4().hex[:6]}"
    create_topics(config, [declared_topics(default_registry().context("bank"), topic)[0]])
    producer = Producer({**config, "enable.idempotence": True})
    producer.produce(f"{topic}.commands", b"over tls", b"k", partition=0)
    assert producer.flush(30) == 0
    consumer = Consumer({**config, "group.id": f"{topic}.check", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([f"{topic}.commands"])
        got = None
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got = msg.value()
                break
    finally:
        consumer.close()
    assert got == b"over tls"

    untrusted = {k: v for k, v in config.items() if k != "ssl.ca.location"}
    seen = errors_of(untrusted)
    print(f"\nno CA: {seen[0].str() if seen else None}")
    assert any(
        e.code() == KafkaError._SSL or "certificate verify failed" in e.str() for e in seen
    ), seen


_RESOURCE_TYPES = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactionalId": ResourceType.TRANSACTIONAL_ID,
    "cluster": ResourceType.BROKER,
}


def manifest_acls(user: str) -> list[AclBinding]:
    """The ACLs deploy/k8s/base/kafka/users.yaml gives `user`, as the broker's bindings."""
    docs = [d for d in yaml.safe_load_all(USERS_YAML.read_text()) if d]
    (doc,) = [d for d in docs if d["metadata"]["name"] == user]
    return bindings_of(user, doc["spec"]["authorization"]["acls"])


def bindings_of(user: str, acls: list[dict[str, Any]]) -> list[AclBinding]:
    """Strimzi's ACL entries as the broker's bindings."""
    bindings = []
    for acl in acls:
        res = acl["resource"]
        pattern = (
            ResourcePatternType.PREFIXED
            if res.get("patternType") == "prefix"
            else (ResourcePatternType.LITERAL)
        )
        permission = AclPermissionType[acl.get("type", "allow").upper()]
        for operation in acl["operations"]:
            bindings.append(
                AclBinding(
                    _RESOURCE_TYPES[res["type"]],
                    res.get("name", "kafka-cluster"),
                    pattern,
                    f"User:{user}",
                    "*",
                    AclOperation[re.sub(r"(?<!^)(?=[A-Z])", "_", operation).upper()],
                    permission,
                )
            )
    return bindings


def apply_acls(admin_config: dict[str, Any], wanted: list[AclBinding]) -> None:
    admin = AdminClient(admin_config)
    everything = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
        AclPermissionType.ANY,
    )  # fmt: skip
    before = len(admin.describe_acls(everything).result(10))
    for future in admin.create_acls(wanted).values():
        future.result(30)
    # The controller commits them at once; the broker's authorizer has them a moment later.
    deadline = time.monotonic() + 60
    while len(admin.describe_acls(everything).result(10)) < before + len(wanted):
        assert time.monotonic() < deadline, "the broker did not apply the ACLs in 60 s"
        time.sleep(0.2)


def as_user(secure_kafka: SecureBroker, user: str, password: str) -> dict[str, Any]:
    return {
        **load_settings(secure_kafka.env()).kafka.client_config(),
        "sasl.username": user,
        "sasl.password": password,
    }


def produce_each(config: dict[str, Any], topics: list[str], body: bytes) -> dict[str, Any]:
    """One record to each topic; each topic's delivery error (None: written)."""
    delivered: dict[str, KafkaError | None] = {}
    producer = Producer({**config, "partitioner": "murmur2_random"})
    for topic in topics:
        producer.produce(
            topic,
            body,
            b"t-1",
            on_delivery=lambda err, msg, topic=topic: delivered.__setitem__(topic, err),
        )
    assert producer.flush(60) == 0
    return delivered


def test_the_client_principal_cannot_write_internal_commands(secure_kafka: SecureBroker):
    """The manifest's ACLs for cqrs-client, on a real broker with an ACL authorizer: it may
    write the public commands topic, and its write to the internal one is refused."""
    admin_config = {"bootstrap.servers": secure_kafka.state.bootstrap_servers}  # super user
    create_topics(admin_config, declared_topics(default_registry().context("bank")))
    apply_acls(admin_config, manifest_acls(CLIENT))
    client = as_user(secure_kafka, CLIENT, secure_kafka.client_password)
    topics = ContextTopics("bank")
    body = default_codec().encode(
        "bank.FailTransfer", {"transfer_id": "t-1", "reason": "forged", "compensated": True}
    )
    delivered = produce_each(client, [topics.commands, topics.internal_commands], body)
    # The public topic takes it (the processor then refuses the type: internal_command).
    assert delivered[topics.commands] is None
    refused = delivered[topics.internal_commands]
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Nothing reached the internal topic: read as the super user.
    checker = Consumer({**admin_config, "group.id": f"check-{uuid.uuid4().hex[:6]}"})
    try:
        ends = [
            checker.get_watermark_offsets(TopicPartition(topics.internal_commands, p), 10)[1]
            for p in range(default_registry().context("bank").partitions)
        ]
    finally:
        checker.close()
    assert ends == [0] * len(ends)


def _for_shop(binding: AclBinding) -> AclBinding:
    """A manifest binding of bank's resources, for the same resource of shop."""
    name = binding.name.replace("bank.", "shop.", 1) if binding.name else binding.name
    return AclBinding(
        binding.restype, name, binding.resource_pattern_type, binding.principal,
        binding.host, binding.operation, binding.permission_type,
    )  # fmt: skip


def test_only_the_reactor_principal_writes_shop_internal_commands(secure_kafka: SecureBroker):
    """shop's reactor as a principal of its own, with deploy/k8s/reactor_acls.py's ACLs, on a
    real broker with an ACL authorizer: it reacts to bank.TransferCompleted by writing
    SettlePayment to shop.internal-commands (in a transaction), and may not write the public
    commands or any events topic; a client with the manifests' client ACLs (for shop's topics)
    writes shop.commands and is refused on shop.internal-commands."""
    admin_config = {"bootstrap.servers": secure_kafka.state.bootstrap_servers}  # super user
    for name in ("bank", "shop"):
        create_topics(admin_config, declared_topics(default_registry().context(name)))
    acls = reactor_acls(ReactorConfig("shop", kafka={}))
    apply_acls(
        admin_config,
        bindings_of(REACTOR, acls) + [_for_shop(b) for b in manifest_acls(CLIENT)],
    )
    shop, bank = ContextTopics("shop"), ContextTopics("bank")
    body = default_codec().encode(
        "shop.SettlePayment", {"transfer_id": "t-9", "outcome": "COMPLETED", "reason": ""}
    )
    client = as_user(secure_kafka, CLIENT, secure_kafka.client_password)
    delivered = produce_each(client, [shop.commands, shop.internal_commands], body)
    assert delivered[shop.commands] is None
    refused = delivered[shop.internal_commands]
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    reactor_kafka = as_user(secure_kafka, REACTOR, secure_kafka.reactor_password)
    delivered = produce_each(reactor_kafka, [shop.commands, shop.events, bank.events], body)
    assert {t: e and e.code() for t, e in delivered.items()} == {
        t: KafkaError.TOPIC_AUTHORIZATION_FAILED for t in (shop.commands, shop.events, bank.events)
    }
    # The reactor itself, as that principal, does its work.
    reactor = Reactor(
        ReactorConfig("shop", kafka=reactor_kafka, instance_id="acl-0"), default_registry()
    )
    running = threading.Thread(target=reactor.run, name="reactor", daemon=True)
    running.start()
    try:
        producer = Producer(admin_config)
        headers = ce.CloudEventHeaders(
            id="e-t-9", type="bank.TransferCompleted", source="/bank/command-processor",
            subject="t-9", time=ce.now(), correlation_id="c-t-9", causation_id="c-t-9",
        ).to_kafka()  # fmt: skip
        completed = default_codec().encode("bank.TransferCompleted", {"transfer_id": "t-9"})
        producer.produce(bank.events, completed, b"t-9", headers=headers)
        assert producer.flush(30) == 0

        def settle_ids(messages: list[Any]) -> list[str]:
            return [dict(m.headers())[ce.ID].decode() for m in messages]

        issued = read_until(
            admin_config,
            shop.internal_commands,
            lambda ms: "pm:payment:t-9:settle" in settle_ids(ms),
            partitions=default_registry().context("shop").partitions,
            timeout=90,  # the reactor joins its group and starts its producer first
        )
        assert settle_ids(issued) == ["pm:payment:t-9:settle"]
    finally:
        reactor.stop()
        running.join(30)
    assert not running.is_alive()


def test_the_projector_principal_projects_and_restores_with_the_manifests_acls(
    secure_kafka: SecureBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """The projector as cqrs-projector, with only the ACLs of deploy/k8s/base/kafka/users.yaml,
    on a real broker with an ACL authorizer: it projects bank's events, and, restarted
    without its data folder (a pod without its volume), it restores its tables from the
    projection topics (their changelogs) and goes on from the restored rows. It may not
    append to the event store."""
    admin_config = {"bootstrap.servers": secure_kafka.state.bootstrap_servers}  # super user
    bank = default_registry().context("bank")
    create_topics(admin_config, declared_topics(bank))
    apply_acls(admin_config, manifest_acls(PROJECTOR))
    topics = ContextTopics("bank")
    as_projector = as_user(secure_kafka, PROJECTOR, secure_kafka.projector_password)
    refused = produce_each(as_projector, [topics.events], b"forged")[topics.events]
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    for name, value in secure_kafka.env().items():  # the super user's, for the processor
        monkeypatch.setenv(name, value)
    processor = WorkerProcess(
        "processor", ["--instance-id", "acl-p"], tmp_path / "processor.log"
    ).start()
    projector_env = {
        env_names.ENV_SASL_USERNAME: PROJECTOR,
        env_names.ENV_SASL_PASSWORD: secure_kafka.projector_password,
    }
    data = tmp_path / "projector-data"

    def projector(run: int) -> WorkerProcess:
        args = ["--instance-id", "acl-r", "--data-dir", str(data), "--session-timeout", "6"]
        log = tmp_path / f"projector-{run}.log"
        return WorkerProcess("projector", args, log, env=projector_env).start()

    codec = default_codec()

    def balance_reaches(amount: int, worker: WorkerProcess) -> Any:
        def done(messages: list[Any]) -> bool:
            worker.check()  # a projector that stopped (e.g. refused a read) fails at once
            rows = [
                codec.decode(m.value())
                for m in messages
                if m.key() == b"acl-1" and m.value() is not None
            ]
            return bool(rows) and rows[-1]["balance"] == amount

        return done

    kafka_config = load_settings(secure_kafka.env()).kafka.client_config()

    def wait_for(topic: str, done: Any) -> None:
        read_until(admin_config, topic, done, partitions=bank.partitions, timeout=120)

    accounts = topics.projection("accounts")
    workers = [processor, projector(1)]
    try:
        processor.wait_ready(90)
        with CommandClient(kafka_config, "bank") as client:
            assert client.send("bank.OpenAccount", open_account("acl-1")).result(60).accepted
            assert client.send("bank.Deposit", movement("acl-1", 40)).result(60).accepted
            wait_for(accounts, balance_reaches(40, workers[1]))
            assert workers[1].stop() == 0
            shutil.rmtree(data)
            workers.append(projector(2))
            assert client.send("bank.Deposit", movement("acl-1", 2)).result(60).accepted
            # The deposit's row exists only if the table was restored: without the row, a
            # Deposited is refused as coming before AccountOpened. So the projector read its
            # projection topic back under its own ACLs.
            wait_for(accounts, balance_reaches(42, workers[2]))
    finally:
        for worker in workers:
            if worker.alive:
                worker.stop()
    for run in (1, 2):
        log = (tmp_path / f"projector-{run}.log").read_text(errors="replace")
        assert "AUTHORIZATION_FAILED" not in log and "Authorization" not in log, log[-3000:]
        assert secure_kafka.projector_password not in log
    assert "restored table accounts" in (tmp_path / "projector-2.log").read_text()

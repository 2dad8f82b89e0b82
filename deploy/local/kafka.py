"""A single-node Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1.

Its configuration favours a fast, predictable local stack: no auto-created topics,
replication factor 1 for the internal topics, and few partitions for
`__consumer_offsets` and `__transaction_state` so the first group join and the
first transaction do not wait for fifty partitions to come online.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from deploy.local import binaries, kafka_jars
from deploy.local.errors import StackError
from deploy.local.processes import is_our_process, kill_process, stop_process, tail, wait_port_free
from deploy.local.state import StackState

ENV_KAFKA_HEAP = "CQRS_KAFKA_HEAP_OPTS"
DEFAULT_HEAP = "-Xms256m -Xmx768m"
START_TIMEOUT = 120.0
INTERNAL_TOPIC_PARTITIONS = 8
SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"

_quiet = logging.getLogger("deploy.local.kafka.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64 without padding."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # the storage tool would read it as an option
            return text


def scram_credential(
    name: str, password: str, *, iterations: int = SCRAM_ITERATIONS, salt: bytes | None = None
) -> str:
    """A `--add-scram` argument for `kafka-storage format` (KRaft keeps SCRAM credentials in
    the metadata log). Salted and hashed here, as RFC 5802 does, so the password itself
    never appears on a command line or in the process list."""
    if not re.fullmatch(r"[A-Za-z0-9._@-]+", name):
        raise StackError(f"SCRAM user name {name!r}: use letters, digits and . _ @ - only")
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return (
        f"{SCRAM_MECHANISM}=[name={name},iterations={iterations},"
        f'salt="{b64(salt).decode()}",saltedpassword="{b64(salted).decode()}"]'
    )


def _listeners(state: StackState) -> dict[str, str]:
    """Listener settings: PLAINTEXT always, SASL_PLAINTEXT and SASL_SSL when ports are set;
    an ACL authorizer when the state names super users."""
    host = "127.0.0.1"
    served = {"PLAINTEXT": state.kafka_port}
    if state.kafka_sasl_port:
        served["SASL_PLAINTEXT"] = state.kafka_sasl_port
    if state.kafka_sasl_ssl_port:
        if not state.kafka_ssl_keystore:
            raise StackError("a SASL_SSL listener needs kafka_ssl_keystore (a PEM key and cert)")
        served["SASL_SSL"] = state.kafka_sasl_ssl_port
    advertised = ",".join(f"{name}://{host}:{port}" for name, port in served.items())
    settings = {
        "listeners": f"{advertised},CONTROLLER://{host}:{state.kafka_controller_port}",
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(
            ["CONTROLLER:PLAINTEXT", *(f"{name}:{name}" for name in served)]
        ),
    }
    secured = [name for name in served if name.startswith("SASL")]
    if secured:
        settings["sasl.enabled.mechanisms"] = SCRAM_MECHANISM
        for name in secured:
            prefix = f"listener.name.{name.lower()}.{SCRAM_MECHANISM.lower()}"
            settings[f"{prefix}.sasl.jaas.config"] = _SCRAM_LOGIN
    if state.kafka_sasl_ssl_port:
        settings["ssl.keystore.type"] = "PEM"
        settings["ssl.keystore.location"] = str(state.kafka_ssl_keystore)
    if state.kafka_acl_super_users is not None:
        # The broker's own traffic (PLAINTEXT, the controller) is User:ANONYMOUS.
        supers = ["ANONYMOUS", *state.kafka_acl_super_users]
        settings["authorizer.class.name"] = STANDARD_AUTHORIZER
        settings["super.users"] = ";".join(f"User:{name}" for name in supers)
        settings["allow.everyone.if.no.acl.found"] = "false"
    return settings


def server_properties(state: StackState) -> str:
    data_dir = Path(state.kafka_dir) / "data"
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{state.kafka_controller_port}",
        **_listeners(state),
        "log.dirs": str(data_dir),
        # The project creates every topic with explicit partitions and configs.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": str(INTERNAL_TOPIC_PARTITIONS),
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": str(INTERNAL_TOPIC_PARTITIONS),
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests join and leave groups constantly; the default 3 s delay would add up.
        "group.initial.rebalance.delay.ms": "0",
        # After a kill -9 the restarted broker waits for its old registration to expire
        # (default 9 s); fault-injection tests restart the broker often.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def log4j2_properties(log_file: str) -> str:
    return f"""\
status = warn
name = kafka-cqrs-local
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def jmx_options(port: int | None) -> list[str]:
    """JVM options that serve the broker's MBeans over JMX/RMI on 127.0.0.1:`port` only (no
    authentication, no TLS: loopback only, for local measurement); none when `port` is None.
    The RMI registry and the connector share the one port. The JVM also starts its local
    connector (the attach API's) on a free port; `local.only` makes it refuse every
    connection that does not come from this machine."""
    if not port:
        return []
    return [
        f"-Dcom.sun.management.jmxremote.port={port}",
        f"-Dcom.sun.management.jmxremote.rmi.port={port}",
        "-Dcom.sun.management.jmxremote.host=127.0.0.1",
        "-Dcom.sun.management.jmxremote.local.only=true",
        "-Dcom.sun.management.jmxremote.authenticate=false",
        "-Dcom.sun.management.jmxremote.ssl=false",
        "-Djava.rmi.server.hostname=127.0.0.1",
    ]


def prepare(state: StackState, scram_users: Mapping[str, str] | None = None) -> None:
    """Write the broker's config and format its storage, once per state folder; the storage
    gets a SCRAM-SHA-512 credential for each of `scram_users` (name -> password)."""
    kafka_dir = Path(state.kafka_dir)
    (kafka_dir / "data").mkdir(parents=True, exist_ok=True)
    Path(state.kafka_log).parent.mkdir(parents=True, exist_ok=True)
    Path(state.kafka_config_file).write_text(server_properties(state))
    (kafka_dir / "log4j2.properties").write_text(log4j2_properties(state.kafka_log))
    if (kafka_dir / "data" / "meta.properties").exists():
        return
    cmd = [
        str(binaries.java()),
        "-Xmx256m",
        f"-Dlog4j2.configurationFile={kafka_dir / 'log4j2.properties'}",
        "-cp",
        f"{kafka_jars.jars_dir()}/*",
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        state.kafka_cluster_id,
        "--config",
        state.kafka_config_file,
    ]
    for name, password in (scram_users or {}).items():
        cmd += ["--add-scram", scram_credential(name, password)]
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise StackError(f"formatting the Kafka storage failed (exit {done.returncode}):\n{output}")


def start(
    state: StackState,
    timeout: float = START_TIMEOUT,
    on_spawn: Callable[[int], None] | None = None,
    scram_users: Mapping[str, str] | None = None,
) -> int:
    """Start the broker on the recorded ports and data; return its PID once it serves metadata.

    `on_spawn(pid)` runs as soon as the JVM exists, so the PID can be recorded before the
    wait: an interrupted start then still leaves `down` something to stop. `scram_users`
    are created when the storage is formatted, i.e. on the first start of a state folder.
    """
    prepare(state, scram_users)
    ports = (state.kafka_port, state.kafka_controller_port)
    optional = (state.kafka_sasl_port, state.kafka_sasl_ssl_port, state.kafka_jmx_port)
    ports += tuple(p for p in optional if p)
    for port in ports:
        if not wait_port_free(port, 15.0):
            raise StackError(
                f"cannot start Kafka: port {port} on 127.0.0.1 is taken by another program "
                f"(run `cqrsctl down` to start afresh on new ports)"
            )
    kafka_dir = Path(state.kafka_dir)
    cmd = [
        str(binaries.java()),
        *(os.environ.get(ENV_KAFKA_HEAP) or DEFAULT_HEAP).split(),
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        *jmx_options(state.kafka_jmx_port),
        f"-Dlog4j2.configurationFile={kafka_dir / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={Path(state.kafka_log).parent}",
        "-cp",
        f"{kafka_jars.jars_dir()}/*",
        "kafka.Kafka",
        state.kafka_config_file,
    ]
    console = kafka_dir / "console.log"
    with open(console, "ab") as out:
        # A session of its own: Ctrl-C in the terminal must not reach the broker; we stop it.
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=kafka_dir,
            start_new_session=True,
        )
    if on_spawn is not None:
        on_spawn(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(
                f"Kafka exited during start-up (exit {proc.returncode}); "
                f"last lines of its logs:\n{_log_tails(state)}"
            )
        if healthy(state.bootstrap_servers, timeout=1.0):
            return proc.pid
        time.sleep(0.2)
    kill_process(proc.pid, state.kafka_config_file)
    proc.wait()
    raise StackError(
        f"Kafka did not answer metadata requests on {state.bootstrap_servers} within "
        f"{timeout:.0f} s; last lines of its logs:\n{_log_tails(state)}"
    )


def _log_tails(state: StackState) -> str:
    parts = []
    for path in (state.kafka_log, str(Path(state.kafka_dir) / "console.log")):
        text = tail(path, 20)
        if text:
            parts.append(f"--- {path}\n{text}")
    return "\n".join(parts) or "(no log output)"


def healthy(bootstrap_servers: str, timeout: float = 3.0) -> bool:
    """True when a broker answers a metadata request and lists itself."""
    from confluent_kafka.admin import AdminClient

    client = AdminClient({"bootstrap.servers": bootstrap_servers, "logger": _quiet})
    try:
        metadata = client.list_topics(timeout=timeout)
    except Exception:
        return False
    return len(metadata.brokers) > 0


def is_running(state: StackState) -> bool:
    return is_our_process(state.kafka_pid, state.kafka_config_file)


def stop(state: StackState, *, kill: bool = False, timeout: float = 30.0) -> bool:
    """Stop the broker: SIGTERM for a controlled shutdown, SIGKILL after `timeout` (or at once)."""
    if kill:
        return kill_process(state.kafka_pid, state.kafka_config_file)
    return stop_process(state.kafka_pid, state.kafka_config_file, timeout=timeout)

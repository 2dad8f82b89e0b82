"""Decide whether a NetworkPolicy set lets a connection through, offline.

Kubernetes' semantics, for TCP/UDP connections between pods of known labels and
namespaces, and to endpoints outside the cluster (`External`, matched by `ipBlock` only):
a pod selected by no policy of a direction is open in that direction; once any policy of
a direction selects it, only what one of those policies' rules allows gets through. A
connection needs the source's egress and the destination's ingress. Named ports resolve
against the destination's container ports.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)  # container port name -> number


@dataclass(frozen=True)
class External:
    """An endpoint outside the cluster (the API server, an object store)."""

    ip: str


Endpoint = Pod | External


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) against labels."""
    if selector is None:
        return False
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, External):
            return False
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(c) for c in block.get("except", [])
        )
    if isinstance(other, External):
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], _namespace_labels(other.namespace)):
            return False
    elif other.namespace != policy_ns:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], other.labels)


def _port_matches(
    rule_ports: list[dict[str, Any]] | None, dst: Endpoint, port: int, proto: str
) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != proto:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, str):
            want = dst.ports.get(want) if isinstance(dst, Pod) else None
        if want is not None and (want == port or want <= port <= p.get("endPort", want)):
            return True
    return False


def _direction_allows(
    policies: list[dict[str, Any]],
    pod: Pod,
    direction: str,
    other: Endpoint,
    dst: Endpoint,
    port: int,
    proto: str,
) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace", pod.namespace) == pod.namespace
        and selects(p["spec"]["podSelector"], pod.labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        ns = policy["metadata"].get("namespace", pod.namespace)
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(peer, ns, other) for peer in peers)) and (
                _port_matches(rule.get("ports"), dst, port, proto)
            ):
                return True
    return False


def allowed(
    policies: list[dict[str, Any]], src: Endpoint, dst: Endpoint, port: int, proto: str = "TCP"
) -> bool:
    """Whether `src` may open a connection to `dst` on `port`."""
    egress = not isinstance(src, Pod) or _direction_allows(
        policies, src, "Egress", dst, dst, port, proto
    )
    ingress = not isinstance(dst, Pod) or _direction_allows(
        policies, dst, "Ingress", src, dst, port, proto
    )
    return egress and ingress

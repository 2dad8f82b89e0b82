"""Who is asking, and what they may do: bearer tokens (JWT) checked against a JWKS, and a
policy that maps a token's scopes or roles to permissions.

Permissions are `command:<type>` (e.g. `command:bank.Deposit`) and `read:<read model>`
(e.g. `read:accounts`, `read:event_log`); a policy entry may use shell-style wildcards
(`command:bank.*`, `read:*`, `*`). Anything the policy does not grant is denied.

Signatures are verified by PyJWT with asymmetric algorithms only (RSA, RSA-PSS, ECDSA,
EdDSA); a JWKS with a symmetric (`oct`) key is refused when it is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import jwt

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_GRANT_CLAIMS = ("scope", "scp", "roles")
ANONYMOUS_NAME = "anonymous"


class PolicyError(ValueError):
    """The policy or JWKS configuration cannot be used (a start-up error)."""


class Unauthenticated(Exception):
    """No usable token (401). `error` is the RFC 6750 error code, or None when no token
    was sent at all."""

    def __init__(self, message: str, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.error = error


class VerifierUnavailable(RuntimeError):
    """The JWKS could not be fetched, so no token can be checked right now (503)."""


@dataclass(frozen=True)
class Principal:
    name: str
    grants: frozenset[str]  # permission patterns

    def may(self, permission: str) -> bool:
        return any(fnmatchcase(permission, pattern) for pattern in self.grants)


ANONYMOUS = Principal(ANONYMOUS_NAME, frozenset({"*"}))


@dataclass(frozen=True)
class Policy:
    """Scope or role name -> permission patterns; `claims` are the token claims whose
    values are looked up (a space-separated string or a list of strings)."""

    roles: Mapping[str, frozenset[str]]
    claims: tuple[str, ...] = DEFAULT_GRANT_CLAIMS

    @classmethod
    def from_json(cls, data: Any, where: str = "policy") -> Policy:
        if not isinstance(data, Mapping) or not isinstance(data.get("roles"), Mapping):
            raise PolicyError(f'{where}: expected a JSON object with "roles": {{name: [...]}}')
        roles: dict[str, frozenset[str]] = {}
        for name, grants in data["roles"].items():
            if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
                raise PolicyError(f"{where}: roles.{name} must be a list of permission strings")
            for grant in grants:
                if grant != "*" and not grant.startswith(("command:", "read:")):
                    raise PolicyError(
                        f"{where}: roles.{name}: {grant!r} is not a permission "
                        "(command:<type>, read:<read model>, or *)"
                    )
            roles[str(name)] = frozenset(grants)
        claims = data.get("claims", list(DEFAULT_GRANT_CLAIMS))
        if not isinstance(claims, list) or not all(isinstance(c, str) for c in claims):
            raise PolicyError(f"{where}: claims must be a list of claim names")
        return cls(roles, tuple(claims))

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise PolicyError(f"policy {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise PolicyError(f"policy {path}: not valid JSON: {exc}") from None
        return cls.from_json(data, f"policy {path}")

    def grants_for(self, claims: Mapping[str, Any]) -> frozenset[str]:
        out: set[str] = set()
        for name in _names(claims, self.claims):
            out |= self.roles.get(name, frozenset())
        return frozenset(out)


def _names(claims: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    names: list[str] = []
    for key in keys:
        value = claims.get(key)
        if isinstance(value, str):
            names += value.split()
        elif isinstance(value, list):
            names += [v for v in value if isinstance(v, str)]
    return names


class JwksSource:
    """Signing keys by key id, from a file read once or a URL (PyJWT's `PyJWKClient`,
    which caches the set and fetches it again when a token names an unknown key id)."""

    def __init__(self, *, url: str | None = None, file: str | Path | None = None) -> None:
        if (url is None) == (file is None):
            raise PolicyError("give exactly one of --jwks-url and --jwks-file")
        self.url = url
        self._client = jwt.PyJWKClient(url, cache_keys=True, lifespan=300) if url else None
        self._keys: dict[str | None, jwt.PyJWK] = {}
        if file is not None:
            try:
                keyset = jwt.PyJWKSet.from_json(Path(file).read_text())
            except OSError as exc:
                raise PolicyError(f"JWKS {file}: {exc.strerror or exc}") from None
            except jwt.PyJWTError as exc:
                raise PolicyError(f"JWKS {file}: {exc}") from None
            for key in keyset.keys:
                _check_algorithm(key, f"JWKS {file}")
                self._keys[key.key_id] = key

    def key_for(self, token: str) -> jwt.PyJWK:
        if self._client is not None:
            try:
                key = self._client.get_signing_key_from_jwt(token)
            except jwt.PyJWKClientConnectionError as exc:
                raise VerifierUnavailable(f"cannot fetch the JWKS from {self.url}: {exc}") from None
            except jwt.PyJWKClientError:
                raise Unauthenticated("the token's signing key is not in the JWKS") from None
            except jwt.DecodeError:
                raise Unauthenticated("the token is not a well-formed JWT") from None
            _check_algorithm(key, "JWKS")
            return key
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise Unauthenticated("the token is not a well-formed JWT") from None
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise Unauthenticated("the token's signing key is not in the JWKS")
        return key


def _check_algorithm(key: jwt.PyJWK, where: str) -> None:
    if key.algorithm_name not in ASYMMETRIC_ALGORITHMS:
        raise PolicyError(
            f"{where}: key {key.key_id!r} uses {key.algorithm_name}; only asymmetric "
            f"algorithms are accepted ({', '.join(sorted(ASYMMETRIC_ALGORITHMS))})"
        )


class JwtVerifier:
    """A bearer token -> its Principal, or Unauthenticated saying what is wrong with it."""

    def __init__(
        self,
        jwks: JwksSource,
        policy: Policy,
        *,
        issuer: str,
        audience: str,
        leeway_s: float = 30.0,
        principal_claim: str = "sub",
    ) -> None:
        self.jwks = jwks
        self.policy = policy
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.principal_claim = principal_claim

    def verify(self, token: str) -> Principal:
        """Blocking when the JWKS comes from a URL (a fetch on an unknown key id)."""
        key = self.jwks.key_for(token)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud", self.principal_claim]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(f"the token is not for this audience ({self.audience})") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(
                f"the token is not from the trusted issuer ({self.issuer})"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise Unauthenticated("the token is not a valid JWT") from None
        name = claims.get(self.principal_claim)
        if not isinstance(name, str) or not name:
            raise Unauthenticated(f"the token's {self.principal_claim!r} claim is not a string")
        return Principal(name, self.policy.grants_for(claims))


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header (RFC 6750)."""
    if not authorization:
        raise Unauthenticated("no bearer token: send Authorization: Bearer <token>", error=None)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header is not 'Bearer <token>'", "invalid_request")
    return token.strip()

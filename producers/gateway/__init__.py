"""The HTTP gateway: commands and queries over HTTP in front of the Kafka pipeline.

`POST /commands/{type}` validates a JSON command against its Avro schema and produces it
through the command client; `GET /aggregates/...` and `GET /projections/...` read the
Postgres read models with the read-only role. The OpenAPI document is generated from the
same Avro schemas the pipeline uses (producers/gateway/openapi.py). See docs/gateway.md.
"""

from producers.gateway.app import create_app
from producers.gateway.config import GatewayConfig

__all__ = ["GatewayConfig", "create_app"]

"""The wire contract: Avro schemas (`<context>/<kind>/<Name>.v<N>.avsc`) and the code around them.

- `schemas.catalog`: load, fingerprint and look up every schema; validate records.
- `schemas.codec`: Avro single-object encoding and decoding with schema resolution.
- `schemas.wire`: headers, keys, size rules, progress headers and dead letters on Kafka.
- `schemas.compatibility`: Avro resolution rules and the catalog-wide compatibility check.
- `schemas.upcasters`: record migrations for changes that resolution cannot express.

See docs/wire-format.md for the contract itself.
"""

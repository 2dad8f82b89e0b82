"""The peer of the benchmark: the bank account rules written with the Python `eventsourcing`
library (9.5) in its documented style, persisted in Postgres, with a Postgres read model
kept up to date by the library's projection runner."""

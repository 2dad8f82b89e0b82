"""Fixtures for integration tests that run the pipeline's workers."""

from tests.integration.read_side import read_side  # noqa: F401 - a fixture, used by name
from tests.integration.write_side import bank  # noqa: F401 - a fixture, used by name

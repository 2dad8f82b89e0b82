"""Helpers shared by the test suites (session stack, topic reading)."""

"""Helpers shared by the test suites: the session stack, topic reading, the write-side,
read-side and gateway rigs, the CLI runner, and the fault run (faults/)."""

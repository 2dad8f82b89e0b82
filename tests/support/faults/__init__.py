"""The fault run's rigs: the supervised pipeline, the load, the invariants and the report."""

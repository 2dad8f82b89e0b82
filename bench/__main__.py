"""`python -m bench`: ours and the peer side by side (bench/run.py)."""

from bench.run import cli

cli()

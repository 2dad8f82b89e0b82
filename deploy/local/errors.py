"""The one error type of the local stack: its message is meant to be shown to a person as is."""

from __future__ import annotations


class StackError(RuntimeError):
    """The local stack could not be started, checked or stopped; the message says why."""

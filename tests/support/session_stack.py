"""The test session's own local stack: one broker and one Postgres in a fresh temp folder.

It never touches the stack of `cqrsctl up` (that one lives in $CQRS_STATE_DIR or
/var/tmp/kafka-cqrs); it is stopped when the session ends, also on failures and Ctrl-C.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from deploy.local import stack as local_stack
from deploy.local.state import ENV_STATE_DIR, StackState
from processors.settings import ENV_BOOTSTRAP, ENV_PG_DSN

SESSION_ENV = (ENV_BOOTSTRAP, ENV_PG_DSN, ENV_STATE_DIR)


class SessionStack:
    """Starts the stack and exports its addresses; `close()` is safe to call more than once."""

    def __init__(self) -> None:
        self.state_dir = tempfile.mkdtemp(prefix="cqrs-pytest-")
        self._saved_env = {name: os.environ.get(name) for name in SESSION_ENV}
        self._closed = False
        # Belt and braces: pytest runs fixture teardown on failures and Ctrl-C, but an
        # interpreter exit that skips it (os._exit aside) must still not leak a broker.
        atexit.register(self.close)

    def start(self) -> StackState:
        state = local_stack.up(self.state_dir, started_by="pytest session")
        # Exported so subprocess workers started by tests inherit the session stack.
        os.environ[ENV_BOOTSTRAP] = state.bootstrap_servers
        os.environ[ENV_PG_DSN] = state.postgres_dsn
        os.environ[ENV_STATE_DIR] = self.state_dir
        return state

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            local_stack.down(self.state_dir, timeout=20.0)
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            for name, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            atexit.unregister(self.close)

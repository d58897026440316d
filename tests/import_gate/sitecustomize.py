"""Loaded by the CLI under test when this folder is on its PYTHONPATH: holds the import of
pydantic_ai until the file $IMPORT_GATE_FILE exists (at most 60 s, then the import fails).

So a test can tell the order of two things without timing them: a run that spawns its MCP
server before it imports pydantic-ai passes the gate as soon as the server has started; a run
that imports first waits for a server that never comes, and fails.
"""

import os
import sys
import time

GATE = os.environ.get("IMPORT_GATE_FILE")


class Gate:
    passed = False

    def find_spec(self, name, path=None, target=None):
        if name != "pydantic_ai" or Gate.passed or not GATE:
            return None
        deadline = time.monotonic() + 60
        while not os.path.exists(GATE):
            if time.monotonic() > deadline:
                raise ImportError(f"pydantic_ai imported before {GATE} appeared")
            time.sleep(0.01)
        Gate.passed = True
        return None  # the real finders go on


sys.meta_path.insert(0, Gate())

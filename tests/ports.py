"""Free TCP ports for the servers the tests start, clear of the ones the kernel hands out.

A port the kernel picks with bind(("", 0)) comes from the ephemeral range, the same range every
outgoing connection takes its local port from: with many processes connecting to Redis and
PostgreSQL, one of them may take the port before the test's server binds it (or while a test
restarts its Redis on the same port). So the ports come from below that range, each pytest-xdist
worker from a block of its own, starting at a random place (another test run may be going on).
"""

import os
import random
import socket

BLOCK = 700  # ports per xdist worker; 20 workers fit below 32768, the usual start of the ephemeral range
FIRST = 18000

_index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 20
_next = random.randrange(BLOCK)


def free_port() -> int:
    """A port of this worker's block that nothing listens on now."""
    global _next
    for _ in range(BLOCK):
        port = FIRST + _index * BLOCK + _next
        _next = (_next + 1) % BLOCK
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {FIRST + _index * BLOCK}..{FIRST + (_index + 1) * BLOCK - 1}")

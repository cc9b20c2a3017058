"""A redis-server of its own for each pytest-xdist worker (loaded early with `-p tests.xdist_redis`).

Every test empties the queues' Redis database and some change the server's configuration, so
parallel workers cannot share one. The worker's REDIS_URL must be set before pytest-django loads
the settings, which happens before any conftest is imported: hence a plugin, run at import.
The test database needs no such care: pytest-django suffixes its name with the worker's id.
"""

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Runs in the redis-server child: the kernel kills it when this pytest worker dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start_redis() -> str:
    from tests.ports import free_port

    workdir = tempfile.mkdtemp(prefix=f"ceres-test-redis-{os.environ['PYTEST_XDIST_WORKER']}-")
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    for _ in range(5):  # another program may take the port between free_port() and the bind
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", workdir, "--daemonize", "no"]  # fmt: skip
        log = open(os.path.join(workdir, "redis.log"), "ab")
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            if _pong(port):
                atexit.register(_stop, process)
                return f"redis://127.0.0.1:{port}/5"
            time.sleep(0.02)
        _stop(process)
    with open(os.path.join(workdir, "redis.log"), errors="replace") as f:
        raise RuntimeError(f"redis-server for {os.environ['PYTEST_XDIST_WORKER']} did not start:\n{f.read()[-2000:]}")


def _stop(process):
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# The variable is inherited: a pytest that a test runs in a subprocess is no xdist worker, and
# gets the REDIS_URL it was given.
if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("CERES_XDIST_REDIS_PID"):
    os.environ["REDIS_URL"] = _start_redis()
    os.environ["CERES_XDIST_REDIS_PID"] = str(os.getpid())

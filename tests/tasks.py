"""Jobs the tests enqueue to make workers fail in every way that matters."""

import os
import signal
import time

import django_rq


def always_fail(message: str = "boom") -> None:
    raise RuntimeError(message)


def fail_times(counter: str, times: int) -> str:
    """Fail the first `times` runs (counted in Redis, so across work-horses), then succeed."""
    runs = django_rq.get_connection("email").incr(f"ceres:queue:test-runs:{counter}")
    if runs <= times:
        raise ConnectionError(f"transient trouble #{runs}")
    return f"ok after {runs} runs"


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def mark(n: int, path: str) -> None:
    """Record that job `n` ran, in a file (what a job does must outlive a Redis master)."""
    with open(path, "a") as done:
        done.write(f"{n}\n")

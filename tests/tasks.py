"""Jobs the tests enqueue to make workers fail in every way that matters."""

import os
import signal
import time

import django_rq


def always_fail(message: str = "boom") -> None:
    raise RuntimeError(message)


def sign_in(username: str, password: str, /, *extra: str) -> None:
    """A task whose second positional argument is a secret."""
    raise RuntimeError("the server refused the login")


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


def mark_slowly(n: int, path: str, seconds: float) -> None:
    """Record the start and the end of job `n`, `seconds` apart."""
    mark(f"start {n}", path)
    time.sleep(seconds)
    mark(f"end {n}", path)


def exit_process() -> None:
    raise SystemExit(3)


def exhaust_memory() -> None:
    raise MemoryError("pretend the job ate every byte")


def spin(n: int, path: str, seconds: float) -> None:
    """Like mark_slowly, in short steps: a thread-based job timeout can only stop Python code between
    two steps (blocking I/O is bounded by socket timeouts instead)."""
    mark(f"start {n}", path)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    mark(f"end {n}", path)


def wait_until(path: str, seconds: float = 120) -> None:
    """Run until the test creates `path` (at most `seconds`): a job that is "started" for exactly
    as long as the test needs, whatever the machine's load."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)


def report_progress(lines: int, path: str) -> None:
    """Report half-way with `lines` log lines, then wait for the test to create `path`."""
    from jobs.observability import progress

    for n in range(lines):
        progress.log(f"line {n}")
    progress.report(50, "mitad del camino")
    wait_until(path)
    progress.report(100, "listo")


def allocate(megabytes: int) -> int:
    """Take `megabytes` of memory at once (a hostile file's parser would)."""
    return len(bytearray(megabytes * 1024 * 1024))


def return_at_deadline(jitter: float) -> None:
    """Busy in Python until the job's timeout is due (give or take `jitter` seconds), then return:
    a timeout that fires about now stops this code or comes too late, nothing in between."""
    from rq import get_current_job

    job = get_current_job()
    until = job.started_at.timestamp() + job.timeout + jitter
    while time.time() < until:
        pass


def pause_queue(queue_name: str) -> None:
    """Pause a queue from inside a job, as staff would while it runs."""
    from jobs.config import pauses

    pauses.pause(django_rq.get_connection(queue_name), queue_name, "a test job")


def count_then_fail(queue_name: str) -> None:
    """Count an alert (as a task may), then fail: the count stands."""
    from jobs.enqueue import clients
    from jobs.observability import metrics

    metrics.count(clients.redis(), "alerts", queue_name)
    raise RuntimeError("failed after counting")

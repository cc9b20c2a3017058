"""Cost of the producers: `enqueue_email_verify` one call at a time, against the way it enqueued
before issue 9 (a new queue, so a new Redis client and connection, per call), and
`enqueue_email_verify_many` for 10,000 users.

Run:  bin/with-test-services -- .venv/bin/python benchmarks/producer.py [--profile]
It needs no database: producers take user ids only, and these ids have no users (a worker would
find none and do nothing; none runs here). It flushes the Redis database it is pointed at, at the
start and at the end. Prints medians of several runs; the two single-call ways run in alternate
rounds of the same process, so a busy machine slows both alike. --profile prints where the time
of the single call goes (cProfile, which inflates small Python functions).
"""

import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ceres_site.settings")

import django  # noqa: E402

django.setup()

import django_rq  # noqa: E402
from django.db import transaction  # noqa: E402
from rq import Callback, Retry  # noqa: E402

from ceres_site.municipalities.models import default_pk  # noqa: E402
from jobs.config import policies  # noqa: E402
from jobs.enqueue.producers import enqueue_email_verify, enqueue_email_verify_many  # noqa: E402
from jobs.failures.attempts import on_job_failure  # noqa: E402

RUNS = 5  # of each measurement; the median is printed
TOWN = default_pk()  # the municipality the jobs name
CALLS = 1000  # single calls per round
BULK_USERS = 10_000

opened = []  # the old way's Redis clients: it never closed them (rq keeps them), this closes them untimed


def enqueue_the_old_way(user_id: int) -> None:
    """`enqueue_email_verify` as it was, on its path for a new job: a queue (Redis client,
    connection pool, TCP connection), Retry and Callback built per call."""
    assert not transaction.get_connection().in_atomic_block
    policy = policies.QUEUES["email"]
    queue = django_rq.get_queue("email")
    queue.enqueue(
        "jobs.tasks.email.send_verify_email", kwargs={"user_id": user_id}, job_id=f"email-verify-{user_id}",
        unique=True, job_timeout=policy.timeout, result_ttl=policy.result_ttl, failure_ttl=policy.failure_ttl,
        retry=Retry(max=policy.retry_max, interval=list(policy.retry_intervals)), on_failure=Callback(on_job_failure),
    )  # fmt: skip
    opened.append(queue.connection)


def single_round(redis, enqueue, first_id: int) -> dict:
    """`CALLS` calls with new user ids: calls/s, median and p99 µs, connections left open per call."""
    clients_before = redis.info("clients")["connected_clients"]
    times = []
    started = time.perf_counter()
    for user_id in range(first_id, first_id + CALLS):
        call_started = time.perf_counter()
        enqueue(user_id)
        times.append(time.perf_counter() - call_started)
    elapsed = time.perf_counter() - started
    left_open = redis.info("clients")["connected_clients"] - clients_before
    while opened:
        opened.pop().close()
    redis.flushdb()
    times.sort()
    return {
        "calls/s": CALLS / elapsed,
        "median µs": times[len(times) // 2] * 1e6,
        "p99 µs": times[int(len(times) * 0.99)] * 1e6,
        "connections left open per call": left_open / CALLS,
    }


def bulk_run(redis, first_id: int) -> dict:
    user_ids = range(first_id, first_id + BULK_USERS)
    started = time.perf_counter()
    results = enqueue_email_verify_many(user_ids=user_ids, municipalities=dict.fromkeys(user_ids, TOWN))
    new = time.perf_counter() - started
    started = time.perf_counter()
    again = enqueue_email_verify_many(
        user_ids=user_ids, municipalities=dict.fromkeys(user_ids, TOWN)
    )  # every job pending: all take the one-by-one path
    pending = time.perf_counter() - started
    assert sum(r.created for r in results) == BULK_USERS and not any(r.created for r in again)
    redis.flushdb()
    return {"new users: s": new, "new users: jobs/s": BULK_USERS / new, "all pending: s": pending}


def medians(rows: list[dict]) -> dict:
    return {name: statistics.median(row[name] for row in rows) for name in rows[0]}


def main() -> None:
    redis = django_rq.get_connection("email")
    redis.flushdb()
    ways = {
        "now": lambda user_id: enqueue_email_verify(user_id=user_id, municipality=TOWN),
        "old way": enqueue_the_old_way,
    }
    rounds = {name: [] for name in ways}
    try:
        for enqueue in ways.values():  # warm up: imports, the first connection, the server version
            enqueue(0)
            redis.flushdb()
        if "--profile" in sys.argv:
            profile = cProfile.Profile()
            profile.runcall(single_round, redis, ways["now"], 1)
            pstats.Stats(profile).sort_stats("tottime").print_stats(20)

        next_id = 1
        for run in range(RUNS):
            for name in list(ways) if run % 2 == 0 else list(reversed(ways)):  # alternate which goes first
                rounds[name].append(single_round(redis, ways[name], next_id))
                next_id += CALLS
        bulk = medians([bulk_run(redis, next_id + n * BULK_USERS) for n in range(RUNS)])
    finally:
        redis.flushdb()

    single = {name: medians(rows) for name, rows in rounds.items()}
    print(f"enqueue_email_verify, one call at a time: median of {RUNS} rounds of {CALLS:,} calls")
    print(f"{'':<10}" + "".join(f"{figure:>14}" for figure in ("calls/s", "median µs", "p99 µs", "conns/call")))
    for name, figures in single.items():
        print(f"{name:<10}" + "".join(f"{value:>14,.1f}" for value in figures.values()))
    ratio = single["old way"]["median µs"] / single["now"]["median µs"]
    print(f"old way / now (median per call): {ratio:.1f}x")
    print(f"\nenqueue_email_verify_many, {BULK_USERS:,} users: median of {RUNS} runs")
    print(f"new users: {bulk['new users: s']:.2f} s ({bulk['new users: jobs/s']:,.0f} jobs/s)")
    print(f"the same users again, every job pending: {bulk['all pending: s']:.2f} s")


if __name__ == "__main__":
    main()

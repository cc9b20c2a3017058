"""Prometheus metrics. Gauges are read from Redis at scrape time; counters are kept in one Redis hash,
incremented by the workers, so every process adds to the same numbers and a restart loses none.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import accumulate

from django.conf import settings
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry

from jobs.config import policies, tenancy
from jobs.enqueue import clients
from jobs.observability import reads, series
from jobs.rq_compat import now

BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, float("inf"))  # seconds a job ran


def _key() -> str:
    return f"{settings.RQ_KEY_PREFIX}:metrics"


_held = threading.local()  # `held_counts`: this thread's counts that wait for its job's end


def count(connection, name: str, queue_name: str, amount: int = 1) -> None:
    """Add to a counter: alerts or slack_messages_sent. Inside `held_counts()` (a job a slot runs) the
    count waits for the pipeline that ends the job: a Slack post's count took a round trip of its own."""
    held = getattr(_held, "counts", None)
    if held is not None:
        held.append((name, queue_name, amount))
    else:
        connection.hincrby(_key(), f"{name}:{queue_name}", amount)


@contextmanager
def held_counts(connection) -> Iterator[None]:
    """Hold the counts of the job this thread runs for `write_held` (the job's end); what no end wrote
    (the job failed) is written on leaving."""
    _held.counts = []
    try:
        yield
    finally:
        held, _held.counts = _held.counts, None
        if held:
            with connection.pipeline(transaction=False) as pipe:
                for name, queue_name, amount in held:
                    pipe.hincrby(_key(), f"{name}:{queue_name}", amount)
                pipe.execute()


def write_held(pipe) -> None:
    """Queue on `pipe` the counts held for this thread's job (`held_counts`)."""
    held = getattr(_held, "counts", None) or []
    for name, queue_name, amount in held:
        pipe.hincrby(_key(), f"{name}:{queue_name}", amount)
    held.clear()


def job_finished(pipe, job, queue_name: str, ended: datetime) -> None:
    """Queue on `pipe` what a finished job counts (it runs after every job, in the pipeline that
    marks it finished): its minute in `jobs.observability.series` (done, wait), the one duration bucket it falls
    in and the duration sum. Totals and cumulative buckets are summed when Prometheus scrapes."""
    seconds = (ended - (job.started_at or ended)).total_seconds()
    municipality = tenancy.municipality_of_job(job)
    series.job_done(pipe, queue_name, job.enqueued_at, job.started_at, ended, municipality)
    if municipality is not None:
        pipe.hincrby(_key(), f"jobs_finished:{queue_name}:{municipality}", 1)
    pipe.hincrby(_key(), f"duration_bucket:{queue_name}:{next(b for b in BUCKETS if seconds <= b)}", 1)
    pipe.hincrbyfloat(_key(), f"duration_sum:{queue_name}", seconds)


def job_failed(connection, job, queue_name: str, moment: datetime) -> None:
    """A final failure: the Prometheus counters and its minute in `jobs.observability.series`."""
    with connection.pipeline(transaction=False) as pipe:
        pipe.hincrby(_key(), f"jobs_failed:{queue_name}", 1)
        if (municipality := tenancy.municipality_of_job(job)) is not None:
            pipe.hincrby(_key(), f"jobs_failed:{queue_name}:{municipality}", 1)
        series.job_failed(pipe, queue_name, moment, municipality)
        pipe.execute()


def job_retried(connection, job, queue_name: str, moment: datetime) -> None:
    """A failed attempt another one follows: the Prometheus counter and its minute in `series`."""
    with connection.pipeline(transaction=False) as pipe:
        pipe.hincrby(_key(), f"job_retries:{queue_name}", 1)
        series.job_retried(pipe, queue_name, moment, tenancy.municipality_of_job(job))
        pipe.execute()


class QueueCollector:
    def collect(self):
        connection = clients.redis()
        stored = {key.decode(): value.decode() for key, value in connection.hgetall(_key()).items()}
        jobs = GaugeMetricFamily("ceres_jobs", "Jobs in each state, per queue", labels=["queue", "state"])
        waiting = GaugeMetricFamily("ceres_oldest_waiting_seconds", "Age of the oldest queued job", labels=["queue"])
        workers = GaugeMetricFamily("ceres_workers_alive", "Live worker processes serving the queue", labels=["queue"])
        slots = GaugeMetricFamily("ceres_worker_slots", "Jobs the live workers can run at once", labels=["queue"])
        busy = GaugeMetricFamily("ceres_worker_slots_busy", "Of those, running a job now", labels=["queue"])
        counters = {
            name: CounterMetricFamily(f"ceres_{name}", text, labels=["queue"])
            for name, text in (
                ("jobs_finished", "Jobs that finished"),
                ("jobs_failed", "Jobs that failed for good"),
                ("job_retries", "Failed attempts followed by a retry"),
                ("alerts", "Slack alerts about final failures (single or summary)"),
                ("slack_messages_sent", "Messages Slack accepted"),
            )
        }
        durations = HistogramMetricFamily("ceres_job_duration_seconds", "How long finished jobs ran", labels=["queue"])
        by_municipality = {
            name: CounterMetricFamily(f"ceres_{name}_by_municipality", text, labels=["queue", "municipality"])
            for name, text in (
                ("jobs_finished", "Jobs that finished, of each municipality's (jobs naming one)"),
                ("jobs_failed", "Jobs that failed for good, of each municipality's (jobs naming one)"),
            )
        }
        municipalities = tenancy.names()  # the label's only values: an id no municipality has is left out
        for name in policies.QUEUES:
            for municipality, slug in municipalities.items():
                for counter_name, family in by_municipality.items():
                    family.add_metric([name, slug], float(stored.get(f"{counter_name}:{name}:{municipality}", 0)))
            stats = reads.queue_stats(name)
            for state, value in stats.counts.items():
                jobs.add_metric([name, state], value)
            age = (now() - stats.oldest_waiting).total_seconds() if stats.oldest_waiting else 0
            waiting.add_metric([name], age)
            workers.add_metric([name], stats.live_workers)
            slots.add_metric([name], stats.live_slots)
            busy.add_metric([name], stats.busy_slots)
            per_bucket = [float(stored.get(f"duration_bucket:{name}:{bound}", 0)) for bound in BUCKETS]
            cumulative = list(accumulate(per_bucket))
            for counter_name, family in counters.items():
                value = cumulative[-1] if counter_name == "jobs_finished" else stored.get(f"{counter_name}:{name}", 0)
                family.add_metric([name], float(value))
            bounds = ["+Inf" if bound == float("inf") else str(bound) for bound in BUCKETS]
            durations.add_metric([name], list(zip(bounds, cumulative)), float(stored.get(f"duration_sum:{name}", 0)))
        yield from (jobs, waiting, workers, slots, busy, *counters.values(), durations, *by_municipality.values())


def registry() -> CollectorRegistry:
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(QueueCollector())
    return collectors

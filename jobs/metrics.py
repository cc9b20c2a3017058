"""Prometheus metrics. Gauges are read from Redis at scrape time; counters are kept in one Redis hash,
incremented by the workers, so every process adds to the same numbers and a restart loses none.
"""

from datetime import date, datetime

import django_rq
from django.conf import settings
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry
from rq.utils import now

from jobs import crons, queues, reads

BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, float("inf"))  # seconds a job ran
DAY_TTL = 10 * 24 * 3600  # per-day counts outlive the daily report that reads them


def _key() -> str:
    return f"{settings.RQ_KEY_PREFIX}:metrics"


def count(connection, name: str, queue_name: str, amount: int = 1) -> None:
    """Add to a counter: jobs_failed, job_retries, alerts or slack_messages_sent."""
    connection.hincrby(_key(), f"{name}:{queue_name}", amount)


def _day_key(queue_name: str, day: date) -> str:
    return f"{settings.RQ_KEY_PREFIX}:stats:{queue_name}:{day.isoformat()}:finished"


def job_finished(connection, queue_name: str, started: datetime | None, ended: datetime) -> None:
    """One round trip per finished job: its duration, the running total and its Córdoba day's count
    (RQ keeps finished jobs an hour only; the daily report needs the whole day)."""
    seconds = (ended - (started or ended)).total_seconds()
    day_key = _day_key(queue_name, crons.local_day(ended))
    with connection.pipeline() as pipe:
        pipe.incr(day_key)
        pipe.expire(day_key, DAY_TTL)
        for bucket in BUCKETS:
            if seconds <= bucket:
                pipe.hincrby(_key(), f"duration_bucket:{queue_name}:{bucket}", 1)
        pipe.hincrbyfloat(_key(), f"duration_sum:{queue_name}", seconds)
        pipe.hincrby(_key(), f"duration_count:{queue_name}", 1)
        pipe.hincrby(_key(), f"jobs_finished:{queue_name}", 1)
        pipe.execute()


def finished_on(connection, queue_name: str, day: date) -> int:
    return int(connection.get(_day_key(queue_name, day)) or 0)


class QueueCollector:
    def collect(self):
        connection = django_rq.get_connection(queues.EMAIL.name)
        stored = {key.decode(): value.decode() for key, value in connection.hgetall(_key()).items()}
        jobs = GaugeMetricFamily("ceres_jobs", "Jobs in each state, per queue", labels=["queue", "state"])
        waiting = GaugeMetricFamily("ceres_oldest_waiting_seconds", "Age of the oldest queued job", labels=["queue"])
        workers = GaugeMetricFamily("ceres_workers_alive", "Live workers listening on the queue", labels=["queue"])
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
        for name in queues.QUEUES:
            stats = reads.queue_stats(name)
            for state, value in stats.counts.items():
                jobs.add_metric([name, state], value)
            age = (now() - stats.oldest_waiting).total_seconds() if stats.oldest_waiting else 0
            waiting.add_metric([name], age)
            workers.add_metric([name], stats.live_workers)
            for counter_name, family in counters.items():
                family.add_metric([name], float(stored.get(f"{counter_name}:{name}", 0)))
            buckets = [(str(bucket), float(stored.get(f"duration_bucket:{name}:{bucket}", 0))) for bucket in BUCKETS]
            buckets = [("+Inf" if bound == "inf" else bound, value) for bound, value in buckets]
            durations.add_metric([name], buckets, float(stored.get(f"duration_sum:{name}", 0)))
        yield from (jobs, waiting, workers, *counters.values(), durations)


def registry() -> CollectorRegistry:
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(QueueCollector())
    return collectors

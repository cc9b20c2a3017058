"""The per-minute series the workers write and the dashboard draws, in the real Redis."""

from datetime import UTC, date, datetime, timedelta

from jobs.config import crons
from jobs.observability import series

NOW = datetime(2026, 11, 30, 14, 5, 30, tzinfo=UTC)


def record(redis_conn, ended, waited=None, failed=False, retried=False, queue="email"):
    with redis_conn.pipeline() as pipe:
        if failed:
            series.job_failed(pipe, queue, ended)
        elif retried:
            series.job_retried(pipe, queue, ended)
        else:
            enqueued = ended - timedelta(seconds=waited + 1) if waited is not None else None
            series.job_done(pipe, queue, enqueued, enqueued and enqueued + timedelta(seconds=waited), ended)
        pipe.execute()


def test_minutes_count_done_retried_and_failed_and_give_wait_percentiles(redis_conn):
    for n in range(10):
        record(redis_conn, NOW, waited=0.001 if n < 9 else 4)  # nine quick starts, one slow
    record(redis_conn, NOW - timedelta(minutes=1), failed=True)
    record(redis_conn, NOW - timedelta(minutes=2), retried=True)
    record(redis_conn, NOW - timedelta(minutes=2), retried=True)
    record(redis_conn, NOW - timedelta(minutes=61))  # outside the hour

    points = series.minutes(redis_conn, "email", NOW)

    assert len(points) == 60 and points[-1].at == NOW.replace(second=0)
    assert (points[-1].done, points[-2].failed, points[-3].retried) == (10, 1, 2)
    assert points[-1].wait(0.5) == 0.002 and points[-1].wait(0.95) == 5  # the bucket bounds
    assert points[0].wait(0.5) is None
    hour = series.last_hour(redis_conn, "email", NOW)
    assert (hour.done, hour.retried, hour.failed) == (10, 2, 1)
    assert series.last_hour(redis_conn, "slack", NOW).done == 0


def test_hours_span_seven_days_and_keys_expire(redis_conn):
    record(redis_conn, NOW - timedelta(days=6, hours=23))
    record(redis_conn, NOW - timedelta(days=8))  # older than the chart

    points = series.hours(redis_conn, "email", NOW)

    assert len(points) == 168 and sum(point.done for point in points) == 1 and points[0].done == 1
    assert all(0 < redis_conn.ttl(key) <= series.KEEP for key in redis_conn.keys("ceres:queue:series:*"))


def test_a_cordoba_day_sums_its_own_24_hours(redis_conn):
    record(redis_conn, datetime(2026, 11, 29, 3, 0, tzinfo=UTC))  # 00:00 on the 29th in Córdoba
    record(redis_conn, datetime(2026, 11, 30, 2, 59, tzinfo=UTC))  # 23:59 on the 29th
    record(redis_conn, datetime(2026, 11, 30, 3, 0, tzinfo=UTC))  # the 30th

    assert series.done_between(redis_conn, "email", *crons.day_bounds(date(2026, 11, 29))) == 2


def test_an_hour_key_gets_its_ttl_once_per_process_and_again_from_the_sweep(redis_conn):
    record(redis_conn, NOW)
    key = redis_conn.keys("ceres:queue:series:*")[0]
    redis_conn.persist(key)  # as if Redis had lost the key and a job had made it again

    record(redis_conn, NOW)
    assert redis_conn.ttl(key) == -1  # this process set it already: one EXPIRE per hour, not per job
    series.keep(redis_conn, ["email"], NOW)
    assert 0 < redis_conn.ttl(key) <= series.KEEP

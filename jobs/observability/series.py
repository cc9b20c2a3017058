"""Jobs finished, retried and failed per minute, and how long they waited, per queue: the dashboard's charts,
its "last hour" counts and the daily report's totals.

One Redis hash per queue and UTC hour, `<prefix>:series:<queue>:<YYYYmmddHH>`, kept `KEEP` seconds (and,
while several municipalities share the installation, one more per municipality for the jobs that name
it, `<prefix>:series:<queue>:m<id>:<YYYYmmddHH>`: what staff limited to it see):
fields `done:<minute>`, `retried:<minute>` (failed attempts another one follows), `failed:<minute>`
(final failures) and `wait:<minute>:<bucket>`, the last a histogram of the
time from enqueue to start over `WAIT_BOUNDS`. A worker adds to it in the pipeline that ends a job
(two HINCRBY; an EXPIRE once per process and hour, and again from the minute sweep); readers sum
fields. A failure counts in the minute it happened, whatever becomes of the job afterwards (a retry
from the dashboard does not take it back).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import ceil

from django.conf import settings

from jobs.config import tenancy

KEEP = 8 * 24 * 3600  # seconds: the 7-day chart, and yesterday for the daily report
WAIT_BOUNDS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, float("inf"))


def _key(queue_name: str, moment: datetime, municipality: int | None = None) -> str:
    scope = queue_name if municipality is None else f"{queue_name}:m{municipality}"
    return f"{settings.RQ_KEY_PREFIX}:series:{scope}:{moment.astimezone(UTC):%Y%m%d%H}"


def _scopes(municipality: int | None) -> tuple[int | None, ...]:
    """The series a job counts in: its queue's, and its municipality's while several share it."""
    return (None,) if municipality is None or not tenancy.shared() else (None, municipality)


_expiring: set[str] = set()  # hour keys this process gave their TTL (one EXPIRE per hour, not per job)


def forget_expiring() -> None:
    """Give every hour key its TTL again at its next write (Redis was emptied: tests)."""
    _expiring.clear()


def job_done(
    pipe, queue_name: str, enqueued: datetime | None, started: datetime | None, ended: datetime,
    municipality: int | None = None,
) -> None:  # fmt: skip
    """Queue on `pipe` what a finished job adds: one done, and its wait in the minute it ended."""
    minute = ended.minute
    bucket = None
    if enqueued and started:
        waited = max((started - enqueued).total_seconds(), 0)
        bucket = next(n for n, bound in enumerate(WAIT_BOUNDS) if waited <= bound)
    for scope in _scopes(municipality):
        key = _key(queue_name, ended, scope)
        pipe.hincrby(key, f"done:{minute}", 1)
        if bucket is not None:
            pipe.hincrby(key, f"wait:{minute}:{bucket}", 1)
        _expire_once(pipe, key)


def job_failed(pipe, queue_name: str, moment: datetime, municipality: int | None = None) -> None:
    _add(pipe, "failed", queue_name, moment, municipality)


def job_retried(pipe, queue_name: str, moment: datetime, municipality: int | None = None) -> None:
    _add(pipe, "retried", queue_name, moment, municipality)


def _add(pipe, kind: str, queue_name: str, moment: datetime, municipality: int | None) -> None:
    for scope in _scopes(municipality):
        key = _key(queue_name, moment, scope)
        pipe.hincrby(key, f"{kind}:{moment.minute}", 1)
        _expire_once(pipe, key)


def keep(connection, queue_names, now: datetime) -> None:
    """Give this hour's keys their TTL again (the workers' minute sweep): a Redis that lost them
    while a process still remembered setting it would keep them for ever."""
    with connection.pipeline(transaction=False) as pipe:
        for name in queue_names:
            pipe.expire(_key(name, now), KEEP)
        pipe.execute()


def _expire_once(pipe, key: str) -> None:
    if key not in _expiring:
        if len(_expiring) > 1000:
            _expiring.clear()
        _expiring.add(key)
        pipe.expire(key, KEEP)


@dataclass
class Point:
    at: datetime  # start of the minute or hour, UTC
    done: int = 0
    retried: int = 0
    failed: int = 0
    waits: list[int] | None = None  # per WAIT_BOUNDS bucket

    def wait(self, share: float) -> float | None:
        """The wait (seconds, a bucket's bound) under which `share` of the jobs started; None without jobs."""
        total = sum(self.waits or ())
        if not total:
            return None
        seen = 0
        for bound, count in zip(WAIT_BOUNDS, self.waits, strict=True):
            seen += count
            if seen >= share * total:
                return bound
        return WAIT_BOUNDS[-1]


# The readers: a queue's series, or with `municipality` the part of it that municipality's jobs made.


def minutes(
    connection, queue_name: str, now: datetime, count: int = 60, municipality: int | None = None
) -> list[Point]:
    """The last `count` minutes up to `now` (the current one included), oldest first."""
    end = now.astimezone(UTC).replace(second=0, microsecond=0)
    moments = [end - timedelta(minutes=n) for n in reversed(range(count))]
    read = _read(connection, queue_name, sorted({moment.replace(minute=0) for moment in moments}), municipality)
    return [read[moment.replace(minute=0)].get(moment.minute) or Point(moment, waits=_no_waits()) for moment in moments]


def hours(
    connection, queue_name: str, now: datetime, count: int = 7 * 24, municipality: int | None = None
) -> list[Point]:
    """The last `count` hours up to `now`, oldest first."""
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    moments = [end - timedelta(hours=n) for n in reversed(range(count))]
    read = _read(connection, queue_name, moments, municipality)
    return [_sum(moment, read[moment].values()) for moment in moments]


def last_hour(connection, queue_name: str, now: datetime, municipality: int | None = None) -> Point:
    """Jobs finished, retried and failed in the 60 minutes up to `now`, summed."""
    return _sum(now, minutes(connection, queue_name, now, municipality=municipality))


def done_between(connection, queue_name: str, start: datetime, end: datetime, municipality: int | None = None) -> int:
    """Jobs finished from `start` to `end` (exclusive), to the minute: a day of the daily report,
    whatever its length (`crons.day_bounds`)."""
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = [first + timedelta(hours=n) for n in range(ceil((end - first) / timedelta(hours=1)))]
    read = _read(connection, queue_name, hours, municipality)
    return sum(point.done for minutes_ in read.values() for point in minutes_.values() if start <= point.at < end)


def _read(
    connection, queue_name: str, hours: list[datetime], municipality: int | None
) -> dict[datetime, dict[int, Point]]:
    """Each hour's hash, read in one round trip and parsed once: its minutes that hold something."""
    with connection.pipeline(transaction=False) as pipe:
        for hour in hours:
            pipe.hgetall(_key(queue_name, hour, municipality))
        found = pipe.execute()
    read = {}
    for hour, fields in zip(hours, found, strict=True):
        points: dict[int, Point] = {}
        for field, value in fields.items():
            kind, minute, *bucket = field.decode().split(":")
            point = points.get(int(minute))
            if point is None:
                point = points[int(minute)] = Point(hour.replace(minute=int(minute)), waits=_no_waits())
            if kind == "done":
                point.done += int(value)
            elif kind == "failed":
                point.failed += int(value)
            elif kind == "retried":
                point.retried += int(value)
            elif kind == "wait" and int(bucket[0]) < len(WAIT_BOUNDS):
                point.waits[int(bucket[0])] += int(value)
        read[hour] = points
    return read


def _sum(at: datetime, points) -> Point:
    total = Point(at, waits=_no_waits())
    for point in points:
        total.done, total.retried, total.failed = (
            total.done + point.done,
            total.retried + point.retried,
            total.failed + point.failed,
        )
        total.waits = [a + b for a, b in zip(total.waits, point.waits, strict=True)]
    return total


def _no_waits() -> list[int]:
    return [0] * len(WAIT_BOUNDS)

"""Read-only views of Redis, for the dashboard, health checks, metrics and SLO alarms.

Plain Redis reads on purpose: RQ's registry helpers (`count`, `get_job_ids`) run a cleanup,
with failure callbacks, before answering, and `Worker.all` drops stale keys; a page view must
never change state. Every read is O(log n + page) so a registry of 100,000 jobs costs as much as
one of ten.
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import django_rq
from django.conf import settings
from rq.job import Job
from rq.registry import StartedJobRegistry

from jobs import rq_compat
from jobs.config import crons, pauses, policies, tenancy
from jobs.enqueue import clients
from jobs.models import CronRun
from jobs.observability import retries, series
from jobs.rq_compat import now, utcparse

log = logging.getLogger(__name__)

# RQ's states, and "retrying": the scheduled jobs waiting for their next attempt (`retries`), which
# "scheduled" leaves out. "rate_limited": jobs of a municipality over its cap, waiting aside for their turn
# (`QueuePolicy.tenant_cap`), in one sorted set per municipality.
STATES = ("rate_limited", "queued", "started", "scheduled", "deferred", "finished", "retrying", "failed", "canceled")
PAGE_SIZE = 50
NAME_FILTER_WINDOW = 5000  # newest jobs a job-name filter looks through


def _queue(name: str):
    return clients.queue(name)


def _registry_key(queue, state: str) -> str | None:
    return {
        "started": queue.started_job_registry.key,
        "scheduled": queue.scheduled_job_registry.key,
        "deferred": queue.deferred_job_registry.key,
        "finished": queue.finished_job_registry.key,
        "failed": queue.failed_job_registry.key,
        "canceled": queue.canceled_job_registry.key,
    }.get(state)


def _waiting_keys(queue) -> list[str]:
    """The sets of the jobs of `queue` waiting under a municipality's cap."""
    keys = rq_compat.rate_limit_keys(queue.connection)
    return [rq_compat.rate_limited_key(key) for key in keys if tenancy.queue_of_cap(key) == queue.name]


def _oldest_aside(queue) -> datetime | None:
    """When the longest-waiting job set aside under a municipality's cap was set aside (its score)."""
    with queue.connection.pipeline(transaction=False) as pipe:
        for key in _waiting_keys(queue):
            pipe.zrange(key, 0, 0, withscores=True)
        scores = [entries[0][1] for entries in pipe.execute() if entries]
    return datetime.fromtimestamp(min(scores), UTC) if scores else None


def count(queue, state: str) -> int:
    if state == "rate_limited":
        with queue.connection.pipeline(transaction=False) as pipe:
            for key in _waiting_keys(queue):
                pipe.zcard(key)
            return sum(pipe.execute())
    if state == "queued":
        return queue.connection.llen(queue.key)
    if state == "retrying":
        return retries.count(queue)
    if state == "scheduled":
        return queue.connection.zcard(_registry_key(queue, state)) - retries.count(queue)
    return queue.connection.zcard(_registry_key(queue, state))


def job_ids(queue, state: str, start: int, stop: int) -> list[str]:
    """Job ids `start`..`stop` (exclusive) of a state, newest first."""
    connection = queue.connection
    if state == "queued":
        length = connection.llen(queue.key)
        lo, hi = max(length - stop, 0), length - start - 1
        raw = list(reversed(connection.lrange(queue.key, lo, hi))) if hi >= lo else []
    elif state == "rate_limited":  # newest first across the municipalities' sets
        with connection.pipeline(transaction=False) as pipe:
            for key in _waiting_keys(queue):
                pipe.zrevrange(key, 0, stop - 1, withscores=True)
            newest = sorted((entry for entries in pipe.execute() for entry in entries), key=lambda e: -e[1])
        raw = [job_id for job_id, _ in newest[start:stop]]
    elif state == "retrying":
        return retries.job_ids(queue, start, stop)
    elif state == "scheduled":
        return retries.other_scheduled_ids(queue, start, stop)
    else:
        raw = connection.zrevrange(_registry_key(queue, state), start, stop - 1)
    parse = StartedJobRegistry.parse_job_id if state == "started" else (lambda entry: entry.decode())
    return [parse(entry) for entry in raw]


@dataclass
class Page:
    jobs: list[Job]
    total: int
    number: int
    pages: int
    note: str = ""
    unreadable: list[str] = field(default_factory=list)  # ids on this page no job can be read from, printable


def page(
    queue_name: str, state: str, number: int = 1, search: str = "", func: str = "", user_ids=(),
    municipality: int | None = None,
) -> Page:  # fmt: skip
    """A page of a state's jobs, newest first. `search` is a job id (found in any state), or a part
    of ids, or matches the jobs of `user_ids` (the users whose email holds it); `func` a job name;
    `municipality` the jobs that name it (`jobs.config.tenancy`). Filters look through the newest
    `NAME_FILTER_WINDOW` jobs of the state."""
    queue = _queue(queue_name)
    search = search.strip()
    if search and not func and municipality is None:
        job = fetch_job(queue, search)
        if job is not None and job.origin == queue_name:
            return Page([job], 1, 1, 1)
    if municipality is not None and not search and not func:  # its ids first: only a page of jobs is read
        ids = municipality_ids(queue, state, municipality)
        number, pages, start = _paging(number, len(ids))
        jobs = fetch_jobs(queue, ids[start : start + PAGE_SIZE])
        return Page(jobs, len(ids), number, pages, note=str(NAME_FILTER_WINDOW))
    if search or func or municipality is not None:
        window = fetch_jobs(queue, job_ids(queue, state, 0, NAME_FILTER_WINDOW))
        matching = [
            job for job in window
            if _matches(job, search.lower(), func, set(user_ids))
            and (municipality is None or tenancy.municipality_of_job(job) == municipality)
        ]  # fmt: skip
        number, pages, start = _paging(number, len(matching))
        return Page(matching[start : start + PAGE_SIZE], len(matching), number, pages, note=str(NAME_FILTER_WINDOW))
    total = count(queue, state)
    number, pages, start = _paging(number, total)
    ids = job_ids(queue, state, start, start + PAGE_SIZE)
    jobs = fetch_jobs(queue, ids)
    read = {job.id for job in jobs}
    unreadable = [
        job_id for job_id in ids if job_id not in read and not (valid_id(job_id) and not _exists(queue, job_id))
    ]
    return Page(jobs, total, number, pages, unreadable=[printable(job_id) for job_id in unreadable])


def _paging(number: int, total: int) -> tuple[int, int, int]:
    """The page number asked for, within the pages `total` jobs fill; how many pages; its first index."""
    pages = max(1, -(-total // PAGE_SIZE))
    number = min(max(number, 1), pages)
    return number, pages, (number - 1) * PAGE_SIZE


def _exists(queue, job_id: str) -> bool:
    return bool(queue.connection.exists(Job.key_for(job_id)))


def _matches(job: Job, search: str, func: str, user_ids: set[int]) -> bool:
    if func and _func_name(job) != func:
        return False
    return not search or search in job.id.lower() or _user_id(job) in user_ids


def _user_id(job: Job) -> int | None:
    try:
        return int(job.kwargs["user_id"])
    except Exception:
        return None


def scheduled_at(queue, ids: list[str]) -> dict[str, datetime]:
    """When each scheduled job of `ids` will run (its score in the scheduled registry)."""
    if not ids:
        return {}
    scores = queue.connection.zmscore(queue.scheduled_job_registry.key, ids)
    return {job_id: datetime.fromtimestamp(score, tz=UTC) for job_id, score in zip(ids, scores) if score is not None}


def _func_name(job: Job) -> str:
    try:
        return job.func_name
    except Exception:
        return ""


@dataclass
class WorkerInfo:
    name: str
    alive: bool
    state: str
    last_heartbeat: datetime | None
    slots: int = 1  # jobs of this queue it runs at once: an in-process worker's slots, else 1
    busy: int = 0  # of those, running a job now (in-process workers say; forking ones: state)


@dataclass
class QueueStats:
    name: str
    policy: policies.QueuePolicy
    counts: dict[str, int]
    workers: list[WorkerInfo]
    oldest_waiting: datetime | None
    finished_last_hour: int
    retried_last_hour: int  # failed attempts another one followed
    failed_last_hour: int
    paused: pauses.Pause | None = None  # who paused it and since when

    @property
    def live_workers(self) -> int:
        """Live processes serving this queue."""
        return sum(worker.alive for worker in self.workers)

    @property
    def live_slots(self) -> int:
        """Jobs the live processes can run at once."""
        return sum(worker.slots for worker in self.workers if worker.alive)

    @property
    def busy_slots(self) -> int:
        return sum(worker.busy for worker in self.workers if worker.alive)


def municipality_ids(queue, state: str, municipality: int) -> list[str]:
    """The ids of a state's newest `NAME_FILTER_WINDOW` jobs that name `municipality`, newest first:
    Redis keeps no list of a municipality's jobs, so its pages read them within that window."""
    ids = job_ids(queue, state, 0, NAME_FILTER_WINDOW)
    kwargs = rq_compat.jobs_kwargs(queue.connection, ids, queue.serializer)
    return [job_id for job_id, found in zip(ids, kwargs) if found and tenancy.municipality_of(found) == municipality]


def counts(queue, municipality: int | None = None) -> dict[str, int]:
    """Each state's count; with `municipality`, of its jobs among each state's newest (`municipality_ids`)."""
    if municipality is None:
        return {state: count(queue, state) for state in STATES}
    return {state: len(municipality_ids(queue, state, municipality)) for state in STATES}


def queue_stats(name: str, municipality: int | None = None) -> QueueStats:
    """A queue's figures; with `municipality`, its jobs' alone (no workers nor oldest wait: those are
    every municipality's)."""
    queue, policy = _queue(name), policies.QUEUES[name]
    connection = queue.connection
    hour = series.last_hour(connection, name, now(), municipality)  # failures stay counted when retried
    if municipality is not None:
        return QueueStats(
            name=name, policy=policy, counts=counts(queue, municipality),
            workers=[], oldest_waiting=None, finished_last_hour=hour.done, retried_last_hour=hour.retried,
            failed_last_hour=hour.failed, paused=pauses.paused(connection).get(name),
        )  # fmt: skip
    oldest = None
    first = connection.lindex(queue.key, 0)
    if first:
        job = fetch_job(queue, first.decode())
        oldest = job.enqueued_at if job else None
    if (aside := _oldest_aside(queue)) is not None and (oldest is None or aside < oldest):
        oldest = aside  # a job waiting its municipality's turn waits too (it is enqueued anew when let through)
    return QueueStats(
        name=name,
        policy=policy,
        counts=counts(queue),
        workers=workers(name),
        oldest_waiting=oldest,
        finished_last_hour=hour.done,
        retried_last_hour=hour.retried,
        failed_last_hour=hour.failed,
        paused=pauses.paused(connection).get(name),
    )


def workers(queue_name: str) -> list[WorkerInfo]:
    connection = _queue(queue_name).connection
    found = []
    for key in sorted(connection.smembers(rq_compat.workers_of_queue_key(queue_name))):
        data = connection.hgetall(key)
        heartbeat = data.get(rq_compat.HEARTBEAT_FIELD.encode())
        state = data.get(rq_compat.STATE_FIELD.encode(), b"gone").decode()
        slots, busy = _per_queue(data.get(b"slots")), _per_queue(data.get(b"busy"))  # written by jobs.runtime.slots
        found.append(
            WorkerInfo(
                name=rq_compat.worker_name_from_key(key),
                alive=bool(data),
                state=state,
                last_heartbeat=utcparse(heartbeat.decode()) if heartbeat else None,
                slots=slots.get(queue_name, 1),
                busy=busy.get(queue_name, int(state == "busy")),
            )
        )
    return found


def _per_queue(field: bytes | None) -> dict[str, int]:
    """`email=5,slack=10` → {"email": 5, "slack": 10}."""
    pairs = (item.split("=", 1) for item in field.decode().split(",")) if field else ()
    return {name: int(value) for name, value in pairs}


@dataclass
class CronInfo:
    spec: crons.CronSpec
    last_run: CronRun | None
    next_run: datetime | None
    alarm_since: str | None


@dataclass
class Overview:
    queues: list[QueueStats]
    crons: list[CronInfo]
    scheduler_alive: bool
    warnings: list[str] = field(default_factory=list)


def overview() -> Overview:
    scheduler = django_rq.get_scheduler(policies.MAINTENANCE.name)
    connection = scheduler.connection
    cron_infos = []
    for spec in crons.SPECS.values():
        alarm = connection.get(f"{settings.RQ_KEY_PREFIX}:cron-alarm:{spec.name}")
        cron_infos.append(
            CronInfo(
                spec=spec,
                last_run=CronRun.objects.filter(name=spec.name, finished_at__isnull=False).order_by("-slot").first(),
                next_run=scheduler.next_run(spec.name),
                alarm_since=alarm.decode() if alarm else None,
            )
        )
    return Overview(
        queues=[queue_stats(name) for name in policies.QUEUES], crons=cron_infos, scheduler_alive=scheduler.is_alive()
    )


def valid_id(job_id: str) -> bool:
    return rq_compat.valid_job_id(job_id)


def printable(job_id: str) -> str:
    return job_id.encode("unicode_escape").decode("ascii")  # NUL bytes and all


def fetch_jobs(queue, ids: list[str]) -> list[Job]:
    """The jobs of `ids` that can be read: one that cannot (an id or a hash RQ refuses) is left out,
    for the worker that dequeues it, or the sweep, to set aside."""
    readable = [job_id for job_id in ids if valid_id(job_id)]
    try:
        return [
            job for job in Job.fetch_many(readable, connection=queue.connection, serializer=queue.serializer) if job
        ]
    except Exception:  # a hash RQ cannot restore, somewhere in the lot
        return [job for job in map(partial(fetch_job, queue), readable) if job]


def fetch_job(queue, job_id: str) -> Job | None:
    """The job, or None when it does not exist or cannot be read."""
    if not valid_id(job_id):
        return None
    try:
        return queue.fetch_job(job_id)
    except Exception:
        log.warning("job %r in %s cannot be read", job_id, queue.name)
        return None

"""Enqueue a job under its own id, once: the mechanism under every producer (`jobs.enqueue.producers`).

Jobs are enqueued with RQ's atomic `unique=True`: enqueueing an id again while its job is pending
returns the pending job instead of making a second one. What a repeated call does, by the state of
the job with the same id:

- queued, waiting its municipality's turn (`rate_limited`), scheduled (waiting for a retry), deferred,
  started: nothing; the pending job is reported.
- finished less than `cooldown` seconds ago: nothing (a resend button must not spam).
- finished earlier, failed, stopped, canceled: the old job is replaced by a fresh one with the
  whole retry budget, so a verification that failed for good never blocks a resend for a day.
- no job at all, only fields a job's run wrote back after it was deleted (its status, a
  heartbeat): the id is free, and those fields go.

It looks a few times (`ENQUEUE_TRIES`), then gives up with `JobIdTaken`: never a loop.

Producers run inside requests, so this is cheap: a process keeps one `Queue` (one Redis client and
connection pool) per queue name, and a new job costs one Redis round trip. `enqueue_many` sends a
batch of jobs per round trip, with the same rules per job.
"""

import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import WatchError
from rq import Callback, Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import Job, JobStatus

from jobs import rq_compat
from jobs.config import policies, task_names, tenancy
from jobs.enqueue import clients

log = logging.getLogger(__name__)

DONE = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}
T = TypeVar("T")
BULK_BATCH = 1000  # jobs per pipeline in bulk calls: bounds the memory and the time Redis is busy
ENQUEUE_TRIES = 5  # looks at an id that is taken, then ended, then taken again... before giving up


class JobIdTaken(Exception):
    """The job's id stayed taken, by something that is neither a pending job nor an ended one."""


@dataclass(frozen=True)
class Enqueued:
    job_id: str
    created: bool  # False: a job with this id was already pending (or finished within the cooldown)
    status: str  # the job's state right after the call


def after_commit(enqueue: Callable[[], T]) -> T | None:
    """Enqueue now outside a transaction; inside one, only once it commits (and return None)."""
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(enqueue, robust=True)
        return None
    return enqueue()


def enqueue(
    queue_name: str,
    func: str,
    *,
    job_id: str,
    kwargs: dict,
    args: list | None = None,
    cooldown: int = 0,
    delay: int = 0,
    result_ttl: int | None = None,
) -> Enqueued:
    queue = clients.queue(queue_name)
    for _ in range(ENQUEUE_TRIES):
        job = _new_job(queue, func, job_id=job_id, kwargs=kwargs, args=args, result_ttl=result_ttl)
        if delay:
            status = job.get_status(refresh=False).value if _schedule_unique(queue, job, delay) else None
        else:
            status = _push_unique(queue, [job])[0]
        if status:
            return Enqueued(job_id=job_id, created=True, status=status)
        if not _delete_if_done(queue.connection, job_id, queue.serializer, cooldown):
            return Enqueued(job_id=job_id, created=False, status=_status(queue, job_id))
    raise JobIdTaken(f"{job_id}: its id is still taken after {ENQUEUE_TRIES} tries; not enqueued")


def enqueue_many(queue_name: str, func: str, *, calls: Iterable[tuple[str, dict]], cooldown: int = 0) -> list[Enqueued]:
    """`enqueue` for each `(job_id, kwargs)`, a batch per pipeline. An id given twice is one
    job, reported once. Ids that already exist take the one-by-one path (replace or report)."""
    queue = clients.queue(queue_name)
    calls = list(dict(calls).items())
    results = []
    for start in range(0, len(calls), BULK_BATCH):
        batch = calls[start : start + BULK_BATCH]
        jobs = [_new_job(queue, func, job_id=job_id, kwargs=kwargs) for job_id, kwargs in batch]
        for (job_id, kwargs), status in zip(batch, _push_unique(queue, jobs)):
            if status:
                results.append(Enqueued(job_id=job_id, created=True, status=status))
            else:
                results.append(enqueue(queue_name, func, job_id=job_id, kwargs=kwargs, cooldown=cooldown))
    return results


def _new_job(
    queue: Queue, func: str, *, job_id: str, kwargs: dict, args: list | None = None, result_ttl: int | None = None
) -> Job:
    """A job (not saved yet) with its queue's policy, read now: tests change policies. On a queue
    that caps each municipality, a job naming one is put under its cap while several share the
    installation (`tenancy.shared`); alone, a municipality's jobs never wait for one another."""
    policy = policies.QUEUES[queue.name]
    options = _policy_options(policy)
    if result_ttl is not None:
        options = {**options, "result_ttl": result_ttl}
    job = queue.create_job(func, args=args or [], kwargs=kwargs, job_id=job_id, **options)
    if policy.tenant_cap and (municipality := tenancy.municipality_of(kwargs)) is not None and tenancy.shared():
        rq_compat.rate_limit(job, tenancy.cap_key(queue.name, municipality), policy.tenant_cap)
    return job


@functools.cache
def _policy_options(policy: policies.QueuePolicy) -> dict:
    """The job options of a policy, built once per policy object (shared: never change the dict)."""
    return dict(
        timeout=policy.timeout,
        result_ttl=policy.result_ttl,
        failure_ttl=policy.failure_ttl,
        retry=Retry(max=policy.retry_max, interval=list(policy.retry_intervals)) if policy.retry_max else None,
        on_failure=Callback(task_names.ON_JOB_FAILURE),
    )


def _push_unique(queue: Queue, jobs: list[Job]) -> list[str | None]:
    """Enqueue `jobs` with RQ's atomic unique enqueue, in one pipeline on one connection: each one's
    state once enqueued (None: its id exists). With Sentinel the WAIT for replicas goes in the same
    pipeline, since WAIT only covers the writes of the connection it runs on."""
    wanted = _replicas_to_wait_for()
    paced = policies.QUEUES[queue.name].paced
    with queue.connection.pipeline(transaction=False) as pipe:
        pipe.sadd(queue.redis_queues_keys, queue.key)  # as queue.enqueue does: lists the queue
        for job in jobs:
            if paced and (municipality := tenancy.municipality_of(job.kwargs)) is not None:
                rq_compat.push_unique_aside(pipe, queue, job, tenancy.cap_key(queue.name, municipality))
            elif job.has_rate_limit:
                rq_compat.push_unique_rate_limited(pipe, queue, job)
            else:
                rq_compat.push_unique(pipe, queue, job)
        if wanted:
            pipe.wait(wanted, 1000)
        replies = pipe.execute()
    if wanted:
        what = jobs[0].id if len(jobs) == 1 else f"{jobs[0].id} and {len(jobs) - 1} more jobs"
        _check_replicas(queue.connection, wanted, replies.pop(), what)
    return [_pushed(job, reply) for job, reply in zip(jobs, replies[1:])]


def _pushed(job: Job, reply) -> str | None:
    """A push's state from its reply: 0 if the id exists; 1, or for a job under a cap the ids its
    push moved to the queue (its own if its cap had room: else it waits aside). A paced job waits
    aside (its status says so)."""
    if reply == 0:
        return None
    if job.has_rate_limit:
        return (JobStatus.QUEUED if job.id.encode() in reply else JobStatus.RATE_LIMITED).value
    return job.get_status(refresh=False).value


def _schedule_unique(queue: Queue, job: Job, delay: int) -> bool:
    """Schedule `job` in `delay` seconds with RQ's atomic unique schedule; False if its id exists."""
    try:
        queue.schedule_job(job, rq_compat.now() + timedelta(seconds=delay), unique=True)
    except DuplicateJobError:
        return False
    _wait_for_replicas(queue.connection, job.id)
    return True


class NotReplicated(Exception):
    """The job is on the master but not yet on the replicas: a failover now could lose it.
    Calling the producer again is safe (uniqueness)."""


_alone_until = 0.0  # monotonic time until which the master is known to have no replica to wait for


def forget_lone_master() -> None:
    """Wait for replicas again from the next enqueue on (another Redis: tests)."""
    global _alone_until
    _alone_until = 0.0


def _replicas_to_wait_for() -> int:
    """With Sentinel, a job counts as enqueued only once a replica holds it too (WAIT, 1 s: below the
    socket timeout). A master left with no replica at all, as right after a failover, is not waited
    for (rechecked every 10 s): the platform keeps working, with a warning in the log."""
    return 0 if time.monotonic() < _alone_until else settings.REDIS_WAIT_REPLICAS


def _check_replicas(connection, wanted: int, acknowledged: int, what: str) -> None:
    """Raise NotReplicated if WAIT saw fewer replicas than wanted and the master has any at all."""
    global _alone_until
    if acknowledged >= wanted:
        return
    if connection.info("replication").get("connected_slaves", 0):
        raise NotReplicated(f"{what} reached fewer than {wanted} Redis replicas within 1 s")
    _alone_until = time.monotonic() + 10
    log.warning("the Redis master has no replica: jobs are enqueued without a copy")


def _wait_for_replicas(connection, job_id: str) -> None:
    if wanted := _replicas_to_wait_for():
        _check_replicas(connection, wanted, connection.wait(wanted, 1000), job_id)


def _delete_if_done(connection, job_id: str, serializer, cooldown: int) -> bool:
    """Delete the job if it has ended (and not within `cooldown`), or if its hash holds no job;
    True if the id may be free now."""
    key = Job.key_for(job_id)
    with connection.pipeline() as pipe:
        try:
            pipe.watch(key)
            raw = pipe.hgetall(key)
            if not raw:
                return True  # expired meanwhile
            if not rq_compat.hash_holds_job(raw):  # no job: what its run wrote back after it was deleted
                pipe.multi()
                pipe.delete(key)
                pipe.execute()
                return True
            job = Job(job_id, connection=connection, serializer=serializer)
            job.restore(raw)
            status = job.get_status(refresh=False)
            if status not in DONE:
                return False
            recent = timezone.now() - timedelta(seconds=cooldown)
            if status == JobStatus.FINISHED and job.ended_at and job.ended_at > recent:
                return False
            pipe.multi()
            job.delete(pipeline=pipe)
            pipe.execute()
        except WatchError:
            pass  # the job changed under us: look again
    return True


def _status(queue, job_id: str) -> str:
    job = queue.fetch_job(job_id)
    return job.get_status(refresh=False).value if job else "gone"

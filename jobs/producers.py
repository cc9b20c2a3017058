"""The only place that enqueues jobs.

Every producer takes ids and small values (never model instances or secrets), gives its job a
deterministic id, and enqueues it with RQ's atomic `unique=True`: calling a producer again while
that job is pending returns the pending job instead of making a second one.

What a repeated call does, by the state of the job with the same id:

- queued, scheduled (waiting for a retry), deferred, started: nothing; the pending job is reported.
- finished less than `cooldown` seconds ago: nothing (a resend button must not spam).
- finished earlier, failed, stopped, canceled: the old job is replaced by a fresh one with the
  whole retry budget, so a verification that failed for good never blocks a resend for a day.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import uuid4

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import WatchError
from rq import Callback, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from jobs import queues
from jobs.failures import on_job_failure

log = logging.getLogger(__name__)

DONE = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


@dataclass(frozen=True)
class Enqueued:
    job_id: str
    created: bool  # False: a job with this id was already pending (or finished within the cooldown)
    status: str  # the job's state right after the call


def enqueue_email_verify(*, user_id: int) -> Enqueued | None:
    """Send the account verification email to the user (the worker issues the token)."""
    return _after_commit(
        lambda: _enqueue_unique(
            queues.EMAIL.name,
            "jobs.tasks.email.send_verify_email",
            job_id=f"email-verify-{user_id}",
            kwargs={"user_id": user_id},
            cooldown=settings.VERIFY_RESEND_COOLDOWN_SECONDS,
        )
    )


def enqueue_email_welcome(*, user_id: int) -> Enqueued | None:
    """Send the welcome email once the user is verified."""
    return _after_commit(
        lambda: _enqueue_unique(
            queues.EMAIL.name,
            "jobs.tasks.email.send_welcome_email",
            job_id=f"email-welcome-{user_id}",
            kwargs={"user_id": user_id},
        )
    )


def enqueue_slack_alert(*, text: str, dedupe_key: str | None = None) -> Enqueued | None:
    """Post `text` to Slack. With `dedupe_key`, the same alert is posted once however often asked."""
    return _after_commit(
        lambda: _enqueue_unique(
            queues.SLACK.name,
            "jobs.tasks.slack.post_to_slack",
            job_id=f"slack-{dedupe_key}" if dedupe_key else f"slack-{uuid4().hex}",
            kwargs={"text": text},
        )
    )


def schedule_alert_flush(*, queue_name: str, delay: int) -> Enqueued | None:
    """Gather the final failures of `queue_name` into one Slack message in `delay` seconds."""
    return _after_commit(
        lambda: _enqueue_unique(
            queues.SLACK.name,
            "jobs.alerts.flush_alerts",
            job_id=f"slack-flush-{queue_name}",
            kwargs={"queue_name": queue_name},
            delay=delay,
            result_ttl=0,  # frees the id once done, so the next failure schedules the next flush
        )
    )


def enqueue_cron_run(*, name: str, slot: datetime, queue_name: str) -> Enqueued:
    """Run cron `name` for `slot`; the slot is in the id, so a slot runs once however often it fires."""
    return _enqueue_unique(
        queue_name,
        "jobs.tasks.maintenance.run_cron",
        job_id=f"cron-{name}-{slot:%Y%m%dT%H%MZ}",
        kwargs={"name": name, "slot": slot.isoformat()},
    )


def enqueue_stored_call(*, queue_name: str, func: str, job_id: str, kwargs: dict, args=()) -> Enqueued:
    """Run a stored call again (a job retried by staff), under the same id and uniqueness rules."""
    return _enqueue_unique(queue_name, func, job_id=job_id, kwargs=kwargs, args=list(args))


def _after_commit(enqueue: Callable[[], Enqueued]) -> Enqueued | None:
    """Enqueue now outside a transaction; inside one, only once it commits (and return None)."""
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(enqueue, robust=True)
        return None
    return enqueue()


def _enqueue_unique(
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
    policy = queues.QUEUES[queue_name]  # read at call time, so tests can shrink a policy
    queue = django_rq.get_queue(queue_name)
    options = dict(
        args=args or [],
        kwargs=kwargs,
        job_id=job_id,
        unique=True,
        job_timeout=policy.timeout,
        result_ttl=policy.result_ttl if result_ttl is None else result_ttl,
        failure_ttl=policy.failure_ttl,
        retry=Retry(max=policy.retry_max, interval=list(policy.retry_intervals)) if policy.retry_max else None,
        on_failure=Callback(on_job_failure),
    )
    while True:
        try:
            if delay:
                job = queue.enqueue_in(timedelta(seconds=delay), func, **options)
            else:
                job = queue.enqueue(func, **options)
            _wait_for_replicas(queue.connection, job.id)
            return Enqueued(job_id=job.id, created=True, status=job.get_status(refresh=False).value)
        except DuplicateJobError:
            if not _delete_if_done(queue.connection, job_id, queue.serializer, cooldown):
                return Enqueued(job_id=job_id, created=False, status=_status(queue, job_id))


class NotReplicated(Exception):
    """The job is on the master but not yet on the replicas: a failover now could lose it.
    Calling the producer again is safe (uniqueness)."""


_alone_until = 0.0  # monotonic time until which the master is known to have no replica to wait for


def _wait_for_replicas(connection, job_id: str) -> None:
    """With Sentinel, call a job enqueued only once a replica holds it too (WAIT, 1 s: below the
    socket timeout). A master left with no replica at all, as right after a failover, is not waited
    for (rechecked every 10 s): the platform keeps working, with a warning in the log."""
    global _alone_until
    wanted = settings.REDIS_WAIT_REPLICAS
    if not wanted or time.monotonic() < _alone_until or connection.wait(wanted, 1000) >= wanted:
        return
    if connection.info("replication").get("connected_slaves", 0):
        raise NotReplicated(f"{job_id} reached fewer than {wanted} Redis replicas within 1 s")
    _alone_until = time.monotonic() + 10
    log.warning("the Redis master has no replica: jobs are enqueued without a copy")


def _delete_if_done(connection, job_id: str, serializer, cooldown: int) -> bool:
    """Delete the job if it has ended (and not within `cooldown`); True if the id may be free now."""
    with connection.pipeline() as pipe:
        try:
            pipe.watch(Job.key_for(job_id))
            try:
                job = Job.fetch(job_id, connection=connection, serializer=serializer)
            except NoSuchJobError:
                return True  # expired meanwhile
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

"""What staff can do to jobs in Redis. The dashboard, admin actions and commands call these;
each one records itself in the audit trail.
"""

from datetime import datetime

from django.utils import timezone
from rq.job import Job, JobStatus

from jobs import rq_compat
from jobs.config import pauses, policies, tenancy
from jobs.enqueue import clients
from jobs.enqueue.producers import enqueue_stored_call
from jobs.failures.dead_letters import CannotRetry, dead_letter_retry, retry_run_created_at
from jobs.models import DeadLetter, JobAction
from jobs.observability import reads
from jobs.staff.audit import action_record

RETRYABLE = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}
CLEAN_BATCH = 1000  # jobs read or deleted per Redis round trip when cleaning
CANCELABLE = {JobStatus.RATE_LIMITED, JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def _jobs(queue_name: str, job_ids: list[str]) -> list[Job]:
    """The jobs of `queue_name` among `job_ids`: an id of another queue's job (a crafted POST) or
    one that cannot be read is left out."""
    return [job for job in reads.fetch_jobs(clients.queue(queue_name), job_ids) if job.origin == queue_name]


def _apply(kind, do, states, *, queue_name: str, job_ids: list[str], user=None, reason: str = "") -> list[str]:
    """Do `do(job)` to each job in one of `states` (any state if None); record it; return the ids done."""
    done = {}
    for job in _jobs(queue_name, job_ids):
        if states is None or job.get_status(refresh=False) in states:
            do(job, queue_name, user)
            done[job.id] = tenancy.municipality_of_job(job)
    action_record(kind=kind, queue_name=queue_name, job_ids=list(done), user=user, reason=reason, municipalities=done)
    return list(done)


def _retry(job, queue_name, user):
    enqueue_stored_call(queue_name=queue_name, func=job.func_name, job_id=job.id, kwargs=job.kwargs, args=job.args)
    DeadLetter.objects.filter(job_id=job.id, job_created_at=job.created_at).update(
        retried_at=timezone.now(), retried_by=user, retry_created_at=retry_run_created_at(queue_name, job.id)
    )


def _promote(job, queue_name, user):
    queue = clients.queue(queue_name)
    queue.scheduled_job_registry.remove(job)
    queue.enqueue_job(job)


def jobs_retry(**selection) -> list[str]:
    """Run failed (or stopped, canceled) jobs again under their ids, with their whole retry budget."""
    return _apply(JobAction.Kind.RETRY, _retry, RETRYABLE, **selection)


def jobs_promote(**selection) -> list[str]:
    """Run scheduled jobs (a retry waiting for its delay, say) now."""
    return _apply(JobAction.Kind.PROMOTE, _promote, {JobStatus.SCHEDULED}, **selection)


def _leave_aside(job: Job) -> None:
    """Take a job of a paced queue out of the set it waits in (rq's cancel and delete see no rate limit
    on it, so they leave it there: `jobs.mail.throttle.promote` would drop it only at its turn)."""
    municipality = tenancy.municipality_of_job(job)
    if policies.QUEUES[job.origin].paced and municipality is not None:
        key = rq_compat.rate_limited_key(tenancy.cap_key(job.origin, municipality))
        job.connection.zrem(key, job.id)


def _cancel(job, *_):
    job.cancel()
    _leave_aside(job)


def _delete(job, *_):
    job.delete()
    _leave_aside(job)


def jobs_cancel(**selection) -> list[str]:
    return _apply(JobAction.Kind.CANCEL, _cancel, CANCELABLE, **selection)


def jobs_delete(**selection) -> list[str]:
    return _apply(JobAction.Kind.DELETE, _delete, None, **selection)


def queue_empty(*, queue_name: str, user=None, reason: str = "") -> int:
    """Delete every job waiting in the queue, or aside for its municipality's turn (running, scheduled
    and failed jobs stay); returns how many. The ones aside first: a job's end moves them to the queue."""
    queue = clients.queue(queue_name)
    aside = reads.fetch_jobs(queue, reads.job_ids(queue, "rate_limited", 0, reads.count(queue, "rate_limited")))
    for job in aside:
        _delete(job)
    count = len(aside) + queue.empty()
    action = action_record(kind=JobAction.Kind.EMPTY, queue_name=queue_name, job_ids=[], user=user, reason=reason)
    JobAction.objects.filter(pk=action.pk).update(count=count)
    return count


def queue_pause(*, queue_name: str, user=None, by: str, reason: str = "") -> bool:
    """Pause the queue (`jobs.config.pauses`); False if it was paused already."""
    done = pauses.pause(clients.redis(), queue_name, by)
    if done:
        action_record(kind=JobAction.Kind.PAUSE, queue_name=queue_name, job_ids=[], user=user, reason=reason, detail=by)
    return done


def queue_resume(*, queue_name: str, user=None, by: str, reason: str = "") -> bool:
    done = pauses.resume(clients.redis(), queue_name)
    if done:
        action_record(
            kind=JobAction.Kind.RESUME, queue_name=queue_name, job_ids=[], user=user, reason=reason, detail=by
        )
    return done


CLEANABLE = ("finished", "failed", "canceled")


def jobs_ended_before(*, queue_name: str, states, before: datetime) -> list[Job]:
    """The queue's jobs in `states` (of `CLEANABLE`) that ended (or were created, if they never
    ran) before `before`, read in batches."""
    queue, found = clients.queue(queue_name), []
    for state in states:
        total = reads.count(queue, state)
        for start in range(0, total, CLEAN_BATCH):
            jobs = reads.fetch_jobs(queue, reads.job_ids(queue, state, start, start + CLEAN_BATCH))
            found += [job for job in jobs if (job.ended_at or job.created_at) < before]
    return found


def queue_clean(*, queue_name: str, states, before: datetime, user=None, reason: str = "") -> int:
    """Delete the queue's ended jobs older than `before`; returns how many."""
    jobs = jobs_ended_before(queue_name=queue_name, states=states, before=before)
    connection = clients.queue(queue_name).connection
    for start in range(0, len(jobs), CLEAN_BATCH):
        with connection.pipeline() as pipe:
            for job in jobs[start : start + CLEAN_BATCH]:
                job.delete(pipeline=pipe)
            pipe.execute()
    job_ids = [job.id for job in jobs]
    detail = f"{', '.join(states)} < {before.isoformat(timespec='seconds')}"
    action_record(
        kind=JobAction.Kind.CLEAN, queue_name=queue_name, job_ids=job_ids, user=user, reason=reason, detail=detail,
        municipalities={job.id: tenancy.municipality_of_job(job) for job in jobs},
    )  # fmt: skip
    return len(job_ids)


def dead_letters_matching(
    *, queue_name: str, exc_type: str = "", since: datetime | None = None, municipality: int | None = None
):
    """Open dead letters (not retried, not resolved) of a queue, optionally one error type since a
    time, or one municipality's."""
    rows = DeadLetter.objects.filter(queue=queue_name, retried_at=None, resolved_at=None)
    if municipality is not None:
        rows = rows.filter(municipality=municipality)
    if exc_type:
        rows = rows.filter(exc_type=exc_type)
    if since:
        rows = rows.filter(failed_at__gte=since)
    return rows


def dead_letters_retry(
    *, rows, user=None, reason: str = "", detail: str = "", name_rows: bool = False
) -> tuple[list[str], list[str]]:
    """Retry each row that can run again; returns the job ids enqueued and why the others could not be.
    One audit entry per queue, naming its jobs (and with `name_rows`, in `detail`, the rows retried)."""
    retried, refused = [], []
    for row in rows:
        try:
            if dead_letter_retry(dead_letter=row, user=user).created:
                retried.append(row)
        except CannotRetry as error:
            refused.append(str(error))
    for queue_name in dict.fromkeys(row.queue for row in rows):
        done = [row for row in retried if row.queue == queue_name]
        named = " ".join(f"#{row.pk}" for row in done) if name_rows else ""
        action_record(
            kind=JobAction.Kind.RETRY, queue_name=queue_name, job_ids=[row.job_id for row in done], user=user,
            reason=reason, detail=f"{detail} {named}".strip() if named else detail,
            municipalities={row.job_id: row.municipality for row in done},
        )  # fmt: skip
    return [row.job_id for row in retried], refused

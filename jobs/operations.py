"""What staff can do to jobs in Redis. The dashboard, admin actions and commands call these;
each one records itself in the audit trail.
"""

from datetime import datetime

from django.utils import timezone
from rq.job import Job, JobStatus

from jobs import clients, reads
from jobs.audit import action_record
from jobs.dead_letters import CannotRetry, dead_letter_retry
from jobs.models import DeadLetter, JobAction
from jobs.producers import enqueue_stored_call

RETRYABLE = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}
CANCELABLE = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def _jobs(queue_name: str, job_ids: list[str]) -> list[Job]:
    """The jobs of `queue_name` among `job_ids`: an id of another queue's job (a crafted POST) or
    one that cannot be read is left out."""
    return [job for job in reads.fetch_jobs(clients.queue(queue_name), job_ids) if job.origin == queue_name]


def _apply(kind, do, states, *, queue_name: str, job_ids: list[str], user=None, reason: str = "") -> list[str]:
    """Do `do(job)` to each job in one of `states` (any state if None); record it; return the ids done."""
    done = []
    for job in _jobs(queue_name, job_ids):
        if states is None or job.get_status(refresh=False) in states:
            do(job, queue_name, user)
            done.append(job.id)
    action_record(kind=kind, queue_name=queue_name, job_ids=done, user=user, reason=reason)
    return done


def _retry(job, queue_name, user):
    enqueue_stored_call(queue_name=queue_name, func=job.func_name, job_id=job.id, kwargs=job.kwargs, args=job.args)
    DeadLetter.objects.filter(job_id=job.id, job_created_at=job.created_at).update(
        retried_at=timezone.now(), retried_by=user
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


def jobs_cancel(**selection) -> list[str]:
    return _apply(JobAction.Kind.CANCEL, lambda job, *_: job.cancel(), CANCELABLE, **selection)


def jobs_delete(**selection) -> list[str]:
    return _apply(JobAction.Kind.DELETE, lambda job, *_: job.delete(), None, **selection)


def queue_empty(*, queue_name: str, user=None, reason: str = "") -> int:
    """Delete every job waiting in the queue (running, scheduled and failed jobs stay); returns how many."""
    queue = clients.queue(queue_name)
    count = queue.empty()
    action = action_record(kind=JobAction.Kind.EMPTY, queue_name=queue_name, job_ids=[], user=user, reason=reason)
    JobAction.objects.filter(pk=action.pk).update(count=count)
    return count


def dead_letters_matching(*, queue_name: str, exc_type: str = "", since: datetime | None = None):
    """Open dead letters (not retried, not resolved) of a queue, optionally one error type since a time."""
    rows = DeadLetter.objects.filter(queue=queue_name, retried_at=None, resolved_at=None)
    if exc_type:
        rows = rows.filter(exc_type=exc_type)
    if since:
        rows = rows.filter(failed_at__gte=since)
    return rows


def dead_letters_retry(*, rows, user=None, reason: str = "", detail: str = "") -> tuple[list[str], list[str]]:
    """Retry each row that can run again; returns the job ids enqueued and why the others could not be."""
    retried, refused = [], []
    for row in rows:
        try:
            if dead_letter_retry(dead_letter=row, user=user).created:
                retried.append(row.job_id)
        except CannotRetry as error:
            refused.append(str(error))
    action_record(
        kind=JobAction.Kind.RETRY, queue_name=rows[0].queue if rows else "", job_ids=retried, user=user,
        reason=reason, detail=detail,
    )  # fmt: skip
    return retried, refused

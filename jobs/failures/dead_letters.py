"""Staff actions on the dead-letter archive: retry, resolve, prune. Admin and commands call these."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from jobs.enqueue import clients
from jobs.enqueue.producers import enqueue_stored_call
from jobs.enqueue.unique import Enqueued
from jobs.models import DeadLetter

UNREADABLE_PAYLOAD = "<payload that cannot be read>"  # the archive's func_name for a payload RQ could not decode
MASKED, TRUNCATED = "•••", "…"  # what the archive keeps of a secret argument, of a long one


class CannotRetry(Exception):
    pass


def dead_letter_retry(*, dead_letter: DeadLetter, user=None) -> Enqueued:
    """Enqueue the stored call again under its job id (even after Redis dropped the job)."""
    why = _why_not_retryable(dead_letter)
    if why:
        raise CannotRetry(_("%(job)s cannot run again: %(why)s") % {"job": dead_letter.job_id, "why": why})
    result = enqueue_stored_call(
        queue_name=dead_letter.queue,
        func=dead_letter.func_name,
        job_id=dead_letter.job_id,
        kwargs=dead_letter.kwargs,
        args=dead_letter.args,
    )
    if result.created:
        dead_letter.retried_at, dead_letter.retried_by = timezone.now(), user
        dead_letter.retry_created_at = retry_run_created_at(dead_letter.queue, dead_letter.job_id)
        dead_letter.save(update_fields=["retried_at", "retried_by", "retry_created_at"])
    return result


def retry_run_created_at(queue_name: str, job_id: str):
    """When the run just enqueued under `job_id` was created: the mark of that run (the id is reused)."""
    job = clients.queue(queue_name).fetch_job(job_id)
    return job.created_at if job else None


def _why_not_retryable(dead_letter: DeadLetter) -> str:
    if dead_letter.func_name in ("", UNREADABLE_PAYLOAD):
        return _("the job could not be read, so there is nothing to run again")
    if MASKED in dead_letter.kwargs.values() or MASKED in dead_letter.args:
        return _("its arguments were masked when archived")
    if TRUNCATED in dead_letter.args:
        return _("an argument was too long to archive")
    return ""


def dead_letter_resolve(*, dead_letter: DeadLetter, user=None) -> None:
    dead_letter.resolved_at, dead_letter.resolved_by = timezone.now(), user
    dead_letter.save(update_fields=["resolved_at", "resolved_by"])


def dead_letters_prune(*, older_than_days: int | None = None) -> int:
    days = settings.DEAD_LETTER_RETENTION_DAYS if older_than_days is None else older_than_days
    deleted, _ = DeadLetter.objects.filter(failed_at__lt=timezone.now() - timedelta(days=days)).delete()
    return deleted

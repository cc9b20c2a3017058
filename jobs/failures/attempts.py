"""What happens when one attempt of a job fails.

`on_job_failure` is attached to every job by the producers. RQ calls it on *every* failed
attempt, before it decides whether to retry (and also for a job found abandoned by a dead
worker), so it is where a task's error can change the retry: `PermanentJobError` cuts the
retries short, an error with `retry_after` (Slack's 429) stretches the next delay. It also logs
the attempt in the job's meta, which the dead-letter archive keeps, and marks a job that will be
retried later as retrying (`jobs.observability.retries`), for the dashboard and the metrics.
"""

from datetime import timedelta

from jobs.observability import retries
from jobs.rq_compat import now, remaining_retry_intervals


class PermanentJobError(Exception):
    """Raised by a task when another attempt cannot succeed (bad address, malformed payload)."""


def on_job_failure(job, connection, exc_type, exc_value, traceback) -> None:
    if isinstance(exc_value, PermanentJobError):
        job.retries_left = 0
    elif getattr(exc_value, "retry_after", None) and job.retries_left:
        job.retry_intervals = _with_next_delay(job.retry_intervals or [0], job.retries_left, exc_value.retry_after)
    record_attempt(job, f"{exc_type.__name__}: {exc_value}")
    if job.retries_left and job.get_retry_interval():  # RQ schedules the next attempt (else: queued at once)
        retries.mark(connection, job.origin, job.id, now() + timedelta(seconds=job.get_retry_interval()))


def record_attempt(job, error: str) -> None:
    job.meta.setdefault("failures", []).append(
        {"at": now().isoformat(), "error": error.splitlines()[0][:300] if error else ""}
    )
    job.save_meta()


def _with_next_delay(intervals: list[int], retries_left: int, delay: int) -> list[int]:
    """The remaining schedule spelled out, next delay >= `delay`."""
    remaining = remaining_retry_intervals(intervals, retries_left)
    remaining[0] = max(remaining[0], delay + 1)  # RQ schedules to the whole second, rounding down
    return remaining

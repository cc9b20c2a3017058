"""What happens when a job attempt fails.

`on_job_failure` is attached to every job by the producers. RQ calls it on *every* failed
attempt, before it decides whether to retry, so it is the one place where a task's
`PermanentJobError` can cut the retries short.
"""


class PermanentJobError(Exception):
    """Raised by a task when another attempt cannot succeed (bad address, malformed payload)."""


def on_job_failure(job, connection, exc_type, exc_value, traceback) -> None:
    if isinstance(exc_value, PermanentJobError):
        job.retries_left = 0

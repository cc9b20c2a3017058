"""Jobs waiting for their next attempt after a failure: "retrying", told apart from other scheduled jobs.

RQ schedules a retry like any job enqueued for later, in the queue's scheduled registry. The failure
callback also adds the job id to `<prefix>:retrying:<queue>`, a sorted set by the time of the next
attempt; a job is retrying while it is in both. Nothing has to take an id out again: a job that runs,
is promoted or deleted leaves the scheduled registry, and ids a day past their attempt are trimmed
at the next mark.
"""

from datetime import datetime

from jobs.rq_compat import KEY_PREFIX

FORGET_AFTER = 24 * 3600  # seconds after its attempt time an id is trimmed (no retry waits that long)


def key(queue_name: str) -> str:
    return f"{KEY_PREFIX}:retrying:{queue_name}"


def mark(connection, queue_name: str, job_id: str, next_attempt: datetime) -> None:
    at = next_attempt.timestamp()
    with connection.pipeline(transaction=False) as pipe:
        pipe.zadd(key(queue_name), {job_id: at})
        pipe.zremrangebyscore(key(queue_name), "-inf", at - FORGET_AFTER)
        pipe.execute()


def count(queue) -> int:
    """Retrying jobs of the queue: O(retrying), whatever else is scheduled."""
    return queue.connection.zintercard(2, [queue.scheduled_job_registry.key, key(queue.name)])


def job_ids(queue, start: int, stop: int) -> list[str]:
    """Retrying jobs `start`..`stop` (exclusive), the next attempt first."""
    ids = queue.connection.zinter({queue.scheduled_job_registry.key: 1, key(queue.name): 0})
    return [job_id.decode() for job_id in ids[start:stop]]


def other_scheduled_ids(queue, start: int, stop: int) -> list[str]:
    """Scheduled jobs that are not retries, `start`..`stop` (exclusive), the latest first. Reads the
    registry's page directly while no retry waits (the usual case), its difference otherwise."""
    connection, registry = queue.connection, queue.scheduled_job_registry.key
    if not count(queue):
        return [job_id.decode() for job_id in connection.zrevrange(registry, start, stop - 1)]
    ids = connection.zdiff([registry, key(queue.name)])
    return [job_id.decode() for job_id in list(reversed(ids))[start:stop]]


def is_retrying(queue, job_id: str) -> bool:
    return queue.connection.zscore(key(queue.name), job_id) is not None

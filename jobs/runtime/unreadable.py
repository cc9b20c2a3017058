"""Jobs that cannot be read are set aside, archived and alerted, never run and never fatal.

An id RQ refuses (only letters, digits, `_` and `-`), or a job hash RQ cannot restore, would make
every reader raise and make RQ's workers quit. The worker that dequeues one sets it aside instead
(`set_aside`): out of the queue's lists, its hash renamed to `<prefix>:unreadable:<n>` for a day
(for someone to look at with redis-cli), and a dead letter with an alert, like any final failure.
Entries of the registries that RQ itself reads when they come due (started jobs at their expiry,
scheduled ones at their time, ready ones) are checked by every worker's maintenance before RQ's
clean-up and scheduler meet them (`sweep_registries`). Readers (`jobs.observability.reads`) show what they cannot
read as such, and count it.
"""

import logging
import time

from django.conf import settings
from django.utils import timezone
from rq.job import Job

from jobs.config import policies
from jobs.enqueue import clients
from jobs.enqueue.producers import schedule_alert_flush
from jobs.models import DeadLetter
from jobs.observability.reads import fetch_jobs, printable, valid_id

log = logging.getLogger(__name__)

KEPT_FOR = policies.DAY  # seconds the renamed hash stays in Redis
# Registries whose due entries RQ fetches (clean-up, scheduler); the others it only trims by score.
READ_WHEN_DUE = ("started", "scheduled", "ready")
SWEEP_BATCH = 1000  # due entries per registry and sweep


def sweep_registries(connection, queue_names) -> None:
    """Set aside the unreadable jobs among the due entries RQ is about to read (`READ_WHEN_DUE`)."""
    for name in queue_names:
        queue = clients.queue(name)
        for state in READ_WHEN_DUE:
            registry = getattr(queue, f"{state}_job_registry")
            entries = connection.zrangebyscore(registry.key, "-inf", time.time(), start=0, num=SWEEP_BATCH)
            ids = {registry.parse_job_id(entry): entry for entry in entries}
            readable = set(ids) & {job.id for job in fetch_jobs(queue, list(ids))}
            for job_id in set(ids) - readable:
                if connection.exists(Job.key_for(job_id)) or not valid_id(job_id):  # gone: RQ drops it
                    set_aside(connection, job_id, f"unreadable in the {state} registry", queue_name=name,
                              registry=(registry.key, ids[job_id]))  # fmt: skip


def set_aside(connection, job_id: str, reason: str, *, queue_name: str = "", registry: tuple | None = None) -> None:
    """Take `job_id` out of every queue's waiting and intermediate lists (or out of `registry`, a
    key and its entry), keep its hash aside, archive and alert. Safe to call twice: the second finds
    nothing to move and archives nothing, unless the caller took the id out of `queue_name`'s lists."""
    names = list(policies.QUEUES)
    with connection.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.lrem(clients.queue(name).key, 0, job_id)
            pipe.lrem(clients.queue(name).intermediate_queue_key, 0, job_id)
        if registry:
            pipe.zrem(*registry)
        removed = pipe.execute()
    found_in = [name for n, name in enumerate(names) if removed[2 * n] or removed[2 * n + 1]]
    queue_name = found_in[0] if found_in else queue_name if (not registry or removed[-1]) else ""
    if not queue_name:
        return  # another worker set it aside already
    aside = f"{settings.RQ_KEY_PREFIX}:unreadable:{connection.incr(f'{settings.RQ_KEY_PREFIX}:unreadable-count')}"
    key = Job.key_for(job_id)
    if connection.exists(key):
        connection.rename(key, aside)
        connection.expire(aside, KEPT_FOR)
    moment = timezone.now()
    DeadLetter.objects.create(
        job_id=printable(job_id)[:200],
        job_created_at=moment,
        queue=queue_name,
        func_name="",
        exc_type="UnreadableJob",
        exc_message=f"{reason[:400]} (set aside in Redis as {aside})",
        traceback="",
        failed_at=moment,
        alert=DeadLetter.Alert.PENDING,
    )
    log.error("job %r in %s cannot be read (%s): set aside as %s", job_id, queue_name, reason, aside)
    schedule_alert_flush(queue_name=queue_name, delay=policies.QUEUES[queue_name].alert_window)

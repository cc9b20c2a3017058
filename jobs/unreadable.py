"""Jobs that cannot be read are set aside, archived and alerted, never run and never fatal.

An id RQ refuses (only letters, digits, `_` and `-`), or a job hash RQ cannot restore, would make
every reader raise and make RQ's workers quit. The worker that dequeues one sets it aside instead
(`set_aside`): out of the queue's lists, its hash renamed to `<prefix>:unreadable:<n>` for a day
(for someone to look at with redis-cli), and a dead letter with an alert, like any final failure.
Readers (`jobs.reads`) skip what they cannot read and count it.
"""

import logging

from django.conf import settings
from django.utils import timezone
from rq.job import JOB_ID_PATTERN, Job

from jobs import clients, queues
from jobs.models import DeadLetter
from jobs.producers import schedule_alert_flush

log = logging.getLogger(__name__)

KEPT_FOR = queues.DAY  # seconds the renamed hash stays in Redis


def valid_id(job_id: str) -> bool:
    return bool(JOB_ID_PATTERN.fullmatch(job_id))  # what rq's `validate_job_id` accepts


def set_aside(connection, job_id: str, reason: str, *, queue_name: str = "") -> None:
    """Take `job_id` out of every queue's waiting and intermediate lists, keep its hash aside,
    archive and alert. Safe to call twice: the second finds nothing to move and archives nothing,
    unless the caller took the id out of `queue_name`'s lists itself."""
    names = list(queues.QUEUES)
    aside = f"{settings.RQ_KEY_PREFIX}:unreadable:{connection.incr(f'{settings.RQ_KEY_PREFIX}:unreadable-count')}"
    with connection.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.lrem(clients.queue(name).key, 0, job_id)
            pipe.lrem(clients.queue(name).intermediate_queue_key, 0, job_id)
        removed = pipe.execute()
    found_in = [name for n, name in enumerate(names) if removed[2 * n] or removed[2 * n + 1]]
    queue_name = found_in[0] if found_in else queue_name
    if not queue_name:
        return  # another worker set it aside already
    key = Job.key_for(job_id)
    if connection.exists(key):
        connection.rename(key, aside)
        connection.expire(aside, KEPT_FOR)
    moment = timezone.now()
    DeadLetter.objects.create(
        job_id=job_id.encode("unicode_escape").decode("ascii")[:200],  # NUL bytes and all, printable
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
    schedule_alert_flush(queue_name=queue_name, delay=queues.QUEUES[queue_name].alert_window)

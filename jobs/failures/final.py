"""Final failures: archived once, alerted once, never lost.

RQ gives no single moment when a job has failed for good, so two paths look for it:

1. Fast path: `CeresWorker.handle_job_failure` runs after every failed attempt, in the
   work-horse for an exception and in the worker for a work-horse that died (SIGKILL, OOM);
   when the job ends FAILED it calls `archive()` right away.
2. Sweep: `sweep_failures()` runs from every worker's maintenance loop (at most once a minute
   across all workers). It hands jobs abandoned by a dead worker to RQ's cleanup, which retries
   them or moves them to the failed registry, then archives every failed job not archived yet.

Both paths meet at one atomic marker: the `DeadLetter` row, unique per job run. Whoever creates
it owns the alert. Alerts are not sent one by one: the first pending failure of a queue schedules a
flush `alert_window` seconds later (policy), which sends the failure itself when it is alone, or a
single summary for an alert storm. The slack queue never alerts about itself, and errors the policy
expects are archived without an alert.

Alarms about the system itself (crons, service levels) live in `jobs.failures.alarms`.
"""

import inspect
import logging
import re
from contextlib import contextmanager

from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus

from jobs import rq_compat
from jobs.config import policies, task_names, tenancy
from jobs.enqueue import clients
from jobs.enqueue.producers import enqueue_slack_alert, schedule_alert_flush
from jobs.failures.dead_letters import MASKED, TRUNCATED, UNREADABLE_PAYLOAD
from jobs.failures.slack_texts import single_alert, summary_alert
from jobs.models import DeadLetter
from jobs.observability import metrics

log = logging.getLogger(__name__)

SECRET_ARG = re.compile(r"pass|secret|token|key|auth|webhook|cookie|session", re.IGNORECASE)
# job argument -> the model its value points at
RELATED_ARGS = {"user_id": "accounts.user", "upload_id": "accounts.upload"}
SWEEP_LOCK_TTL = 30  # seconds; a sweep takes well under one
SWEEP_LOOKBACK = 3600  # seconds of failed-registry history each sweep reads again, for late writers


def archive(job: Job, exc_string: str) -> DeadLetter | None:
    """Archive the final failure of `job`; returns the row if this call created it (and owns the alert)."""
    policy = policies.QUEUES.get(job.origin)
    exc_type, message = fingerprint(exc_string)
    func_name, args, kwargs = _call(job)
    municipality = tenancy.municipality_of(kwargs)
    if policy is None or not policy.alert_on_final_failure:
        alert, note = DeadLetter.Alert.SKIPPED, _("queue %(queue)s does not alert about itself") % {"queue": job.origin}
    elif exc_type in policy.expected_errors:
        alert, note = DeadLetter.Alert.SKIPPED, _("expected error (%(error)s)") % {"error": exc_type}
    elif not tenancy.webhook_for(municipality):  # the check jobs.W001 says so at every start
        alert, note = DeadLetter.Alert.SKIPPED, _("no Slack webhook is configured (SLACK_WEBHOOK_URL)")
    else:
        alert, note = DeadLetter.Alert.PENDING, ""
    related_model, related_id = next(
        ((model, str(kwargs[arg])) for arg, model in RELATED_ARGS.items() if arg in kwargs), ("", "")
    )
    try:
        with transaction.atomic():
            row = DeadLetter.objects.create(
                job_id=job.id,
                job_created_at=job.created_at,
                queue=job.origin,
                func_name=func_name,
                args=_mask_list(func_name, args),
                kwargs=_mask(kwargs),
                exc_type=exc_type,
                exc_message=message,
                traceback=exc_string,
                attempts=job.meta.get("failures", []),
                failed_at=job.ended_at or timezone.now(),
                related_model=related_model,
                related_id=related_id,
                municipality=municipality,
                alert=alert,
                alert_note=note,
            )
            _on_final_failure(func_name, kwargs)  # in the same transaction: a sweep tries both again
    except IntegrityError:
        return None  # the other path got here first
    log.warning("job %s failed for good in %s: %s: %s", job.id, job.origin, exc_type, message)
    if alert == DeadLetter.Alert.PENDING:
        schedule_alert_flush(queue_name=job.origin, delay=policy.alert_window)
    return row


def _on_final_failure(func_name: str, kwargs: dict) -> None:
    """The task's own hook (`jobs.tasks.ON_FINAL_FAILURE`): an upload's owner learns its check failed."""
    if func_name in task_names.ON_FINAL_FAILURE:
        import_string(task_names.ON_FINAL_FAILURE[func_name])(**kwargs)


def fingerprint(exc_string: str) -> tuple[str, str]:
    """(exception type name, first line of its message) from a formatted traceback or RQ's note."""
    if exc_string.startswith(rq_compat.WORK_HORSE_KILLED):
        return "WorkHorseKilled", exc_string.strip().rstrip(";")
    if rq_compat.ABANDONED in exc_string and "Traceback" not in exc_string:
        return rq_compat.ABANDONED, "the worker running it died"
    for line in reversed(exc_string.splitlines()):
        match = re.match(r"([A-Za-z_][\w.]*)(?:: (.*))?$", line)
        if match and not line.startswith((" ", "Traceback", "During handling", "The above exception")):
            return match.group(1).rsplit(".", 1)[-1], (match.group(2) or "")[:500]
    return "UnknownError", exc_string.strip().splitlines()[-1][:500] if exc_string.strip() else ""


def flush_alerts(queue_name: str) -> str:
    """Slack-queue job: send what failed in `queue_name` since the last flush, one message per
    municipality (to its webhook: `post_to_slack`), failures of no municipality in the platform's."""
    with transaction.atomic():
        rows = list(
            DeadLetter.objects.select_for_update(skip_locked=True)
            .filter(queue=queue_name, alert=DeadLetter.Alert.PENDING)
            .order_by("failed_at", "pk")
        )
        if not rows:
            return _("nothing to alert")
        groups: dict[int | None, list[DeadLetter]] = {}
        for row in rows:
            groups.setdefault(row.municipality, []).append(row)
        for municipality, group in groups.items():
            text = single_alert(group[0]) if len(group) == 1 else summary_alert(queue_name, group)
            kind = DeadLetter.Alert.SENT if len(group) == 1 else DeadLetter.Alert.SUMMARY
            DeadLetter.objects.filter(pk__in=[row.pk for row in group]).update(alert=kind, alerted_at=timezone.now())
            enqueue_slack_alert(text=text, dedupe_key=f"deadletter-{group[0].pk}", municipality=municipality)
    metrics.count(clients.redis(), "alerts", queue_name, len(groups))  # one message per municipality
    alerted = ngettext("alerted %(n)d failure in %(queue)s", "alerted %(n)d failures in %(queue)s", len(rows))
    return alerted % {"n": len(rows), "queue": queue_name}


def sweep_failures(*, now: float | None = None) -> int:
    """Find final failures the fast path missed; returns how many it archived.

    `now` (a Unix time) is when abandoned jobs are judged; tests pass a later one instead of waiting.
    """
    archived = _sweep(list(map(clients.queue, policies.QUEUES)), now)
    for name in policies.QUEUES:
        if DeadLetter.objects.filter(queue=name, alert=DeadLetter.Alert.PENDING).exists():
            schedule_alert_flush(queue_name=name, delay=policies.QUEUES[name].alert_window)
    return archived


def sweep_abandoned(*, now: float | None = None) -> int:
    """The quick part of the sweep, run every few seconds by `jobs.runtime.slots.reap_dead_workers`: only
    the queues where a job's worker died."""
    every = map(clients.queue, policies.QUEUES)
    return _sweep([queue for queue in every if queue.started_job_registry.get_expired_job_ids(now)], now)


def _sweep(found: list, now: float | None) -> int:
    """A dead worker's jobs go to RQ's abandoned-job handling (retried, or failed), then every
    failed job not archived yet is archived; returns how many."""
    if not found:
        return 0
    with _sweep_lock() as locked:
        if not locked:
            return 0
        archived = 0
        for queue in found:
            queue.started_job_registry.cleanup(timestamp=now)
            archived += _archive_failed_registry(queue)
        return archived


@contextmanager
def _sweep_lock():
    """One sweep at a time across all workers; a holder that died blocks the others for SWEEP_LOCK_TTL at most."""
    connection = clients.redis()
    lock = connection.lock(f"{settings.RQ_KEY_PREFIX}:sweep-lock", timeout=SWEEP_LOCK_TTL, blocking=False)
    locked = lock.acquire()
    try:
        yield locked
    finally:
        if locked:
            lock.release()


def _archive_failed_registry(queue) -> int:
    registry = queue.failed_job_registry
    cursor_key = f"{settings.RQ_KEY_PREFIX}:sweep-cursor:{queue.name}"
    cursor = float(queue.connection.get(cursor_key) or 0)
    entries = queue.connection.zrangebyscore(registry.key, cursor - SWEEP_LOOKBACK, "+inf", withscores=True)
    if not entries:
        return 0
    ids = [job_id.decode() for job_id, _ in entries]
    known = set(DeadLetter.objects.filter(job_id__in=ids).values_list("job_id", "job_created_at"))
    archived = 0
    for job in Job.fetch_many(ids, connection=queue.connection, serializer=queue.serializer):
        if job is None or (job.id, job.created_at) in known or job.get_status(refresh=False) != JobStatus.FAILED:
            continue
        result = job.latest_result()
        if archive(job, result.exc_string if result and result.exc_string else "UnknownError: no record"):
            archived += 1
    queue.connection.set(cursor_key, max(score for _, score in entries))
    return archived


def close_db_connections() -> None:
    """The worker forks a work-horse per job; a DB connection opened in the worker must not be shared."""
    connections.close_all()


def _call(job: Job) -> tuple[str, list, dict]:
    try:
        return job.func_name, list(job.args), dict(job.kwargs)
    except DeserializationError:
        return UNREADABLE_PAYLOAD, [], {}


def _mask(kwargs: dict) -> dict:
    return {key: MASKED if SECRET_ARG.search(key) else value for key, value in kwargs.items()}


def _mask_list(func_name: str, args: list) -> list:
    """Positional arguments are masked by the name of the parameter each fills; when the function
    cannot tell (not a registered task, `*args`), every one is, so no secret is kept whatever its length."""
    names = _positional_names(func_name)
    return [MASKED if n >= len(names) or SECRET_ARG.search(names[n]) else _short(arg) for n, arg in enumerate(args)]


def _short(arg):
    return arg if isinstance(arg, (int, float, bool)) or arg is None or len(str(arg)) < 200 else TRUNCATED


def _positional_names(func_name: str) -> list[str]:
    """The names of the parameters a task's positional arguments fill; none for anything else."""
    if not task_names.allowed(func_name, task_names.TASKS):
        return []
    try:
        parameters = inspect.signature(import_string(func_name)).parameters.values()
    except (ImportError, TypeError, ValueError):
        return []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [parameter.name for parameter in parameters if parameter.kind in positional]

"""Alarms about the system itself, rung from the workers' maintenance loop: the crons' dead-man
alarm and the queues' service levels. Each alarm alerts Slack once when it starts and once when it ends.
"""

from datetime import datetime, timedelta

import django_rq
from django.conf import settings
from django.utils import timezone

from jobs.enqueue import clients

from jobs.config import crons, policies

from jobs.observability import health, reads
from jobs.failures.slack_texts import escape, local_time
from jobs.models import CronRun
from jobs.enqueue.producers import enqueue_slack_alert


def check_crons(*, at: datetime | None = None) -> list[str]:
    """The dead-man alarm: one Slack alert when a cron has not completed a slot within its grace
    period (the scheduler or the maintenance worker is down), one more when it completes again.
    Only registered crons are watched, from their registration on. Returns the alerts sent.
    """
    at = at or crons.now()
    scheduler = django_rq.get_scheduler(policies.MAINTENANCE.name)
    sent = []
    for spec in crons.SPECS.values():
        entry = scheduler.cron_entry(spec.name)
        if entry is None:
            continue
        slot = spec.last_slot(at - timedelta(seconds=spec.grace))  # the latest slot whose grace is over
        if slot < datetime.fromisoformat(entry.meta["registered_at"]):
            continue
        ran = CronRun.objects.filter(name=spec.name, slot__gte=slot, finished_at__isnull=False).exists()
        breach = (
            f":warning: El cron *{spec.name}* (`{spec.schedule}`, Córdoba) no completó la ejecución de las "
            f"{local_time(slot)}: ¿están vivos `rqscheduler` y el worker de {spec.queue}?"
        )
        sent += _alarm(f"cron-alarm:{spec.name}", not ran, breach,
                       f":white_check_mark: El cron *{spec.name}* volvió a completar sus ejecuciones.")  # fmt: skip
    return sent


SLO_GRACE = 120  # seconds a breach must last before it alerts: a deploy's restart is no outage


def check_slos(*, grace: int = SLO_GRACE) -> list[str]:
    """Service-level alarms per queue (thresholds in its policy): no live worker, a backlog older than
    `max_wait`, a failure rate over `max_failure_rate`. One alert per breach, one on recovery."""
    sent = []
    for name in policies.QUEUES:
        for check in health.queue_checks(reads.queue_stats(name)):
            sent += _alarm(f"slo-alarm:{check.name}", check.status != "ok",
                           f":warning: *{escape(check.name)}* fuera de lo esperado: {escape(check.detail)}",
                           f":white_check_mark: *{escape(check.name)}* volvió a la normalidad: {escape(check.detail)}",
                           after=grace)  # fmt: skip
    return sent


def _alarm(name: str, breached: bool, on_breach: str, on_recovery: str, after: int = 0) -> list[str]:
    """Raise the alarm `name` once a breach has lasted `after` seconds, clear it once it is over;
    returns the message sent, if any. Redis keys make "once" hold across every worker."""
    connection = clients.redis()
    key, since_key = f"{settings.RQ_KEY_PREFIX}:{name}", f"{settings.RQ_KEY_PREFIX}:{name}:since"
    now = timezone.now()
    if breached:
        connection.set(since_key, now.timestamp(), nx=True)
        lasted = now.timestamp() - float(connection.get(since_key) or now.timestamp())
        if lasted < after or not connection.set(key, now.isoformat(), nx=True):
            return []
        text = on_breach
    else:
        connection.delete(since_key)
        if not connection.delete(key):
            return []
        text = on_recovery
    enqueue_slack_alert(text=text)
    return [text]

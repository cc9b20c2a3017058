"""Alarms about the system itself, rung from the workers' maintenance loop: the crons' dead-man
alarm and the queues' service levels. Each alarm alerts Slack once when it starts and once when it ends.
"""

from datetime import datetime, timedelta

import django_rq
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from jobs.config import crons, policies
from jobs.enqueue import clients
from jobs.enqueue.producers import enqueue_slack_alert
from jobs.failures.slack_texts import escape, local_time
from jobs.models import CronRun
from jobs.observability import health, reads


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
        breach = _(
            ":warning: The cron *%(cron)s* (`%(schedule)s`, Córdoba) did not complete its run of %(slot)s: "
            "are `rqscheduler` and the %(queue)s worker alive?"
        ) % {"cron": spec.name, "schedule": spec.schedule, "slot": local_time(slot), "queue": spec.queue}
        recovery = _(":white_check_mark: The cron *%(cron)s* completes its runs again.") % {"cron": spec.name}
        sent += _alarm(f"cron-alarm:{spec.name}", not ran, breach, recovery)
    return sent


SLO_GRACE = 120  # seconds a breach must last before it alerts: a deploy's restart is no outage


def check_slos(*, grace: int = SLO_GRACE) -> list[str]:
    """Service-level alarms per queue (thresholds in its policy): no live worker, a backlog older than
    `max_wait`, a failure rate over `max_failure_rate`. One alert per breach, one on recovery."""
    sent = []
    for name in policies.QUEUES:
        stats = reads.queue_stats(name)
        for check in health.queue_checks(stats):
            said = {"check": escape(check.name), "detail": escape(check.detail)}  # in Spanish: the worker's language
            sent += _alarm(f"slo-alarm:{check.name}", check.status != "ok",
                           _(":warning: *%(check)s* out of bounds: %(detail)s") % said,
                           _(":white_check_mark: *%(check)s* back to normal: %(detail)s") % said,
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

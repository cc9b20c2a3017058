"""Maintenance queue tasks. Each is a thin wrapper over the function its management command calls.
Their results are for staff (the dashboard), so they are translated."""

from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ceres_site.accounts.reports import report_daily, report_text
from ceres_site.accounts.tokens import tokens_clean
from ceres_site.municipalities.models import Municipality
from jobs.config import crons
from jobs.enqueue.producers import enqueue_slack_alert
from jobs.failures.attempts import PermanentJobError
from jobs.failures.dead_letters import dead_letters_prune
from jobs.models import CronRun


def run_cron(name: str, slot: str) -> str:
    """Run cron `name` for its `slot` once: a slot that already ran (even after Redis forgot it) is skipped."""
    spec = crons.SPECS.get(name)
    if spec is None:
        raise PermanentJobError(f"no cron named {name!r} in jobs.config.crons")
    slot_at = datetime.fromisoformat(slot)
    run, created = CronRun.objects.get_or_create(name=name, slot=slot_at)
    if run.finished_at:
        return _("skipped: %(cron)s already ran for %(slot)s") % {"cron": name, "slot": slot}
    result = import_string(spec.task)(slot=slot_at)
    CronRun.objects.filter(pk=run.pk).update(finished_at=timezone.now(), result=result[:500])
    return result


def clean_verification_tokens(slot: datetime | None = None) -> str:
    deleted = tokens_clean()
    return ngettext("deleted %(n)d verification token", "deleted %(n)d verification tokens", deleted) % {"n": deleted}


def daily_report(slot: datetime) -> str:
    """Post the report of the Córdoba day before the slot's: the platform's to its webhook, and each
    other active municipality's own to that municipality's."""
    day = crons.local_day(slot) - timedelta(days=1)
    enqueue_slack_alert(text=report_text(report_daily(day=day)), dedupe_key=f"daily-report-{day.isoformat()}")
    for municipality in Municipality.objects.filter(active=True, is_default=False):
        enqueue_slack_alert(
            text=report_text(report_daily(day=day, municipality=municipality)),
            dedupe_key=f"daily-report-{day.isoformat()}-{municipality.slug}",
            municipality=municipality.pk,
        )
    return _("posted the report of %(day)s") % {"day": day.isoformat()}


def prune_dead_letters(slot: datetime | None = None) -> str:
    deleted = dead_letters_prune()
    return ngettext("deleted %(n)d dead letter", "deleted %(n)d dead letters", deleted) % {"n": deleted}

"""The daily report: the numbers of one Córdoba day (midnight to midnight), for Slack: the platform's,
and each municipality's own (its users, emails and jobs; the oldest waits are the platform's alone)."""

from dataclasses import dataclass
from datetime import date

from django.db.models import Count
from django.utils.translation import gettext as _

from ceres_site.accounts.models import EmailDelivery, User
from ceres_site.municipalities.models import Municipality
from jobs.config import crons, policies
from jobs.enqueue import clients
from jobs.models import DeadLetter
from jobs.observability import series


@dataclass(frozen=True)
class DailyReport:
    day: date
    municipality: str  # "" for the platform's report
    users_registered: int
    users_verified: int
    emails_sent: dict[str, int]  # kind -> count
    jobs: dict[str, tuple[int, int]]  # queue -> (completed, failed for good)
    dead_letters_open: int
    oldest_waiting: dict[str, float | None]  # queue -> age in seconds of its oldest queued job


def report_daily(*, day: date, municipality: Municipality | None = None) -> DailyReport:
    """The platform's report, or `municipality`'s alone."""
    start, end = crons.day_bounds(day)
    users, deliveries, dead_letters = User.objects.all(), EmailDelivery.objects.all(), DeadLetter.objects.all()
    if municipality is not None:
        users, deliveries = users.filter(municipality=municipality), deliveries.filter(user__municipality=municipality)
        dead_letters = dead_letters.filter(municipality=municipality.pk)
    sent = dict(deliveries.filter(sent_at__gte=start, sent_at__lt=end).values_list("kind").annotate(Count("id")))
    failed = dict(
        dead_letters.filter(failed_at__gte=start, failed_at__lt=end).values_list("queue").annotate(Count("id"))
    )
    connection = clients.redis()
    return DailyReport(
        day=day,
        municipality=municipality.name if municipality is not None else "",
        users_registered=users.filter(date_joined__gte=start, date_joined__lt=end).count(),
        users_verified=users.filter(email_verified_at__gte=start, email_verified_at__lt=end).count(),
        emails_sent={kind: sent.get(kind, 0) for kind in EmailDelivery.Kind.values},
        jobs={
            name: (
                series.done_between(connection, name, start, end, municipality.pk if municipality else None),
                failed.get(name, 0),
            )
            for name in policies.QUEUES
        },
        dead_letters_open=dead_letters.filter(resolved_at=None, retried_at=None).count(),
        oldest_waiting={} if municipality else {name: _oldest_waiting(name) for name in policies.QUEUES},
    )


def report_text(report: DailyReport) -> str:
    day = f"{report.day:%d/%m/%Y}"
    if report.municipality:
        title = _(":bar_chart: Daily report of %(municipality)s — %(day)s (Córdoba)")
        title %= {"municipality": report.municipality, "day": day}
    else:
        title = _(":bar_chart: Ceres daily report — %(day)s (Córdoba)") % {"day": day}
    both = " · ".join(f"{name} {done}/{failed}" for name, (done, failed) in report.jobs.items())
    jobs = _("• Jobs completed/failed per queue: %(jobs)s") % {"jobs": both}
    lines = [
        title,
        _("• Registered users: %(registered)d · verified: %(verified)d")
        % {"registered": report.users_registered, "verified": report.users_verified},
        _("• Emails sent: verification %(verify)d · welcome %(welcome)d · existing account %(exists)d")
        % report.emails_sent,
        jobs,
        _("• Open dead letters: %(n)d") % {"n": report.dead_letters_open},
    ]
    if report.oldest_waiting:
        waiting = " · ".join(f"{name} {_age(age)}" for name, age in report.oldest_waiting.items())
        lines.append(_("• Oldest waiting job: %(waiting)s") % {"waiting": waiting})
    return "\n".join(lines)


def _oldest_waiting(queue_name: str) -> float | None:
    queue = clients.queue(queue_name)
    for job_id in queue.get_job_ids(0, 1):
        job = queue.fetch_job(job_id)
        if job and job.enqueued_at:
            return (crons.now() - job.enqueued_at).total_seconds()
    return None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"

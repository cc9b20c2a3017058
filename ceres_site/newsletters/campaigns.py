"""Sending, pausing and resuming a newsletter, its progress and how long a send takes. Admin calls
these; sending, pausing and resuming are audited."""

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from ceres_site.accounts.models import User
from ceres_site.municipalities.models import Municipality
from jobs.config.policies import BULK, BULK_OWN, BULKS
from jobs.enqueue.producers import drop_held_newsletter, enqueue_newsletter_many
from jobs.mail import throttle
from jobs.models import DeadLetter, JobAction
from jobs.staff.audit import action_record

from .models import Delivery, Newsletter


def audience(municipality: int):
    """The municipality's verified, active users who have not unsubscribed."""
    return User.objects.filter(
        municipality=municipality, is_active=True, email_verified_at__isnull=False,
        newsletter_unsubscribed_at__isnull=True,
    ).exclude(email="")  # fmt: skip


def send(newsletter: Newsletter, user) -> int:
    """Start sending a draft: one job per recipient; returns how many."""
    with transaction.atomic():
        newsletter = Newsletter.objects.select_for_update().get(pk=newsletter.pk)
        if newsletter.state != Newsletter.State.DRAFT:
            return 0
        ids = list(audience(newsletter.municipality_id).order_by("pk").values_list("pk", flat=True))
        if not ids:  # a campaign to nobody would read "sending" for ever
            return 0
        newsletter.state, newsletter.recipients = Newsletter.State.SENDING, len(ids)
        newsletter.sent_at, newsletter.sent_by = timezone.now(), user
        newsletter.save(update_fields=["state", "recipients", "sent_at", "sent_by"])
        _enqueue(newsletter, ids)
        _audit(JobAction.Kind.SEND, newsletter, user, len(ids))
    return len(ids)


def pause(newsletter: Newsletter, user) -> bool:
    """Its waiting jobs finish without sending (quickly), and those still waiting for an own server's
    turn are deleted, so the server's turns go to what comes next; `resume` enqueues whoever is left."""
    changed = Newsletter.objects.filter(pk=newsletter.pk, state=Newsletter.State.SENDING).update(
        state=Newsletter.State.PAUSED
    )
    if changed:
        drop_held_newsletter(newsletter_id=newsletter.pk, municipality=newsletter.municipality_id)
        _audit(JobAction.Kind.PAUSE, newsletter, user, 0)
    return bool(changed)


def resume(newsletter: Newsletter, user) -> int:
    """Send again to every recipient without a copy yet; returns how many jobs that is."""
    with transaction.atomic():
        if not Newsletter.objects.filter(pk=newsletter.pk, state=Newsletter.State.PAUSED).update(
            state=Newsletter.State.SENDING
        ):
            return 0
        delivered = Delivery.objects.filter(newsletter=newsletter).values("user_id")
        waiting = list(audience(newsletter.municipality_id).exclude(pk__in=delivered)
                       .filter(date_joined__lte=newsletter.sent_at).order_by("pk").values_list("pk", flat=True))  # fmt: skip
        _enqueue(newsletter, waiting)
        _audit(JobAction.Kind.RESUME, newsletter, user, len(waiting))
    return len(waiting)


def _enqueue(newsletter: Newsletter, user_ids: list[int]) -> None:
    """A job per recipient: through the municipality's own server at its pace if it has one, else the
    installation's bulk queue."""
    municipality, own_server = newsletter.municipality, bool(newsletter.municipality.smtp_host)
    municipality.publish_smtp_limits()
    enqueue_newsletter_many(
        newsletter_id=newsletter.pk, user_ids=user_ids, municipality=municipality.pk, own_server=own_server
    )
    if own_server:  # its first turn now: an idle worker would look for it only after its wait (5 s)
        transaction.on_commit(lambda: throttle.promote(BULK_OWN.name), robust=True)


@dataclass
class Progress:
    recipients: int
    sent: int
    failed: int
    unsubscribed: int

    @property
    def pending(self) -> int:
        return max(self.recipients - self.sent - self.failed - self.unsubscribed, 0)


def progress(newsletter: Newsletter) -> Progress:
    sent = Delivery.objects.filter(newsletter=newsletter).count()
    failed = DeadLetter.objects.filter(
        queue__in=BULKS, job_id__startswith=f"bulk-nl{newsletter.pk}-", retried_at=None
    ).count()
    unsubscribed = 0
    if newsletter.sent_at:
        unsubscribed = (
            User.objects.filter(
                Q(newsletter_unsubscribed_at__gte=newsletter.sent_at), date_joined__lte=newsletter.sent_at
            )
            .exclude(pk__in=Delivery.objects.filter(newsletter=newsletter).values("user_id"))
            .count()
        )
    return Progress(newsletter.recipients, sent, failed, unsubscribed)


@dataclass(frozen=True)
class Pace:
    """The bulk share of a mail server's rate limit (`jobs.mail.throttle`): a newsletter's pace."""

    per_minute: float  # 0: no pacing
    per_hour: int  # 0: no hourly cap

    def seconds_for(self, count: int) -> float | None:
        """How long `count` sends take at this pace; None without a limit (then the server sets it)."""
        rates = [rate for rate in (self.per_minute / 60, self.per_hour / 3600) if rate > 0]
        return count / min(rates) if rates else None


def pace(municipality: Municipality) -> Pace:
    """The pace of `municipality`'s newsletters: its own server's, else the installation's."""
    own = (municipality.smtp_rate_per_minute, municipality.smtp_rate_per_hour) if municipality.smtp_host else ()
    interval_ms, per_hour = throttle.bulk_limits(*own)
    return Pace(60_000 / interval_ms if interval_ms else 0, per_hour)


def state_label(newsletter: Newsletter, found: Progress) -> str:
    """Its state as staff read it: a campaign with nothing pending has been sent (read, not stored:
    a page view changes nothing)."""
    if newsletter.state == Newsletter.State.SENDING and newsletter.recipients and not found.pending:
        return Newsletter.State.SENT.label
    return newsletter.get_state_display()


def _audit(kind, newsletter: Newsletter, user, count: int) -> None:
    detail = _("newsletter %(id)s: %(subject)s") % {"id": newsletter.pk, "subject": newsletter.subject}
    action = action_record(kind=kind, queue_name=BULK.name, job_ids=[], user=user, detail=detail)
    JobAction.objects.filter(pk=action.pk).update(count=count)

"""Verification emails that Redis lost are enqueued again.

A signup or a resend records `User.verify_requested_at` in the same transaction that creates or
finds the user; the job is enqueued only after the commit, in Redis, which may be down, frozen or
restarted without persistence at that moment. `reconcile_verify_emails` (every minute, from the
workers' sweep) takes the users whose request is older than `VERIFY_OUTBOX_AFTER_SECONDS` and
younger than a token's life, who are still unverified and got no verification email since the
request, and enqueues the job of each one Redis does not hold in any state. The job is unique and
the email task records its delivery, so an email enqueued twice is still sent once.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone
from rq.job import Job

from ceres_site.accounts.models import EmailDelivery, User
from jobs.config import policies
from jobs.enqueue import clients
from jobs.enqueue.producers import email_verify_job_id, enqueue_email_verify_many

log = logging.getLogger(__name__)

BATCH = 1000


def reconcile_verify_emails() -> int:
    """Enqueue the requested verification emails Redis does not hold; returns how many."""
    moment = timezone.now()
    delivered = EmailDelivery.objects.filter(
        user=OuterRef("pk"), kind=EmailDelivery.Kind.VERIFY, sent_at__gte=OuterRef("verify_requested_at")
    )
    waiting = User.objects.filter(
        email_verified_at__isnull=True,
        verify_requested_at__lt=moment - timedelta(seconds=settings.VERIFY_OUTBOX_AFTER_SECONDS),
        verify_requested_at__gt=moment - timedelta(hours=settings.VERIFICATION_TOKEN_TTL_HOURS),
    ).exclude(Exists(delivered))
    connection = clients.queue(policies.EMAIL.name).connection
    enqueued = 0
    municipalities = dict(waiting.order_by("verify_requested_at").values_list("pk", "municipality")[: BATCH * 10])
    ids = list(municipalities)
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        with connection.pipeline(transaction=False) as pipe:
            for user_id in batch:
                pipe.exists(Job.key_for(email_verify_job_id(user_id)))
            held = pipe.execute()
        lost = [user_id for user_id, exists in zip(batch, held, strict=True) if not exists]
        if lost:
            enqueue_email_verify_many(user_ids=lost, municipalities=municipalities)
            enqueued += len(lost)
    if enqueued:
        log.warning("enqueued %d verification email(s) that Redis did not hold", enqueued)
    return enqueued

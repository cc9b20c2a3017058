"""Bulk queue task: one newsletter to one person.

Idempotent per recipient: a copy the server took is recorded (`Delivery`, through a database outage
as the email queue's are: `jobs.tasks.email.record`), and a job run again finds it and sends nothing;
only a crash between the server's answer and that record (a SIGKILL mid-send) sends one extra copy,
under the same Message-ID. Paused campaigns, unsubscribed or unverified people: nothing is sent. The
job started on its turn under its mail server's rate limit (`jobs.mail.throttle`: the installation's
server's, or the municipality's own); a 421/451 from that server halves its rate for a while and the job
retries later.
A body that does not render (saved before bodies were checked, or broken since) fails at once and for
good: every attempt would fail the same way.
"""

import functools

from django.core.mail import EmailMultiAlternatives
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from rq import get_current_job

from ceres_site import db
from ceres_site.accounts.models import User
from ceres_site.municipalities.models import Municipality, fresh
from ceres_site.newsletters import rendering
from ceres_site.newsletters.models import Delivery, Newsletter
from ceres_site.newsletters.unsubscribe import unsubscribe_token
from jobs.failures.attempts import PermanentJobError
from jobs.mail import messages, throttle
from jobs.tasks.email import display_name, record
from jobs.tasks.sending import deliver

RECIPIENT = (
    "SELECT u.email, u.first_name, u.municipality_id,"
    " u.is_active AND u.email_verified_at IS NOT NULL AND u.newsletter_unsubscribed_at IS NULL,"
    f" EXISTS (SELECT 1 FROM {Delivery._meta.db_table} d WHERE d.newsletter_id = %s AND d.user_id = u.id)"
    f" FROM {User._meta.db_table} u WHERE u.id = %s"
)
DELIVERED = f"INSERT INTO {Delivery._meta.db_table} (newsletter_id, user_id, sent_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"


def send_newsletter(newsletter_id: int, user_id: int, test: bool = False, municipality: int | None = None) -> str:
    """`test`: the staff member's own test copy, whatever the campaign's state, recorded nowhere.
    `municipality`, the newsletter's (None in jobs enqueued before there were municipalities)."""
    try:
        newsletter_id, user_id = int(newsletter_id), int(user_id)
    except (TypeError, ValueError):
        raise PermanentJobError(f"malformed payload: newsletter_id={newsletter_id!r}, user_id={user_id!r}") from None
    newsletter = (
        Newsletter.objects.filter(pk=newsletter_id)
        .values("state", "subject", "body_text", "body_html", "municipality")
        .first()
    )
    if newsletter is None:
        raise PermanentJobError(f"newsletter {newsletter_id} does not exist")
    owner = fresh(newsletter["municipality"])
    if owner is None or not owner.active:
        raise PermanentJobError(
            _("municipality %(id)s is inactive or gone: nothing sent") % {"id": newsletter["municipality"]}
        )
    if municipality is not None and municipality != owner.pk:
        raise PermanentJobError(f"malformed payload: municipality={municipality!r} is not newsletter {newsletter_id}'s")
    if not test and newsletter["state"] != Newsletter.State.SENDING:
        return _("skipped: the newsletter is %(state)s") % {"state": Newsletter.State(newsletter["state"]).label}
    row = db.fetch_one(RECIPIENT, [newsletter_id, user_id])
    if row is None:
        return _("skipped: user %(user)s does not exist") % {"user": user_id}
    email, first_name, users_municipality, subscribed, delivered = row
    if not test and users_municipality != owner.pk:
        raise PermanentJobError(
            f"malformed payload: user {user_id} is not of newsletter {newsletter_id}'s municipality ({owner.pk})"
        )
    if not test and delivered:
        return _("skipped: already sent to user %(user)s") % {"user": user_id}
    if not test and not subscribed:
        return _("skipped: user %(user)s is unsubscribed or not verified") % {"user": user_id}
    _send(newsletter_id, newsletter, owner, user_id, email, first_name, test)
    if test:
        return _("sent: test copy to user %(user)s") % {"user": user_id}
    record(DELIVERED, [newsletter_id, user_id, connection.ops.adapt_datetimefield_value(timezone.now())])
    return _("sent: newsletter %(newsletter)s to user %(user)s") % {"newsletter": newsletter_id, "user": user_id}


def _send(
    newsletter_id: int, newsletter: dict, municipality: Municipality, user_id: int, email: str, first_name: str,
    test: bool,
) -> None:  # fmt: skip
    url = municipality.site_url + reverse("newsletters:unsubscribe", args=[unsubscribe_token(user_id)])
    name = display_name(first_name)
    try:
        body = rendering.render(newsletter["body_text"], html=False, name=name, unsubscribe_url=url)
        html = newsletter["body_html"] and rendering.render(
            newsletter["body_html"], html=True, name=name, unsubscribe_url=url
        )
    except rendering.BrokenTemplate as error:  # the same for every attempt and every person: no retry
        raise PermanentJobError(f"newsletter {newsletter_id} has a template error: {error}") from error
    key = get_current_job().id if test else f"newsletter-{newsletter_id}-{user_id}"  # a test copy: one per click
    message = EmailMultiAlternatives(
        subject=_("[Test] %(subject)s") % {"subject": newsletter["subject"]} if test else newsletter["subject"],
        body=body,
        from_email=municipality.sender,
        to=[email],
        headers={
            "List-Unsubscribe": f"<{url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",  # RFC 8058
            "Message-ID": messages.message_id(key),
        },
    )
    if html:
        message.attach_alternative(html, "text/html")
    # A "slow down" halves the pace of the server that said it: the installation's, or the municipality's own.
    server = municipality.smtp_server
    deliver(message, slow_down=functools.partial(throttle.slow_down, None if server is None else municipality.pk),
            server=server)  # fmt: skip

"""Email queue tasks: the verification, welcome, account-exists and password-reset emails, and the
requests (resend, password reset) that look for the account an address names.

Each task takes a user id, re-checks the database before acting (user gone or already verified:
nothing to do, no retry), and records every delivery so a re-run of the same job sends nothing.
Transient SMTP trouble (connection refused, timeouts, 4xx) raises and RQ retries on the email
policy's schedule; permanent trouble (5xx, an invalid address) raises `PermanentJobError`, which
fails the job at once. Messages go out through the worker thread's kept connection (`jobs.mail.smtp`).

Once the server accepted a message, nothing may send it again but a crash: every attempt of a job
names its message with the same Message-ID; the wait for the server's answer ends `RECORD_TIME`
before the job's timeout (`jobs.tasks.sending`); and the delivery's record waits through a database
outage for that long (`record`), since a job that failed after the send would send again.

Newsletters are the bulk queue's (`jobs.tasks.newsletters`).
"""

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email
from django.db import InterfaceError, OperationalError, connection
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.utils.translation import gettext as _
from rq import get_current_job

from ceres_site import db
from ceres_site.accounts.models import EmailDelivery, Upload, User
from ceres_site.accounts.tokens import ISSUE, ISSUE_IF, RawToken, token_for_key, token_values
from ceres_site.municipalities.models import Municipality, default_pk, fresh
from jobs.enqueue.producers import enqueue_email_password_reset, enqueue_email_verify
from jobs.failures.attempts import PermanentJobError
from jobs.mail import bodies, messages
from jobs.tasks.sending import END_MARGIN, RECORD_TIME, deliver, job_deadline

log = logging.getLogger(__name__)

NAME_MAX = 60
# The recipient; their municipality, whose identity the email goes out under, comes from `fresh` (a
# join here cost PostgreSQL a third more CPU per verification email).
RECIPIENT = (
    "SELECT u.id, u.email, u.first_name, u.email_verified_at, {already_sent} AS already_sent, u.municipality_id"
    " FROM {users} u WHERE u.id = %s"
)
SENT_BY_THIS_JOB = f"EXISTS (SELECT 1 FROM {EmailDelivery._meta.db_table} WHERE delivery_key = %s)"
WELCOMED = f"EXISTS (SELECT 1 FROM {EmailDelivery._meta.db_table} d WHERE d.user_id = u.id AND d.kind = %s)"
DELIVERED = (
    f"INSERT INTO {EmailDelivery._meta.db_table} (user_id, kind, delivery_key, sent_at) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (delivery_key) DO NOTHING"
)
# The recipient's read that also issues the verification token (`token_values`' parameters) for a user
# unverified and not sent to: PostgreSQL runs an INSERT inside a read (a data-modifying WITH), SQLite does not.
_UNVERIFIED_NOT_SENT = "EXISTS (SELECT 1 FROM r WHERE r.email_verified_at IS NULL AND NOT r.already_sent)"
READ_AND_ISSUE = (
    "WITH r AS ({recipient}), issued AS (" + ISSUE_IF.format(condition=_UNVERIFIED_NOT_SENT) + ") SELECT * FROM r"
)
PERSONAL = ("name", "link", "reason", "resend")  # what changes from one email to the next (`jobs.mail.bodies`)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def send_verify_email(user_id: int, municipality: int | None = None) -> str:
    key = _delivery_key()
    token = token_for_key(key)  # a re-run of this job emails the same link

    def context(user: Recipient, key: str) -> dict:
        # After "#": browsers never send it, so the token stays out of every server and proxy log.
        link = f"{user.municipality.site_url}{reverse('accounts:verify')}#{token.selector}.{token.verifier}"
        return {"link": link, "hours": settings.VERIFICATION_TOKEN_TTL_HOURS}

    def verified(user: Recipient) -> str:
        return _("skipped: user %(user)s is already verified") % {"user": user.pk} if user.is_verified else ""

    return _send_once(
        user_id, EmailDelivery.Kind.VERIFY, "emails/verify", _("Confirm your %(site)s account"), context,
        sent=_("sent: verification email to user %(user)s"), skip=verified, key=key, token=token,
        municipality=municipality,
    )  # fmt: skip


def send_welcome_email(user_id: int, municipality: int | None = None) -> str:
    def unverified(user: Recipient) -> str:
        return "" if user.is_verified else _("skipped: user %(user)s is not verified") % {"user": user.pk}

    return _send_once(
        user_id, EmailDelivery.Kind.WELCOME, "emails/welcome", _("Welcome to %(site)s!"),
        lambda user, key: {"link": user.municipality.site_url + reverse("home")},
        sent=_("sent: welcome email to user %(user)s"), skip=unverified, once_per_user=True, municipality=municipality,
    )  # fmt: skip


def send_account_exists_email(user_id: int, municipality: int | None = None) -> str:
    return _send_once(
        user_id, EmailDelivery.Kind.EXISTS, "emails/account_exists", _("You already have a %(site)s account"),
        lambda user, key: {"resend": "" if user.is_verified else user.municipality.site_url + reverse("accounts:resend")},
        sent=_("sent: account-exists email to user %(user)s"), municipality=municipality,
    )  # fmt: skip


def send_password_reset_email(user_id: int, municipality: int | None = None) -> str:
    """The link to choose a new password, made here with Django's token (`default_token_generator`):
    it dies with the password it resets, with the next login or after `PASSWORD_RESET_TIMEOUT`."""
    accounts: dict[int, User] = {}

    def cannot_reset(user: Recipient) -> str:
        account = User.objects.filter(pk=user.pk, is_active=True).first()
        if account is None or not account.has_usable_password():
            return _("skipped: user %(user)s does not sign in with a password") % {"user": user.pk}
        accounts[user.pk] = account
        return ""

    def context(user: Recipient, key: str) -> dict:
        token = default_token_generator.make_token(accounts[user.pk])
        # After "#", as the verification link: the token stays out of every server and proxy log.
        uid = urlsafe_base64_encode(force_bytes(user.pk))
        link = f"{user.municipality.site_url}{reverse('accounts:password_reset_link')}#{uid}.{token}"
        return {"link": link, "hours": settings.PASSWORD_RESET_TIMEOUT // 3600}

    return _send_once(
        user_id, EmailDelivery.Kind.PASSWORD_RESET, "emails/password_reset", _("Reset your %(site)s password"), context,
        sent=_("sent: password reset email to user %(user)s"), skip=cannot_reset, municipality=municipality,
    )  # fmt: skip


def send_cv_rejected_email(upload_id: int, municipality: int | None = None) -> str:
    """Why a CV was not accepted, with the link to upload another."""
    upload = Upload.objects.filter(pk=upload_id, kind=Upload.Kind.CV).first() if str(upload_id).isdigit() else None
    if upload is None:
        raise PermanentJobError(f"malformed payload or no such CV upload: upload_id={upload_id!r}")
    return _send_once(
        upload.user_id, EmailDelivery.Kind.CV_REJECTED, "emails/cv_rejected", _("We could not accept your CV"),
        lambda user, key: {"reason": upload.reason, "link": user.municipality.site_url + reverse("accounts:profile")},
        sent=_("sent: CV-rejected email to user %(user)s"), municipality=municipality,
    )  # fmt: skip


def _send_once(
    user_id, kind: EmailDelivery.Kind, template: str, subject: str, context: Callable[["Recipient", str], dict], *,
    sent: str, skip: Callable[["Recipient"], str] | None = None, once_per_user: bool = False,
    key: str = "", token: RawToken | None = None, municipality: int | None = None,
) -> str:  # fmt: skip
    """What every email task does: find the recipient, skip what is done already (by this job, or
    to this user when the email goes `once_per_user`) or what `skip` says, send under the recipient's
    municipality's identity, record the delivery. `token`, a verification token the email carries,
    is issued for an unverified recipient before the send (on PostgreSQL in the recipient's read:
    one round trip less per verification email). `municipality`, the job's, must be the recipient's."""
    key = key or _delivery_key()
    if municipality is not None:
        _active_municipality(municipality)  # before the read, which may issue a token
    done = (WELCOMED, [kind.value]) if once_per_user else (SENT_BY_THIS_JOB, [key])
    user, reason = _recipient(user_id, *done, token=token)
    if reason:
        return reason
    _check_municipality(user, municipality)
    if skip and (reason := skip(user)):
        return reason
    if user.already_sent and once_per_user:
        return _("skipped: user %(user)s was already welcomed") % {"user": user.pk}
    if user.already_sent:
        return _("skipped: already sent by this job (%(key)s)") % {"key": key}
    if token is not None and not _issues_with_read():
        db.fetch_one(ISSUE, token_values(user.pk, token))
    _send(user, template, subject, context(user, key), key)
    _delivered(user, kind, key)
    return sent % {"user": user.pk}


def resend_verify_email(email: str, municipality: int | None = None) -> str:
    """A resend asked on a municipality's page: the verification email again, if `email` has an
    unverified account there."""
    if not isinstance(email, str):
        raise PermanentJobError(f"malformed payload: email is a {type(email).__name__}, not a string")
    municipality = _active_municipality(municipality)
    waiting = User.objects.filter(municipality=municipality, email__iexact=email, email_verified_at__isnull=True)
    user_id = waiting.values_list("pk", flat=True).first()
    if user_id is None:
        return _("skipped: no unverified account has that address")
    User.objects.filter(pk=user_id).update(verify_requested_at=timezone.now())  # the outbox's record
    enqueue_email_verify(user_id=user_id, municipality=municipality)
    return _("enqueued: verification email for user %(user)s") % {"user": user_id}


def request_password_reset(email: str, municipality: int | None = None) -> str:
    """A reset asked on a municipality's page: the reset email, if `email` has an active account with
    a password there."""
    if not isinstance(email, str):
        raise PermanentJobError(f"malformed payload: email is a {type(email).__name__}, not a string")
    municipality = _active_municipality(municipality)
    accounts = User.objects.filter(municipality=municipality, email__iexact=email, is_active=True)
    account = accounts.only("pk", "password").first()
    if account is None or not account.has_usable_password():
        return _("skipped: no active account with a password has that address")
    enqueue_email_password_reset(user_id=account.pk, municipality=municipality)
    return _("enqueued: password reset email for user %(user)s") % {"user": account.pk}


def _active_municipality(municipality) -> int:
    """The id of the municipality a job acts for, if it is active; a job enqueued before there were
    municipalities (None) acts for the default one. Fails for good otherwise: nothing is sent under
    another municipality's name."""
    if municipality is None:
        return default_pk()
    if isinstance(municipality, bool) or not isinstance(municipality, int):
        raise PermanentJobError(f"malformed payload: municipality={municipality!r} is not an id")
    found = fresh(municipality)
    if found is None or not found.active:
        raise PermanentJobError(_("municipality %(id)s is inactive or gone: nothing sent") % {"id": municipality})
    return municipality


def display_name(first_name: str) -> str:
    """The first name as it may appear in an email body: one line, no control characters, short."""
    name = " ".join(_CONTROL.sub(" ", first_name).split())
    return name if len(name) <= NAME_MAX else name[: NAME_MAX - 1] + "…"


@dataclass(frozen=True)
class Recipient:
    pk: int
    email: str
    first_name: str
    is_verified: bool
    already_sent: bool  # whether the email went out already
    municipality: Municipality | None  # `fresh`: None if it is gone


def _recipient(user_id, already_sent: str, params: list, token: RawToken | None = None) -> tuple[Recipient | None, str]:
    """The user to write to, with `already_sent` (a SQL condition on user `u`), or a reason to skip.
    Bad ids and bad addresses fail for good. One query, read without the ORM: its two queries took six
    times as long, and building a model instance from a raw query a tenth of a slot's time per email.
    With `token` on PostgreSQL, the same statement issues it if the user is unverified and not sent to."""
    try:
        user_id = int(user_id)
    except (TypeError, ValueError):
        raise PermanentJobError(f"malformed payload: user_id={user_id!r} is not an integer") from None
    sql, params = RECIPIENT.format(users=User._meta.db_table, already_sent=already_sent), [*params, user_id]
    if token is not None and _issues_with_read():
        sql, params = READ_AND_ISSUE.format(recipient=sql), [*params, *token_values(user_id, token)]
    row = db.fetch_one(sql, params)
    if row is None:
        log.warning("email job for user %s skipped: no such user", user_id)
        return None, _("skipped: user %(user)s does not exist") % {"user": user_id}
    user = Recipient(row[0], row[1], row[2], row[3] is not None, bool(row[4]), fresh(row[5]))
    try:
        validate_email(user.email)
    except ValidationError:
        raise PermanentJobError(_("user %(user)s has an invalid email address") % {"user": user_id}) from None
    return user, ""


def _check_municipality(user: Recipient, municipality) -> None:
    """An email goes out only under its recipient's municipality, and only while it is active."""
    if user.municipality is None or not user.municipality.active:
        raise PermanentJobError(_("the recipient's municipality is inactive or gone: nothing sent"))
    if municipality is not None and municipality != user.municipality.pk:
        raise PermanentJobError(
            f"malformed payload: municipality={municipality!r} is not user {user.pk}'s ({user.municipality.pk})"
        )


def _issues_with_read() -> bool:
    return connection.vendor == "postgresql"


def _delivered(user: Recipient, kind: EmailDelivery.Kind, key: str) -> None:
    """Record the delivery: one INSERT (the ORM's `create` took three times as long)."""
    record(DELIVERED, [user.pk, kind.value, key, connection.ops.adapt_datetimefield_value(timezone.now())])


def record(sql: str, params: list) -> None:
    """Run `sql`, a delivery's record that may run twice, through a database outage: reconnect and try
    again until the job's timeout is near (at least `RECORD_TIME` s), then let the error go up (the
    job retries and the message goes out once more)."""
    deadline = job_deadline()
    give_up = deadline - END_MARGIN if deadline is not None else time.monotonic() + RECORD_TIME
    lost_at, pause = None, 0.25
    while True:
        try:
            db.fetch_one(sql, params)
            break
        except (OperationalError, InterfaceError) as error:
            if connection.in_atomic_block or time.monotonic() + pause > give_up:
                raise
            if lost_at is None:
                lost_at = time.monotonic()
                log.warning("database unavailable after a delivery (%s); recording it when it answers", error)
            _close_connection()  # the next cursor connects again
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
    if lost_at is not None:
        log.warning("delivery recorded after %.1f s without the database", time.monotonic() - lost_at)


def _close_connection() -> None:
    try:
        connection.close()
    except (OperationalError, InterfaceError):
        pass  # closing a broken connection may complain; it is dropped all the same


def _delivery_key() -> str:
    """Same for every attempt of one job, new for a job enqueued again under the same id."""
    job = get_current_job()
    return f"{job.id}@{job.created_at:%Y%m%dT%H%M%S.%f}"


def _send(user: Recipient, template: str, subject: str, context: dict, key: str) -> None:
    """`subject` may name the site (`%(site)s`): the recipient's municipality, "Ceres" for the default one."""
    context = {"name": display_name(user.first_name), **_identity(user.municipality), **context}
    message = EmailMultiAlternatives(
        subject=subject % {"site": context["site"]},
        body=bodies.render(f"{template}.txt", context, PERSONAL),
        from_email=user.municipality.sender,
        to=[user.email],
        headers={"Message-ID": messages.message_id(key)},
    )
    message.attach_alternative(bodies.render(f"{template}.html", context, PERSONAL), "text/html")
    deliver(message, server=user.municipality.smtp_server)


def _identity(municipality: Municipality) -> dict:
    """What an email's templates show of its municipality: the default one signs as the platform."""
    return {
        "municipality": "" if municipality.is_default else municipality.name,
        "site": municipality.name,  # what its citizens have an account on: "Ceres" for the default one
        "logo_url": municipality.logo_url,
        "colour": municipality.colour,
    }

"""A municipality served by this installation: its site address and host names, the sender and
branding of its emails, its own mail server and Slack channel if it has them.

What a municipality leaves blank falls back to the installation's settings (`SITE_URL`,
`DEFAULT_FROM_EMAIL`, `EMAIL_*`, `SLACK_WEBHOOK_URL`): the default municipality, created by the first
migration with nothing else filled in, is the single-tenant install as it was. Secrets (its SMTP
password, its Slack webhook) are not stored: a field names the environment variable that holds each,
so neither the database, admin nor a job's payload ever carries them.
"""

import os
import re
import time
from email.utils import formataddr, parseaddr

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from jobs.mail import smtp, throttle

DEFAULT_SLUG = "default"
DEFAULT_FIELDS = {"name": "Ceres", "slug": DEFAULT_SLUG}  # the rest blank: the settings'
ENV_NAME = RegexValidator(r"^[A-Z_][A-Z0-9_]*$", _("An environment variable's name: capital letters, digits and _."))
HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
COLOUR = RegexValidator(r"^#[0-9a-fA-F]{6}$", _("A colour as #rrggbb."))


class MunicipalityQuerySet(models.QuerySet):
    def default(self) -> "Municipality":
        return self.get(is_default=True)

    def for_host(self, host: str) -> "Municipality":
        """The municipality whose host names include `host` (no port), active or not, else the
        default one: one query."""
        host = host.lower().rstrip(".")
        candidates = list(self.filter(models.Q(is_default=True) | ~models.Q(hosts="")))
        named = [municipality for municipality in candidates if host in municipality.host_names]
        return named[0] if named else next(municipality for municipality in candidates if municipality.is_default)


def default_pk() -> int:
    """The default municipality's id: what a user or job made without naming one belongs to."""
    return Municipality.objects.values_list("pk", flat=True).get(is_default=True)


FRESH_FOR = 5  # seconds a worker sends under a municipality as it read it (a deactivation's delay)
_read: dict[int, tuple[float, "Municipality | None"]] = {}  # id -> (when read, as read: None if gone)


def fresh(pk: int) -> "Municipality | None":
    """Municipality `pk` as read at most `FRESH_FOR` seconds ago (None: there is none): what every
    email of a worker goes out under, without a read (or a join) per email; a deactivated one stops
    sending within that time."""
    moment = time.monotonic()
    found = _read.get(pk)
    if found is None or moment - found[0] > FRESH_FOR:
        found = _read[pk] = (moment, Municipality.objects.filter(pk=pk).first())
    return found[1]


class OfDefaultMunicipality:
    """A model mixin: a row saved without a municipality is the default one's. Not a field `default`:
    Django evaluates that for every instance it builds (its own system checks build a `User()`), and
    this one reads the database."""

    municipality_id: int | None

    def save(self, *args, **kwargs) -> None:
        if self.municipality_id is None:
            self.municipality_id = default_pk()
        super().save(*args, **kwargs)


def webhook_for(municipality: int | None) -> str:
    """Where alerts about `municipality`'s jobs go: its own webhook if it has one, else the platform's
    (also for a municipality deleted since, and for jobs of none)."""
    found = Municipality.objects.filter(pk=municipality).first() if municipality is not None else None
    return found.slack_webhook_url if found is not None else settings.SLACK_WEBHOOK_URL


def staff_scope(user) -> int | None:
    """The municipality a staff member is limited to: their own, unless they are a superuser or
    belong to the default municipality (the platform's staff), who see every municipality."""
    if not user.is_authenticated or user.is_superuser or getattr(user, "municipality_id", None) is None:
        return None
    # Read once per request: Django keeps the related row on `request.user`, asked here many times a page.
    return None if user.municipality.is_default else user.municipality_id


def slugs() -> dict[int, str]:
    return dict(Municipality.objects.values_list("pk", "slug"))


def ensure_default(using: str = "default") -> None:
    """Create the default municipality if it is missing: the first migration does, and a flush (a
    test that commits) empties the table again, then emits `post_migrate`, which calls this."""
    Municipality.objects.using(using).get_or_create(is_default=True, defaults=DEFAULT_FIELDS)


class Municipality(models.Model):
    name = models.CharField(_("name"), max_length=100)
    slug = models.SlugField(_("slug"), max_length=50, unique=True)
    active = models.BooleanField(
        _("active"), default=True, help_text=_("An inactive municipality's jobs fail instead of being sent.")
    )
    is_default = models.BooleanField(_("default"), default=False, editable=False)
    base_url = models.URLField(
        _("site address"), blank=True, help_text=_("As https://example.gob.ar; blank: the installation's SITE_URL.")
    )
    hosts = models.CharField(
        _("host names"), max_length=500, blank=True,
        help_text=_("The host names its pages answer on, separated by commas; each also in ALLOWED_HOSTS."),
    )  # fmt: skip
    sender_name = models.CharField(_("sender name"), max_length=100, blank=True)
    sender_email = models.EmailField(
        _("sender address"), blank=True, help_text=_("Blank: the installation's DEFAULT_FROM_EMAIL.")
    )
    smtp_host = models.CharField(
        _("SMTP server"), max_length=200, blank=True, help_text=_("Its own mail server; blank: the installation's.")
    )
    smtp_port = models.PositiveIntegerField(_("SMTP port"), null=True, blank=True)
    smtp_username = models.CharField(_("SMTP user"), max_length=200, blank=True)
    smtp_password_env = models.CharField(
        _("SMTP password variable"), max_length=100, blank=True, validators=[ENV_NAME],
        help_text=_("The name of the environment variable that holds the password, never the password."),
    )  # fmt: skip
    smtp_use_tls = models.BooleanField(_("SMTP with STARTTLS"), default=True)
    # Its own server's limits: its newsletters go at their bulk share, as the installation's go at theirs.
    smtp_rate_per_minute = models.PositiveIntegerField(
        _("SMTP emails per minute"), null=True, blank=True,
        help_text=_("What its server accepts; blank: the installation's SMTP_RATE_PER_MINUTE; 0: no limit."),
    )  # fmt: skip
    smtp_rate_per_hour = models.PositiveIntegerField(
        _("SMTP emails per hour"), null=True, blank=True,
        help_text=_("What its server accepts; blank: the installation's SMTP_RATE_PER_HOUR; 0: no limit."),
    )  # fmt: skip
    slack_webhook_env = models.CharField(
        _("Slack webhook variable"), max_length=100, blank=True, validators=[ENV_NAME],
        help_text=_("The name of the environment variable that holds its alerts' webhook; blank: the platform's."),
    )  # fmt: skip
    logo_url = models.URLField(_("logo address"), blank=True)
    colour = models.CharField(_("colour"), max_length=7, default="#1d6fa5", validators=[COLOUR])
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    objects = MunicipalityQuerySet.as_manager()

    class Meta:
        verbose_name = _("municipality")
        verbose_name_plural = _("municipalities")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="municipalities_one_default"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def host_names(self) -> list[str]:
        return [host.strip().lower().rstrip(".") for host in self.hosts.split(",") if host.strip()]

    @property
    def site_url(self) -> str:
        return (self.base_url or settings.SITE_URL).rstrip("/")

    @property
    def sender(self) -> str:
        """The From of its emails: its name and address, each falling back to DEFAULT_FROM_EMAIL's."""
        default_name, default_address = parseaddr(settings.DEFAULT_FROM_EMAIL)
        return formataddr((self.sender_name or default_name, self.sender_email or default_address))

    @property
    def slack_webhook_url(self) -> str:
        """Its alerts' webhook, read from the environment now; blank: the platform's."""
        own = os.environ.get(self.slack_webhook_env, "") if self.slack_webhook_env else ""
        return own or settings.SLACK_WEBHOOK_URL

    @property
    def smtp_password(self) -> str:
        return os.environ.get(self.smtp_password_env, "") if self.smtp_password_env else ""

    @property
    def smtp_server(self) -> smtp.Server | None:
        """Its own mail server, which its emails go through (its password read from the environment
        now); None: the installation's `EMAIL_*`."""
        if not self.smtp_host:
            return None
        port = self.smtp_port or (587 if self.smtp_use_tls else 25)
        return smtp.Server(self.smtp_host, port, self.smtp_username, self.smtp_password, self.smtp_use_tls)

    def publish_smtp_limits(self) -> None:
        """Give the workers its own server's limits, which its newsletters are paced at
        (`jobs.mail.throttle.server_limits`); nothing for a municipality without one."""
        if self.smtp_host:
            throttle.server_limits(self.pk, self.smtp_rate_per_minute, self.smtp_rate_per_hour)

    def clean(self) -> None:
        errors: dict[str, list] = {}
        for host in self.host_names:
            if not HOST_NAME.match(host):
                errors.setdefault("hosts", []).append(_("%(host)s is not a host name.") % {"host": host})
        taken = set(self.host_names) & {
            host for other in Municipality.objects.exclude(pk=self.pk) for host in other.host_names
        }
        if taken:
            errors.setdefault("hosts", []).append(
                _("Another municipality answers on %(hosts)s.") % {"hosts": ", ".join(sorted(taken))}
            )
        if self.is_default and not self.active:
            errors["active"] = [_("The default municipality stays active: the installation's own jobs are its.")]
        if self.smtp_password_env and not self.smtp_host:
            errors.setdefault("smtp_host", []).append(_("A password variable without a server: name the server too."))
        if not self.smtp_host and (self.smtp_rate_per_minute is not None or self.smtp_rate_per_hour is not None):
            errors.setdefault("smtp_host", []).append(_("Limits without a server: name the server too."))
        if errors:
            raise ValidationError(errors)

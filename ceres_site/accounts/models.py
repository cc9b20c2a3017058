import uuid

from django.contrib.auth.models import AbstractUser
from django.contrib.auth.models import UserManager as DjangoUserManager
from django.db import models
from django.db.models.functions import Lower
from django.utils.translation import gettext_lazy as _

from ceres_site.municipalities.models import Municipality, OfDefaultMunicipality, default_pk


class UserManager(DjangoUserManager):
    def bulk_create(self, objs, *args, **kwargs):
        """Users made without a municipality are the default one's, as `User.save` makes them."""
        objs = list(objs)
        if any(user.municipality_id is None for user in objs):
            default = default_pk()
            for user in objs:
                user.municipality_id = user.municipality_id or default
        return super().bulk_create(objs, *args, **kwargs)


class User(OfDefaultMunicipality, AbstractUser):
    """A person of one municipality; signups use their email as username (`username_for`), staff keep
    short usernames. One address may hold one account per municipality."""

    # Filled by `save` (`OfDefaultMunicipality`) and the manager's `bulk_create`.
    municipality = models.ForeignKey(
        Municipality, verbose_name=_("municipality"), on_delete=models.PROTECT, related_name="users"
    )
    email = models.EmailField(_("email"), blank=True)
    email_verified_at = models.DateTimeField(_("email verified at"), null=True, blank=True)
    # Set with the signup or resend, in the same transaction: the durable intent to send the
    # verification email, which `ceres_site.accounts.outbox` enqueues again if Redis lost the job.
    verify_requested_at = models.DateTimeField(
        _("verification email requested at"), null=True, blank=True, db_index=True
    )
    newsletter_unsubscribed_at = models.DateTimeField(_("unsubscribed from newsletters at"), null=True, blank=True)

    objects = UserManager()

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        constraints = [
            models.UniqueConstraint(
                "municipality", Lower("email"), condition=~models.Q(email=""), name="accounts_user_email_unique"
            ),
        ]

    @property
    def is_verified(self) -> bool:
        return self.email_verified_at is not None

    @staticmethod
    def username_for(email: str, municipality: Municipality) -> str:
        """A citizen's username: the address, and in any municipality but the default one its slug
        after a second "@" (no valid unquoted address has two), so two municipalities' accounts of
        one address never share a username."""
        return email if municipality.is_default else f"{email}@{municipality.slug}"


class VerificationToken(models.Model):
    """A single-use email verification token, stored as selector + hash of the secret part.

    The link carries `<selector>/<verifier>`; only `sha256(verifier)` is kept, so neither the
    database, Redis nor admin ever holds a usable token.
    """

    user = models.ForeignKey(User, verbose_name=_("user"), on_delete=models.CASCADE, related_name="verification_tokens")
    selector = models.CharField(_("selector"), max_length=32, unique=True)
    verifier_hash = models.CharField(_("verifier hash"), max_length=64)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires at"), db_index=True)
    used_at = models.DateTimeField(_("used at"), null=True, blank=True, db_index=True)

    class Meta:
        verbose_name = _("verification token")
        verbose_name_plural = _("verification tokens")

    def __str__(self) -> str:
        return _("token %(selector)s… for user %(user)s") % {"selector": self.selector[:6], "user": self.user_id}


class EmailDelivery(models.Model):
    """One email actually handed to the mail server; lets a re-run job see it was already sent."""

    class Kind(models.TextChoices):
        VERIFY = "verify", _("verification")
        WELCOME = "welcome", _("welcome")
        EXISTS = "exists", _("account exists")  # someone tried to sign up with the address
        CV_REJECTED = "cv_rejected", _("CV rejected")
        PASSWORD_RESET = "password_reset", _("password reset")

    user = models.ForeignKey(
        User, verbose_name=_("user"), on_delete=models.SET_NULL, null=True, related_name="email_deliveries"
    )
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    delivery_key = models.CharField(_("delivery key"), max_length=200, unique=True)  # job id + job creation time
    sent_at = models.DateTimeField(_("sent at"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("email delivery")
        verbose_name_plural = _("email deliveries")

    def __str__(self) -> str:
        return _("%(kind)s to user %(user)s at %(when)s") % {
            "kind": self.get_kind_display(), "user": self.user_id, "when": f"{self.sent_at:%Y-%m-%d %H:%M}"
        }  # fmt: skip


def _upload_path(upload, filename: str) -> str:
    """Our own name, never the uploaded one."""
    return f"uploads/{upload.user_id}/{upload.kind}-{uuid.uuid4().hex}"


class Upload(models.Model):
    """A file a person uploaded to their profile, and what the files queue made of it. A new upload
    of the same kind supersedes the previous one (its job, if still waiting, is dropped)."""

    class Kind(models.TextChoices):
        CV = "cv", _("CV")
        PICTURE = "picture", _("profile picture")

    class State(models.TextChoices):
        PENDING = "pending", _("being checked")
        ACCEPTED = "accepted", _("accepted")
        REJECTED = "rejected", _("rejected")
        SUPERSEDED = "superseded", _("replaced by a newer one")
        FAILED = "failed", _("could not be checked")  # its job failed for good: ours, not the file's fault

    user = models.ForeignKey(User, verbose_name=_("user"), on_delete=models.CASCADE, related_name="uploads")
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    file = models.FileField(_("file"), upload_to=_upload_path, max_length=200)
    thumbnail = models.FileField(_("thumbnail"), upload_to=_upload_path, max_length=200, blank=True)
    size = models.PositiveIntegerField(_("size in bytes"), default=0)
    state = models.CharField(_("state"), max_length=10, choices=State.choices, default=State.PENDING)
    reason = models.CharField(_("reason"), max_length=300, blank=True)  # for the person, in Spanish
    warning = models.CharField(_("warning"), max_length=300, blank=True)
    uploaded_at = models.DateTimeField(_("uploaded at"), auto_now_add=True)
    processed_at = models.DateTimeField(_("processed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("upload")
        verbose_name_plural = _("uploads")
        indexes = [models.Index(fields=["user", "kind", "-id"])]

    def __str__(self) -> str:
        return _("%(kind)s of user %(user)s (%(state)s)") % {
            "kind": self.get_kind_display(), "user": self.user_id, "state": self.get_state_display()
        }  # fmt: skip

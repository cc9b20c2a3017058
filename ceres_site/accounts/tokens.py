"""Verification tokens: issue, check, consume. Time comes from `_now()` so tests can move it."""

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from ceres_site import db

from .models import User, VerificationToken

_INSERT = f"INSERT INTO {VerificationToken._meta.db_table} (user_id, selector, verifier_hash, created_at, expires_at)"
ISSUE = f"{_INSERT} VALUES (%s, %s, %s, %s, %s) ON CONFLICT (selector) DO NOTHING"
# The same row, written only if `{condition}` (SQL) holds: part of a larger statement (`token_values`' parameters).
ISSUE_IF = f"{_INSERT} SELECT %s, %s, %s, %s, %s WHERE {{condition}} ON CONFLICT (selector) DO NOTHING"


TOKEN_PART = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what `token_issue` writes: URL-safe base64


def _now():
    return timezone.now()


def _hash(verifier: str) -> str:
    return hashlib.sha256(verifier.encode()).hexdigest()


@dataclass(frozen=True)
class RawToken:
    selector: str
    verifier: str  # exists only here and in the email link


def token_issue(*, user: User, key: str = "") -> RawToken:
    """A new token for `user`, in one INSERT. With `key` (the delivery key of the job that emails it)
    the token is `token_for_key(key)`: the same job, run again after a crash or a failed attempt,
    issues no second token and emails the same link."""
    token = token_for_key(key) if key else RawToken(secrets.token_urlsafe(12), secrets.token_urlsafe(32))
    db.fetch_one(ISSUE, token_values(user.pk, token))
    return token


def token_for_key(key: str) -> RawToken:
    """The token a job with delivery key `key` emails, derived from the key (and the secret key)."""
    digest = salted_hmac("ceres.accounts.tokens.token_issue", key, algorithm="sha512").digest()
    return RawToken(_b64(digest[:12]), _b64(digest[12:44]))


def token_values(user_id: int, token: RawToken) -> list:
    """`ISSUE`'s parameters: `token` for user `user_id`, valid from now (the verifier only hashed)."""
    moment, adapt = _now(), connection.ops.adapt_datetimefield_value
    expires_at = moment + timedelta(hours=settings.VERIFICATION_TOKEN_TTL_HOURS)
    return [user_id, token.selector, _hash(token.verifier), adapt(moment), adapt(expires_at)]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Outcome(Enum):
    VERIFIED = "verified"
    ALREADY_VERIFIED = "already_verified"
    EXPIRED = "expired"
    USED = "used"
    INVALID = "invalid"


@dataclass(frozen=True)
class VerifyResult:
    outcome: Outcome
    user: User | None = None


def token_verify(*, selector: str, verifier: str) -> VerifyResult:
    """Consume the token and mark its user verified (once). Call inside no transaction of yours."""
    if not (TOKEN_PART.fullmatch(selector) and TOKEN_PART.fullmatch(verifier)):
        return VerifyResult(Outcome.INVALID)  # never ours (and a NUL byte would be PostgreSQL's error)
    with transaction.atomic():
        token = VerificationToken.objects.select_for_update().select_related("user").filter(selector=selector).first()
        if token is None or not constant_time_compare(token.verifier_hash, _hash(verifier)):
            return VerifyResult(Outcome.INVALID)
        user = token.user
        if token.used_at is not None:
            return VerifyResult(Outcome.ALREADY_VERIFIED if user.is_verified else Outcome.USED, user)
        if user.is_verified:
            return VerifyResult(Outcome.ALREADY_VERIFIED, user)
        if token.expires_at <= _now():
            return VerifyResult(Outcome.EXPIRED, user)
        token.used_at = user.email_verified_at = _now()
        token.save(update_fields=["used_at"])
        user.save(update_fields=["email_verified_at"])
        return VerifyResult(Outcome.VERIFIED, user)


def tokens_clean(*, retention_hours: int | None = None) -> int:
    """Delete tokens expired or used more than the retention period ago; returns how many.

    Kept that long so a late click still gets "this link expired" rather than "invalid".
    One DELETE, so two runs at once simply share the work.
    """
    hours = settings.VERIFICATION_TOKEN_RETENTION_HOURS if retention_hours is None else retention_hours
    cutoff = _now() - timedelta(hours=hours)
    deleted, _ = VerificationToken.objects.filter(Q(expires_at__lt=cutoff) | Q(used_at__lt=cutoff)).delete()
    return deleted

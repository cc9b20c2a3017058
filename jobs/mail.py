"""One kept email connection per thread, so a worker slot sending email after email uses one SMTP session.

`send(message)` sends through this thread's connection, built by `get_connection()` from the current
settings (any EMAIL_BACKEND) and kept open. It is replaced when the email settings change, closed
after any error (the next message starts clean), and closed by `close_idle()` once unused for a while:
SMTP servers drop idle clients after 60–300 s, and the slot's worker calls it while it waits for work.

With Django's SMTP backend, a kept connection that the server closed while idle fails on the next
MAIL FROM: `SMTPBackend` then opens a new one and sends once more. Once DATA went out, the server may
have the message, so it never sends again; the error goes up and the job retries under its policy.
"""

import logging
import os
import smtplib
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend
from django.utils.module_loading import import_string

log = logging.getLogger(__name__)

IDLE_MAX = 30.0  # seconds unused before `close_idle()` closes a connection: below servers' 60–300 s

# A change in any of these replaces the kept connection (tests move EMAIL_PORT from server to server).
_SETTINGS = (
    "EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS",
    "EMAIL_USE_SSL", "EMAIL_TIMEOUT", "EMAIL_SSL_CERTFILE", "EMAIL_SSL_KEYFILE", "ANYMAIL",
)  # fmt: skip

_local = threading.local()


@dataclass
class _Kept:
    backend: BaseEmailBackend
    settings: tuple
    pid: int
    last_used: float


def send(message: EmailMessage) -> int:
    """Send `message` through this thread's kept connection; return how many messages went out (0 or 1)."""
    kept = _kept()
    try:
        sent = kept.backend.send_messages([message])
    except BaseException:  # a job timeout too: the conversation is in an unknown state
        close()
        raise
    kept.last_used = time.monotonic()
    return sent


def close_idle(max_idle: float = IDLE_MAX) -> bool:
    """Close this thread's connection if unused for more than `max_idle` seconds; return whether it did."""
    kept = _current()
    if kept is None or time.monotonic() - kept.last_used <= max_idle:
        return False
    close()
    return True


def close() -> None:
    """Close this thread's connection now. Never raises: it runs after errors and from the worker's loop."""
    kept, _local.kept = _current(), None
    if kept is None:
        return
    try:
        kept.backend.close()
    except Exception as exc:
        log.warning("could not close the email connection cleanly: %s: %s", type(exc).__name__, exc)


def _current() -> _Kept | None:
    kept = getattr(_local, "kept", None)
    if kept is not None and kept.pid != os.getpid():
        # Opened before a fork: the socket is the parent's; using or even QUITting it here would
        # break the parent's conversation. Drop it without a word.
        kept = _local.kept = None
    return kept


def _kept() -> _Kept:
    current = tuple(getattr(settings, name, None) for name in _SETTINGS)
    kept = _current()
    if kept is not None and kept.settings != current:
        close()
        kept = None
    if kept is None:
        is_smtp = import_string(settings.EMAIL_BACKEND) is DjangoSMTPBackend
        backend = SMTPBackend() if is_smtp else get_connection()
        # Opened here, outside send_messages(), so that send_messages() leaves it open afterwards.
        backend.open()
        kept = _local.kept = _Kept(backend, current, os.getpid(), time.monotonic())
    return kept


class _CountsData:
    """An smtplib connection that counts the DATA commands it sent: from DATA on, the server may hold
    the message."""

    data_commands = 0

    def data(self, msg):
        self.data_commands += 1
        return super().data(msg)


class _SMTP(_CountsData, smtplib.SMTP):
    pass


class _SMTP_SSL(_CountsData, smtplib.SMTP_SSL):
    pass


def _dropped(exc: Exception) -> bool:
    """The server closed the connection, or said it is closing it (421, e.g. an idle timeout)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    return isinstance(exc, (smtplib.SMTPServerDisconnected, ConnectionError))


class SMTPBackend(DjangoSMTPBackend):
    """Django's SMTP backend, plus one reconnect when a kept connection was dropped before DATA."""

    @property
    def connection_class(self):
        return _SMTP_SSL if self.use_ssl else _SMTP

    def _send(self, email_message):
        connection = self.connection
        data_before = connection.data_commands
        try:
            return super()._send(email_message)
        except Exception as exc:
            # Resend only if this connection carried an earlier message (so it was kept, and the
            # server likely closed it while idle) and DATA was not sent for this one.
            if not _dropped(exc) or data_before == 0 or connection.data_commands != data_before:
                raise
            log.info("kept SMTP connection was closed by the server (%s); reconnecting", type(exc).__name__)
        self.close()
        self.open()
        return super()._send(email_message)

"""One kept email connection per thread, so a worker slot sending email after email uses one SMTP session.

`send(message)` sends through this thread's connection, built by `get_connection()` from the current
settings (any EMAIL_BACKEND) and kept open. It is replaced when the email settings change, closed
after any error (the next message starts clean), and closed by `close_idle()` once unused for a while:
SMTP servers drop idle clients after 60–300 s, and the slot's worker calls it while it waits for work.

With Django's SMTP backend, a kept connection that the server closed while idle fails on the next
MAIL FROM: `SMTPBackend` then opens a new one and sends once more. Once DATA went out, the server may
have the message, so it never sends again; the error goes up and the job retries under its policy.
It also writes the message bytes itself when the message has the shape of ours (`as_smtp_bytes`).

`EMAIL_TIMEOUT` bounds connecting and every command but one: the server's answer to the message's end
may take `DATA_TIMEOUT` (RFC 5321 §4.5.3.2.6: 10 minutes), since a server slow to answer has usually
kept the message, and giving up sooner sends it again on the next attempt. `message_id(key)` names a
message the same way on every attempt, so a receiving server that got it already can drop a repeat.
"""

import logging
import os
import random
import smtplib
import threading
import time
from dataclasses import dataclass
from email.header import Header
from email.utils import formatdate, make_msgid, parseaddr
from functools import lru_cache

from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend
from django.core.mail.utils import DNS_NAME
from django.utils.crypto import salted_hmac
from django.utils.module_loading import import_string

log = logging.getLogger(__name__)

IDLE_MAX = 30.0  # seconds unused before `close_idle()` closes a connection: below servers' 60–300 s
DATA_TIMEOUT = 600  # seconds to wait for the answer to a message's end (RFC 5321 §4.5.3.2.6)

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


def send(message: EmailMessage, *, answer_by: float | None = None) -> int:
    """Send `message` through this thread's kept connection; return how many messages went out (0 or 1).
    `answer_by` (a `time.monotonic()`) cuts the wait for the answer to the message's end short of
    `DATA_TIMEOUT`, though never below `EMAIL_TIMEOUT`: a job ends the wait before its own timeout."""
    kept = _kept()
    kept.backend.answer_by = answer_by  # read by SMTPBackend; other backends have their own timeouts
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
    """An smtplib connection that counts the DATA commands it sent (from DATA on, the server may hold
    the message) and waits longer than its timeout for the answer to the message's end."""

    data_commands = 0
    answer_by: float | None = None

    def data(self, msg):
        """smtplib's `data`, with the longer wait for the answer to the message's end."""
        self.data_commands += 1
        self.putcmd("data")
        code, reply = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        if isinstance(msg, str):
            msg = smtplib._fix_eols(msg).encode("ascii")
        payload = smtplib._quote_periods(msg)
        self.send(payload + (b"" if payload.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        short = self.sock.gettimeout()
        self.sock.settimeout(_answer_wait(self.answer_by, short))
        try:
            return self.getreply()
        finally:
            if self.sock is not None:  # getreply() closes the connection when it fails
                self.sock.settimeout(short)


def _answer_wait(answer_by: float | None, short: float | None) -> float:
    """`DATA_TIMEOUT`, or less to end by `answer_by`, but no less than the other commands' timeout."""
    wait = DATA_TIMEOUT if answer_by is None else min(answer_by - time.monotonic(), DATA_TIMEOUT)
    return max(wait, short or 1)


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

    answer_by: float | None = None

    @property
    def connection_class(self):
        return _SMTP_SSL if self.use_ssl else _SMTP

    def _send(self, email_message):
        connection = self.connection
        data_before = connection.data_commands
        try:
            return self._send_once(email_message)
        except Exception as exc:
            # Resend only if this connection carried an earlier message (so it was kept, and the
            # server likely closed it while idle) and DATA was not sent for this one.
            if not _dropped(exc) or data_before == 0 or connection.data_commands != data_before:
                raise
            log.info("kept SMTP connection was closed by the server (%s); reconnecting", type(exc).__name__)
        self.close()
        self.open()
        return self._send_once(email_message)

    def _send_once(self, email_message) -> bool:
        """Django's `_send`; a message shaped like ours goes out through `_sendmail` with the bytes
        from `as_smtp_bytes`."""
        self.connection.answer_by = self.answer_by
        if not _ours(email_message):
            return super()._send(email_message)
        try:
            _sendmail(self.connection, _envelope(email_message.from_email), email_message.to, _our_bytes(email_message))
        except smtplib.SMTPException:
            if not self.fail_silently:
                raise
            return False
        return True


def _sendmail(connection: smtplib.SMTP, sender: str, recipients: list[str], data: bytes) -> None:
    """`smtplib.SMTP.sendmail` without options, with the same replies and errors, for addresses that
    need no parsing: smtplib and Django parse every address again, a tenth of a slot's CPU per email."""
    connection.ehlo_or_helo_if_needed()
    code, reply = connection.docmd("mail", f"FROM:<{sender}>")
    if code != 250:
        _abort(connection, code)
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    refused = {}
    for recipient in recipients:
        code, reply = connection.docmd("rcpt", f"TO:<{_envelope(recipient)}>")
        if code not in (250, 251):
            refused[recipient] = (code, reply)
        if code == 421:
            break
    if len(refused) == len(recipients):
        _abort(connection, code)
        raise smtplib.SMTPRecipientsRefused(refused)
    code, reply = connection.data(data)
    if code != 250:
        _abort(connection, code)
        raise smtplib.SMTPDataError(code, reply)


def _abort(connection: smtplib.SMTP, code: int) -> None:
    """What smtplib does after a refusal: the server closes on 421; otherwise the transaction is reset."""
    if code == 421:
        connection.close()
        return
    try:
        connection.rset()
    except smtplib.SMTPServerDisconnected:
        pass


@lru_cache(maxsize=64)  # the sender's address is the same in every message
def _envelope(address: str) -> str:
    """The address alone, for MAIL FROM and RCPT TO (`_ours` made sure it is ASCII, with no line break or comma)."""
    if "<" not in address:
        return address.strip()
    return parseaddr(address)[1]


def message_id(key: str) -> str:
    """The Message-ID of every attempt to deliver `key`, from any host (RFC 5322 §3.6.4): opaque (keyed
    with SECRET_KEY), in the sender's domain."""
    digest = salted_hmac("jobs.mail.smtp.message_id", key, algorithm="sha256").hexdigest()[:40]
    domain = _envelope(settings.DEFAULT_FROM_EMAIL).rpartition("@")[2] or DNS_NAME
    return f"<{digest}@{domain}>"


LINE_MAX = 998  # RFC 5322; a longer line takes Django's path, which encodes it (quoted-printable)


def as_smtp_bytes(message: EmailMessage) -> bytes:
    """The bytes Django's SMTP backend would send, written directly for messages shaped like ours
    (a plain-text body and one HTML alternative, UTF-8, ASCII addresses, no attachments, copies or
    extra headers but a Message-ID): Python's email package, through `message().as_bytes()`, was a
    fifth of a worker's CPU per email. Any other message takes Django's path."""
    return _our_bytes(message) if _ours(message) else message.message().as_bytes(linesep="\r\n")


def _our_bytes(message: EmailMultiAlternatives) -> bytes:
    boundary = f"==============={random.randrange(10**18, 10**19)}=="
    html = message.alternatives[0][0]
    head = (
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\nMIME-Version: 1.0\r\n'
        f"Subject: {_subject(message.subject)}\r\nFrom: {message.from_email}\r\nTo: {', '.join(message.to)}\r\n"
        f"Date: {formatdate(localtime=settings.EMAIL_USE_LOCALTIME)}\r\n"
        f"Message-ID: {message.extra_headers.get('Message-ID') or make_msgid(domain=DNS_NAME)}\r\n"
    )
    texts = (("plain", message.body), ("html", html))
    parts = "".join(f"--{boundary}\r\n{_part(subtype, text)}\r\n" for subtype, text in texts)
    return f"{head}\r\n{parts}--{boundary}--\r\n".encode()


def _ours(message: EmailMessage) -> bool:
    alternatives = getattr(message, "alternatives", [])
    addresses, headers = [message.from_email, *message.to], message.extra_headers
    texts = [message.body, *(content for content, _ in alternatives)]
    return (
        type(message) is EmailMultiAlternatives
        and (message.encoding or settings.DEFAULT_CHARSET).lower() in ("utf-8", "utf8")
        and message.content_subtype == "plain"
        and len(alternatives) == 1 and alternatives[0][1] == "text/html" and isinstance(alternatives[0][0], str)
        and not (message.attachments or message.cc or message.bcc or message.reply_to)
        and set(message.extra_headers) <= {"Message-ID"}
        and all(isinstance(v, str) and v.isascii() and "\r" not in v and "\n" not in v for v in headers.values())
        and all(address.isascii() and not any(c in address for c in "\r\n,") for address in addresses)
        and not any(c in message.subject for c in "\r\n") and len(message.subject) <= 60
        and all(len(line.encode()) <= LINE_MAX for text in texts for line in text.splitlines())
    )  # fmt: skip


@lru_cache(maxsize=64)
def _subject(subject: str) -> str:
    return subject if subject.isascii() else Header(subject, "utf-8").encode()


def _part(subtype: str, text: str) -> str:
    body = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    headers = f'Content-Type: text/{subtype}; charset="utf-8"\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit'
    return f"{headers}\r\n\r\n{body}"

"""One kept email connection per thread and server, so a worker slot sending email after email uses one
SMTP session per server.

`send(message)` sends through this thread's connection, built by `get_connection()` from the current
settings (any EMAIL_BACKEND) and kept open; `send(message, server=Server(...))` through a server of
its own (a municipality's), over SMTP. A connection is replaced when the email settings change, closed
after any error (the next message starts clean), and closed by `close_idle()` once unused for a while:
SMTP servers drop idle clients after 60–300 s, and the slot's worker calls it while it waits for work.

With Django's SMTP backend, a kept connection that the server closed while idle fails on the next
MAIL FROM: `SMTPBackend` then opens a new one and sends once more. Once DATA went out, the server may
have the message, so it never sends again; the error goes up and the job retries under its policy.
It also writes the message bytes itself when the message has the shape of ours (`messages.as_smtp_bytes`).

`EMAIL_TIMEOUT` bounds connecting and every command but one: the server's answer to the message's end
may take `DATA_TIMEOUT` (RFC 5321 §4.5.3.2.6: 10 minutes), since a server slow to answer has usually
kept the message, and giving up sooner sends it again on the next attempt. `messages.message_id(key)` names a
message the same way on every attempt, so a receiving server that got it already can drop a repeat.
"""

import logging
import os
import smtplib
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend
from django.utils.module_loading import import_string

from jobs.mail import messages

log = logging.getLogger(__name__)

IDLE_MAX = 30.0  # seconds unused before `close_idle()` closes a connection: below servers' 60–300 s
DATA_TIMEOUT = 600  # seconds to wait for the answer to a message's end (RFC 5321 §4.5.3.2.6)

# A change in any of these replaces the kept connection (tests move EMAIL_PORT from server to server).
_SETTINGS = (
    "EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS",
    "EMAIL_USE_SSL", "EMAIL_TIMEOUT", "EMAIL_SSL_CERTFILE", "EMAIL_SSL_KEYFILE", "ANYMAIL",
)  # fmt: skip

_local = threading.local()


@dataclass(frozen=True)
class Server:
    """An SMTP server of its own (a municipality's) instead of the installation's `EMAIL_*` settings;
    the other settings (`EMAIL_TIMEOUT`, the certificate files) still apply."""

    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)  # never in a log line or a traceback's locals repr
    use_tls: bool = True


@dataclass
class _Kept:
    backend: BaseEmailBackend
    settings: tuple
    pid: int
    last_used: float


def send(message: EmailMessage, *, answer_by: float | None = None, server: Server | None = None) -> int:
    """Send `message` through this thread's kept connection to `server` (None: the installation's);
    return how many messages went out (0 or 1). `answer_by` (a `time.monotonic()`) cuts the wait for
    the answer to the message's end short of `DATA_TIMEOUT`, though never below `EMAIL_TIMEOUT`: a job
    ends the wait before its own timeout."""
    kept = _kept(server)
    kept.backend.answer_by = answer_by  # read by SMTPBackend; other backends have their own timeouts
    try:
        sent = kept.backend.send_messages([message])
    except BaseException:  # a job timeout too: the conversation is in an unknown state
        _close(server)
        raise
    kept.last_used = time.monotonic()
    return sent


def close_idle(max_idle: float = IDLE_MAX) -> bool:
    """Close this thread's connections unused for more than `max_idle` seconds; return whether it closed any."""
    moment = time.monotonic()
    idle = [server for server, kept in _kept_ones().items() if moment - kept.last_used > max_idle]
    for server in idle:
        _close(server)
    return bool(idle)


def close() -> None:
    """Close this thread's connections now. Never raises: it runs after errors and from the worker's loop."""
    for server in list(_kept_ones()):
        _close(server)


def _close(server: Server | None) -> None:
    kept = _kept_ones().pop(server, None)
    if kept is None:
        return
    try:
        kept.backend.close()
    except Exception as exc:
        log.warning("could not close the email connection cleanly: %s: %s", type(exc).__name__, exc)


def _kept_ones() -> dict[Server | None, _Kept]:
    """This thread's connections, by server (None: the installation's)."""
    kept: dict[Server | None, _Kept] | None = getattr(_local, "kept", None)
    if kept is None or any(one.pid != os.getpid() for one in kept.values()):
        # Opened before a fork: the sockets are the parent's; using or even QUITting them here would
        # break the parent's conversations. Drop them without a word.
        kept = _local.kept = {}
    return kept


def _kept(server: Server | None) -> _Kept:
    current = tuple(getattr(settings, name, None) for name in _SETTINGS)
    kept = _kept_ones().get(server)
    if kept is not None and kept.settings != current:
        _close(server)
        kept = None
    if kept is None:
        if server is not None:
            backend: BaseEmailBackend = SMTPBackend(
                host=server.host, port=server.port, username=server.username, password=server.password,
                use_tls=server.use_tls, use_ssl=False,
            )  # fmt: skip
        elif import_string(settings.EMAIL_BACKEND) is DjangoSMTPBackend:
            backend = SMTPBackend()
        else:
            backend = get_connection()
        # Opened here, outside send_messages(), so that send_messages() leaves it open afterwards.
        backend.open()
        kept = _kept_ones()[server] = _Kept(backend, current, os.getpid(), time.monotonic())
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
        if not messages.is_ours(email_message):
            return super()._send(email_message)
        try:
            _sendmail(
                self.connection,
                messages.envelope(email_message.from_email),
                email_message.to,
                messages.our_bytes(email_message),
            )
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
        code, reply = connection.docmd("rcpt", f"TO:<{messages.envelope(recipient)}>")
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

"""Sending one message inside a job: the job's deadline, how long to wait for the server's answer,
and what the server's refusal means for the job (final or retried, and its answer in words)."""

import re
import smtplib
import time
from collections.abc import Callable

from django.core.mail import EmailMessage
from django.utils.translation import gettext as _
from rq import get_current_job

from jobs.failures.attempts import PermanentJobError
from jobs.mail import smtp
from jobs.rq_compat import now

RECORD_TIME = 60  # seconds a job keeps, after the server's answer, to record the delivery through a database outage
END_MARGIN = 5  # seconds left to RQ's own bookkeeping after the task
ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")


class MailServerBusy(Exception):
    """A 4xx answer: the server may take the message later, so RQ retries it on the queue's schedule."""


def job_deadline() -> float | None:
    """When this job's timeout stops it, as a `time.monotonic()`; None outside a job or without a timeout."""
    job = get_current_job()
    if job is None or not job.timeout or job.timeout < 0 or job.started_at is None:
        return None
    return time.monotonic() + job.timeout - (now() - job.started_at).total_seconds()


def answer_by() -> float | None:
    """The latest moment to wait for the server's answer to a message, leaving time for its record."""
    deadline = job_deadline()
    return None if deadline is None else deadline - RECORD_TIME - END_MARGIN


def deliver(
    message: EmailMessage, slow_down: Callable[[], object] | None = None, server: smtp.Server | None = None
) -> None:
    """Send `message` in time for the job's end, through `server` (None: the installation's), and say
    what a refusal was: a 5xx is final (`PermanentJobError`), a 4xx is retried (`MailServerBusy`);
    both carry the server's answer, which lists and Slack show. `slow_down` is called on a 421 or 451."""
    try:
        smtp.send(message, answer_by=answer_by(), server=server)
        return
    except smtplib.SMTPRecipientsRefused as exc:
        refused, answers = exc, list(exc.recipients.values())
        final = _("the mail server refused the recipient: %(reply)s")
    except smtplib.SMTPResponseException as exc:
        refused, answers = exc, [(exc.smtp_code, exc.smtp_error)]
        final = _("the mail server refused the message: %(reply)s")
    if slow_down and any(code in (421, 451) for code, _reply in answers):
        slow_down()
    code, reply = answers[0]
    if all(code >= 500 for code, _reply in answers):
        raise PermanentJobError(final % _said(code, reply)) from refused
    raise MailServerBusy(_("the mail server asked to try again later: %(reply)s") % _said(code, reply)) from refused


def _said(code: int, reply: bytes | str) -> dict:
    """The server's answer as staff read it in lists and Slack: code and first line, without addresses."""
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    return {"reply": ADDRESS.sub("<…>", f"{code} {text.splitlines()[0] if text else ''}".strip())[:200]}

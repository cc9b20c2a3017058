"""What the alerts say in Slack: the texts and the escaping that keeps user text from pinging or linking."""

from collections import Counter
from datetime import datetime
from math import ceil

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from jobs.models import DeadLetter


def escape(text: str) -> str:
    """Slack's control characters, so user text cannot ping `<!channel>` or forge links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def single_alert(row: DeadLetter) -> str:
    attempts = len(row.attempts) or 1
    message = first_line(row.exc_message)
    return "\n".join(
        [
            _(":rotating_light: A job failed for good in the queue *%(queue)s*") % {"queue": escape(row.queue)},
            _("• job: `%(job)s` (%(task)s)") % {"job": escape(row.job_id), "task": escape(row.func_name)},
            _("• attempts: %(n)d") % {"n": attempts},
            _("• error: %(error)s: %(message)s") % {"error": escape(row.exc_type), "message": escape(message)},
            _("• when: %(time)s (Córdoba)") % {"time": local_time(row.failed_at)},
            _("<%(url)s|See in admin>") % {"url": admin_url("admin:jobs_deadletter_change", row.pk)},
        ]
    )


def summary_alert(queue_name: str, rows: list[DeadLetter]) -> str:
    minutes = max(1, ceil((timezone.now() - rows[0].failed_at).total_seconds() / 60))
    kinds = ", ".join(_kind(kind, n, rows) for kind, n in Counter(row.exc_type for row in rows).most_common(5))
    url = admin_url("admin:jobs_deadletter_changelist") + f"?queue={queue_name}&alert__exact=summary"
    text = ngettext(
        ":rotating_light: %(n)d job failed for good in *%(queue)s* in the last %(minutes)d min: "
        "%(kinds)s — <%(url)s|see in admin>",
        ":rotating_light: %(n)d jobs failed for good in *%(queue)s* in the last %(minutes)d min: "
        "%(kinds)s — <%(url)s|see in admin>",
        len(rows),
    )
    return text % {"n": len(rows), "queue": escape(queue_name), "minutes": minutes, "kinds": kinds, "url": url}


def _kind(kind: str, n: int, rows: list[DeadLetter]) -> str:
    """An error type, how many, and its most frequent message (the SMTP server's reply, say)."""
    said = Counter(first_line(row.exc_message) for row in rows if row.exc_type == kind).most_common(1)[0][0]
    counted = f"{escape(kind)} ×{n}"
    return _("%(kind)s (e.g. %(message)s)") % {"kind": counted, "message": escape(said)} if said else counted


def first_line(message: str) -> str:
    return message.splitlines()[0][:200] if message else ""


def local_time(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%d/%m/%Y %H:%M:%S")


def admin_url(name: str, *args) -> str:
    return settings.SITE_URL + reverse(name, args=args)

"""What the alerts say in Slack: the texts and the escaping that keeps user text from pinging or linking."""

from collections import Counter
from datetime import datetime
from math import ceil

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from jobs.models import DeadLetter


def escape(text: str) -> str:
    """Slack's control characters, so user text cannot ping `<!channel>` or forge links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")



def single_alert(row: DeadLetter) -> str:
    attempts = len(row.attempts) or 1
    return "\n".join(
        [
            f":rotating_light: Un job falló definitivamente en la cola *{escape(row.queue)}*",
            f"• job: `{escape(row.job_id)}` ({escape(row.func_name)})",
            f"• intentos: {attempts}",
            f"• error: {escape(row.exc_type)}: {escape(row.exc_message.splitlines()[0] if row.exc_message else '')}",
            f"• cuándo: {local_time(row.failed_at)} (Córdoba)",
            f"<{admin_url('admin:jobs_deadletter_change', row.pk)}|Ver en admin>",
        ]
    )


def summary_alert(queue_name: str, rows: list[DeadLetter]) -> str:
    minutes = max(1, ceil((timezone.now() - rows[0].failed_at).total_seconds() / 60))
    kinds = ", ".join(f"{escape(kind)} ×{count}" for kind, count in Counter(r.exc_type for r in rows).most_common(5))
    url = admin_url("admin:jobs_deadletter_changelist") + f"?queue={queue_name}&alert__exact=summary"
    return (
        f":rotating_light: {len(rows)} jobs fallaron definitivamente en *{escape(queue_name)}* "
        f"en los últimos {minutes} min: {kinds} — <{url}|ver en admin>"
    )


def local_time(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%d/%m/%Y %H:%M:%S")


def admin_url(name: str, *args) -> str:
    return settings.SITE_URL + reverse(name, args=args)


from datetime import datetime
from zoneinfo import ZoneInfo

from django import template
from django.utils import timezone
from django.utils.html import format_html

from jobs.config.crons import ZONE
from jobs.staff.dashboard.labels import job_state_label, state_label, worker_state_label

register = template.Library()


@register.filter
def when(moment: datetime | None):
    """A time in Córdoba, with UTC on hover."""
    if not moment:
        return "—"
    utc = moment.astimezone(ZoneInfo("UTC"))
    local = moment.astimezone(ZoneInfo(ZONE))
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        utc.isoformat(),
        f"{utc:%Y-%m-%d %H:%M:%S}",
        f"{local:%d/%m/%Y %H:%M:%S}",
    )


@register.filter
def age(moment: datetime | None):
    """How long ago, roughly: 42 s, 5 min, 3.2 h, 2.0 d."""
    if not moment:
        return "—"
    seconds = (timezone.now() - moment).total_seconds()
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 86400 else f"{seconds / 86400:.1f} d"


@register.filter
def get_item(mapping: dict, key):
    return mapping.get(key)


@register.filter
def state(name: str) -> str:
    """The jobs of a state, as staff read it (`failed` → "fallidos")."""
    return state_label(name)


@register.filter
def job_state(name: str) -> str:
    """One job's state, as staff read it (`failed` → "fallido")."""
    return job_state_label(name)


@register.filter
def worker_state(name: str) -> str:
    """A worker's state, as staff read it (`idle` → "libre")."""
    return worker_state_label(name)


@register.filter
def attempt_error(attempt: dict, show_message: bool) -> str:
    """A failed attempt's error: its type alone for staff who may not see payloads (a message can hold one)."""
    return attempt["error"] if show_message else attempt["error"].split(":", 1)[0]

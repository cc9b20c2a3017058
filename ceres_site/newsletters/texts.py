"""What the newsletter's pages say about a campaign: its progress, the pace the SMTP limit allows and
how long a send will take."""

import math

from django.conf import settings
from django.template.defaultfilters import floatformat
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from . import campaigns


def progress_text(found: campaigns.Progress) -> str:
    return _("sent %(sent)d · pending %(pending)d · failed %(failed)d · unsubscribed %(unsubscribed)d") % {
        "sent": found.sent,
        "pending": found.pending,
        "failed": found.failed,
        "unsubscribed": found.unsubscribed,
    }


def rate_text(pace: campaigns.Pace) -> str:
    if not pace.per_minute and not pace.per_hour:
        return _("No SMTP rate limit is set: as fast as the mail server takes them.")
    values = {
        "per_minute": floatformat(pace.per_minute, "-1g"),
        "per_hour": floatformat(pace.per_hour, "g"),
        "share": round(100 * (1 - settings.SMTP_TRANSACTIONAL_SHARE)),
    }
    if not pace.per_hour:
        said = _("%(per_minute)s emails a minute")
    elif not pace.per_minute:
        said = _("up to %(per_hour)s emails an hour")
    else:
        said = _("%(per_minute)s emails a minute, up to %(per_hour)s an hour")
    return (said + " " + _("(%(share)d %% of the SMTP limit: the rest is kept for account emails)")) % values


def estimate_text(pace: campaigns.Pace, recipients: int) -> str:
    seconds = pace.seconds_for(recipients)
    if seconds is None:
        return _("It depends on the mail server: no limit sets the pace.")
    if seconds < 60:
        return _("less than a minute")
    return _("about %(duration)s") % {"duration": duration_text(seconds)}


def duration_text(seconds: float) -> str:
    """ "2 hours and 5 minutes": the two largest units, minutes rounded up (a minute at least)."""
    days, minutes = divmod(math.ceil(seconds / 60), 24 * 60)
    hours, minutes = divmod(minutes, 60)
    counts = (
        (days, ngettext("%(n)d day", "%(n)d days", days)),
        (hours, ngettext("%(n)d hour", "%(n)d hours", hours)),
        (minutes, ngettext("%(n)d minute", "%(n)d minutes", minutes)),
    )
    parts = [text % {"n": n} for n, text in counts if n][:2]
    return parts[0] if len(parts) == 1 else _("%(first)s and %(second)s") % {"first": parts[0], "second": parts[1]}

"""What the job machinery knows of municipalities: a job's municipality is the id in its kwargs
(`municipality_of`), and where alerts about it go is asked of `webhook_for`, which the domain
(`ceres_site.municipalities`) registers at start-up: the machinery never imports it. Until then, and
for jobs of no municipality, alerts go to the platform's webhook."""

from collections.abc import Callable

from django.conf import settings

KWARG = "municipality"


def municipality_of(kwargs: dict) -> int | None:
    """The municipality id a job's kwargs name, if they name one the way producers write it."""
    value = kwargs.get(KWARG)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def platform_webhook(municipality: int | None) -> str:
    return settings.SLACK_WEBHOOK_URL


_webhook_for: Callable[[int | None], str] = platform_webhook


def webhook_for(municipality: int | None) -> str:
    """The Slack webhook for alerts about `municipality`'s jobs (None: the platform's); "" for none."""
    return _webhook_for(municipality)


def register_webhooks(function: Callable[[int | None], str]) -> None:
    global _webhook_for
    _webhook_for = function

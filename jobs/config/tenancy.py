"""What the job machinery knows of municipalities: a job's municipality is the id in its kwargs
(`municipality_of`). Where alerts about it go (`webhook_for`), which municipalities exist (`names`,
the only values of the metrics' `municipality` label) and which one a staff member is limited to
(`scope_of`) are asked of functions the domain (`ceres_site.municipalities`) registers at start-up:
the machinery never imports it. Until then, and for jobs of no municipality, alerts go to the
platform's webhook, no municipality is known and no staff member is limited."""

import time
from collections.abc import Callable

from django.conf import settings

KWARG = "municipality"
SHARED_FOR = 5  # seconds a process goes by its last count of municipalities (`shared`)


def municipality_of(kwargs: dict) -> int | None:
    """The municipality id a job's kwargs name, if they name one the way producers write it."""
    value = kwargs.get(KWARG)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def municipality_of_job(job) -> int | None:
    """`municipality_of` a job's kwargs; None for a payload that cannot be read."""
    try:
        return municipality_of(job.kwargs)
    except Exception:  # rq's DeserializationError, or anything a broken payload raises
        return None


def platform_webhook(municipality: int | None) -> str:
    return settings.SLACK_WEBHOOK_URL


_webhook_for: Callable[[int | None], str] = platform_webhook
_names: Callable[[], dict[int, str]] = dict
_scope_of: Callable[[object], int | None] = lambda user: None  # noqa: E731


def webhook_for(municipality: int | None) -> str:
    """The Slack webhook for alerts about `municipality`'s jobs (None: the platform's); "" for none."""
    return _webhook_for(municipality)


def names() -> dict[int, str]:
    """Every configured municipality's id and slug."""
    return _names()


_shared: tuple[float, bool] | None = None  # (when counted, whether several)


def shared() -> bool:
    """Whether several municipalities share the installation: then each one's jobs are capped on the
    queues that say so (`QueuePolicy.tenant_cap`). Asked at every enqueue, so counted at most every
    `SHARED_FOR` seconds, and at once after a change made in this process (`forget`)."""
    global _shared
    moment = time.monotonic()
    if _shared is None or moment - _shared[0] > SHARED_FOR:
        _shared = (moment, len(names()) > 1)
    return _shared[1]


def forget() -> None:
    """Count the municipalities again at the next `shared` (one was added or deleted)."""
    global _shared
    _shared = None


def cap_key(queue_name: str, municipality: int) -> str:
    """The name of the cap on `municipality`'s jobs in `queue_name` (rq's rate-limit key)."""
    return f"{queue_name}:{municipality}"


def queue_of_cap(key: str) -> str:
    """The queue a `cap_key` caps."""
    return key.rpartition(":")[0]


def scope_of(user) -> int | None:
    """The municipality a staff member sees and acts on alone; None: every one (superusers, the
    default municipality's staff)."""
    return _scope_of(user)


def register(
    *,
    webhook_for: Callable[[int | None], str],
    names: Callable[[], dict[int, str]],
    scope_of: Callable[[object], int | None],
) -> None:
    global _webhook_for, _names, _scope_of
    _webhook_for, _names, _scope_of = webhook_for, names, scope_of

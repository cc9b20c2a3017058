"""This process's Redis clients: one `Queue`, and so one connection pool, per queue name.

django-rq's `get_queue()` and `get_connection()` build a new client and pool on every call: a TCP
connect and a handshake per enqueue, per page view, per sweep. Every module asks here instead.
redis-py pools are fork-safe (a forked work-horse opens its own connections) and thread-safe.
"""

from django.core.signals import setting_changed
from django.dispatch import receiver
from django_rq import get_queue
from rq import Queue

from jobs.queues import EMAIL

_queues: dict[str, Queue] = {}


def queue(name: str) -> Queue:
    found = _queues.get(name)
    if found is None:
        found = _queues.setdefault(name, get_queue(name))
    return found


def redis():
    """The Redis client of the queues (they all live in one Redis database)."""
    return queue(EMAIL.name).connection


@receiver(setting_changed)
def _forget(*, setting: str, **kwargs) -> None:
    if setting == "RQ_QUEUES":  # a test points the queues at another Redis (a Sentinel cluster)
        _queues.clear()

"""This process's Redis clients: one `Queue`, and so one connection pool, per queue name.

django-rq's `get_queue()` and `get_connection()` build a new client and pool on every call: a TCP
connect and a handshake per enqueue, per page view, per sweep. Every module asks here instead.
redis-py pools are fork-safe (a forked work-horse opens its own connections) and thread-safe.

Every long-lived client (these, the workers', the scheduler's) gets `hold()`'s retry policy: redis-py
clients built from a URL try each command once, so a dropped connection fails the command at once.
With it a refused or reset connection is tried again within about a second, and the process's log
says once when Redis stops answering and once when it answers again (`LINK`), however many threads
and commands meet the outage; the loops that wait on Redis stay quiet meanwhile.
"""

import functools
import logging
import os
import threading
import time

from django.core.signals import setting_changed
from django.dispatch import receiver
from django_rq import get_queue
from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from rq import Queue

from jobs.config.policies import EMAIL

log = logging.getLogger(__name__)

# A refused, reset or closed connection (a restart, a failover) is retried: the command did not run
# or may run again harmlessly. A timeout is not: the command may have run, and a frozen server would
# hold the caller (a page, a slot) for several socket timeouts instead of one.
RETRIES = 3
BACKOFF = ExponentialWithJitterBackoff(base=0.1, cap=1.0)
SETTLE = 1.0  # seconds after a loss before an answer counts as Redis being back
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, TimeoutError)  # what "Redis does not answer" raises

_queues: dict[str, Queue] = {}


class _Link:
    """Whether this process can reach Redis, as its last command found: logs each change once."""

    def __init__(self):
        self.down_since: float | None = None
        self._lock = threading.Lock()

    def lost(self, error: BaseException) -> None:
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        log.error("Redis unreachable (pid %d), carrying on: %s: %s", os.getpid(), type(error).__name__, error)

    def back(self) -> None:
        """A reply read a while after the loss: one on a connection the server had not closed yet, or
        from a server answering while it shuts down, is not the end of the outage."""
        with self._lock:
            since = self.down_since
            if since is None or time.monotonic() < since + SETTLE:
                return
            self.down_since = None
        log.warning("Redis reachable again (pid %d) after %.0f s", os.getpid(), time.monotonic() - since)


LINK = _Link()


@functools.cache
def _watched(connection_class: type) -> type:
    """`connection_class` (plain, TLS, Sentinel-managed), telling `LINK` what its socket meets. A reply
    read is Redis answering; a pubsub read that times out with nothing to read is not."""

    class Watched(connection_class):
        def connect(self):
            return _watch(super().connect)

        def send_packed_command(self, *args, **kwargs):
            return _watch(super().send_packed_command, *args, **kwargs)

        def read_response(self, *args, **kwargs):
            response = _watch(super().read_response, *args, **kwargs)
            if LINK.down_since is not None:
                LINK.back()
            return response

    Watched.__name__ = Watched.__qualname__ = f"Watched{connection_class.__name__}"
    return Watched


def _watch(action, *args, **kwargs):
    try:
        return action(*args, **kwargs)
    except BusyLoadingError:
        raise  # Redis answers, still loading its data after a restart: not a new outage (callers retry)
    except UNREACHABLE as error:
        LINK.lost(error)
        raise


def hold(connection: Redis) -> Redis:
    """Give `connection` this project's retry policy and outage log (for the connections its pool
    opens from now on: call it before the first command)."""
    pool = connection.connection_pool
    if not pool.connection_class.__name__.startswith("Watched"):
        pool.connection_class = _watched(pool.connection_class)
        pool.connection_kwargs["retry"] = Retry(BACKOFF, RETRIES, supported_errors=(RedisConnectionError,))
    return connection


def own_connection(client: Redis) -> Redis:
    """A client for one thread (a worker slot) that keeps one connection of `client`'s pool. A pool
    checks every connection it hands out for unread replies, a system call per command that lets
    another thread take the GIL: about 4 % of the in-process worker's CPU per email. Connects now;
    `close()` gives the connection back. Safe to keep: redis-py drops a connection a command failed on;
    call `drop_if_closed` after a wait, as the pool would have."""
    return Redis(connection_pool=client.connection_pool, single_connection_client=True)


def drop_if_closed(client: Redis) -> None:
    """Disconnect `own_connection`'s connection if the server closed it meanwhile (Redis restarted),
    as a pool checks at each checkout: its next command connects again, and no process logs an
    outage that ended while it was not looking."""
    kept = client.connection
    if kept is None or not kept.is_connected:
        return
    try:
        closed = kept.can_read()  # a closed socket reads as ready, or raises
    except (RedisConnectionError, RedisTimeoutError, OSError):
        closed = True
    if closed:
        kept.disconnect()


def queue(name: str) -> Queue:
    found = _queues.get(name)
    if found is None:
        made = get_queue(name)
        hold(made.connection)
        found = _queues.setdefault(name, made)
    return found


def redis():
    """The Redis client of the queues (they all live in one Redis database)."""
    return queue(EMAIL.name).connection


@receiver(setting_changed)
def _forget(*, setting: str, **kwargs) -> None:
    if setting == "RQ_QUEUES":  # a test points the queues at another Redis (a Sentinel cluster)
        _queues.clear()

"""Paused queues: workers take no new job from them (running ones finish), producers keep enqueueing.

The state is one Redis hash, `<prefix>:paused` (queue → who and since when), so it outlives worker
restarts and every process sees it. Workers read it through `PauseCache` (at most once a second per
process, not once per job) before they wait for a job, and again when a job arrives; a job taken
from a queue paused meanwhile goes back to the head of its queue (`give_back`).
"""

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

REFRESH = 1.0  # seconds a worker process trusts what it read


@dataclass(frozen=True)
class Pause:
    since: datetime
    by: str


def _key() -> str:
    return f"{settings.RQ_KEY_PREFIX}:paused"


def pause(connection, queue_name: str, by: str) -> bool:
    """Pause `queue_name`; False if it was paused already (who and since when stay)."""
    return bool(connection.hsetnx(_key(), queue_name, json.dumps({"since": timezone.now().isoformat(), "by": by})))


def resume(connection, queue_name: str) -> bool:
    """Resume `queue_name`; False if it was not paused."""
    return bool(connection.hdel(_key(), queue_name))


def paused(connection) -> dict[str, Pause]:
    found = {}
    for name, value in connection.hgetall(_key()).items():
        data = json.loads(value)
        found[name.decode()] = Pause(since=datetime.fromisoformat(data["since"]), by=data["by"])
    return found


def give_back(connection, queue, job_id: str) -> None:
    """Put a job taken from a paused queue back at its head (and out of the intermediate list)."""
    with connection.pipeline() as pipe:
        pipe.lrem(queue.intermediate_queue_key, 1, job_id)
        pipe.lpush(queue.key, job_id)
        pipe.execute()


class PauseCache:
    """The paused queues' names, read at most every `REFRESH` seconds (thread-safe)."""

    def __init__(self, connection):
        self._connection, self._names, self._read_at, self._lock = connection, frozenset(), 0.0, threading.Lock()

    def names(self) -> frozenset[str]:
        with self._lock:
            if time.monotonic() - self._read_at >= REFRESH:
                self._names = frozenset(name.decode() for name in self._connection.hkeys(_key()))
                self._read_at = time.monotonic()
            return self._names

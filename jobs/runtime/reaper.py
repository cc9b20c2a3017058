"""Jobs of a dead process come back: the reaper.

Every few seconds one live process (of any kind: `CeresWorker.run_maintenance_tasks`, the slot
worker's main loop) looks for dead workers: a worker hash that expired, or, on this host, a
registered pid that no longer exists (a process restarted by its supervisor finds its predecessor at
once). Their running jobs are handed to RQ's abandoned-job handling (a retry, or a final failure
that `jobs.failures.final` archives and alerts), and the scheduler locks they held (or a dead forked
scheduler process held) are released, so a retry delay is honoured by the next scheduler tick. One
reaper at a time: its lock is renewed for as long as it reaps.
"""

import logging
import socket
import threading
from contextlib import contextmanager

from django.conf import settings
from redis.exceptions import LockError, RedisError

from jobs import rq_compat
from jobs.config import policies
from jobs.failures.final import sweep_abandoned

log = logging.getLogger(__name__)

REAP_LOCK_TTL = 10  # one reaper at a time (renewed while it reaps); a dead holder delays the next by this at most


def reap_dead_workers(connection, *, now_ts: float | None = None) -> list[str] | None:
    """Find workers that died (hash expired, or a pid gone on this host), give their running jobs
    back through RQ's abandoned-job handling, release the scheduler locks dead workers hold;
    returns the names of the dead, or None when another process is reaping right now."""
    key = f"{settings.RQ_KEY_PREFIX}:reap-lock"
    # Not thread-local: the thread that renews the lock must know its token.
    lock = connection.lock(key, timeout=REAP_LOCK_TTL, blocking=False, thread_local=False)
    if not lock.acquire():
        return None
    with _held(lock):
        return _reap(connection, now_ts)


@contextmanager
def _held(lock):
    """Keep `lock` while the work runs, however long (a sweep can wait on the database): a thread
    renews it every third of its TTL, so no second reaper starts beside this one. A holder that
    dies stops renewing: its lock expires REAP_LOCK_TTL later."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(lock.timeout / 3):
            try:
                lock.reacquire()
            except LockError:  # expired meanwhile (Redis flushed, this process frozen): another may reap now
                log.warning("the reap lock was lost while reaping")
                return
            except RedisError:
                log.warning("could not renew the reap lock", exc_info=True)

    renewer = threading.Thread(target=renew, name="reap-lock", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()
        try:
            lock.release()
        except LockError:
            pass  # lost meanwhile, said above


def _reap(connection, now_ts: float | None) -> list[str]:
    names = sorted(rq_compat.worker_name_from_key(key) for key in connection.smembers(rq_compat.WORKERS_KEY))
    dead = [name for name, alive in zip(names, _alive(connection, names)) if not alive]
    for name in dead:
        _bury(connection, name)
    _release_dead_schedulers_locks(connection)
    sweep_abandoned(now=now_ts)
    return dead


def _release_dead_schedulers_locks(connection) -> None:
    """A retry delay must not wait for a dead scheduler's lock to expire. A lock's owner is an
    in-process worker (its scheduler takes the worker's name) or a scheduler process that a forking
    worker forked (a name of its own, and a hash of its own with its pid): it lives if either does."""
    lock_keys = [rq_compat.scheduler_lock_key(queue_name) for queue_name in policies.QUEUES]
    owners = {key: owner.decode() for key, owner in zip(lock_keys, connection.mget(lock_keys)) if owner}
    names = list(owners.values())
    as_workers = _alive(connection, names)
    as_schedulers = _alive(connection, names, key_of=rq_compat.scheduler_hash_key)
    for (key, owner), worker, scheduler in zip(owners.items(), as_workers, as_schedulers):
        if not (worker or scheduler):
            rq_compat.release_scheduler_lock(connection, key, owner)


def _alive(connection, names: list[str], key_of=rq_compat.worker_key) -> list[bool]:
    """Whether each worker (or scheduler: `key_of`) still beats (its hash has its pid) and, on this
    host, its process still runs."""
    hostname = socket.gethostname()
    with connection.pipeline(transaction=False) as pipe:
        for name in names:
            rq_compat.worker_process_fields(pipe, key_of(name))
        rows = pipe.execute()
    return [
        pid is not None and not (host and host.decode() == hostname and not _pid_alive(int(pid))) for pid, host in rows
    ]


def _bury(connection, name: str) -> None:
    """Unregister a dead worker; the jobs it was running are abandoned now, not when their TTL ends."""
    executions_key = rq_compat.worker_executions_key(name)
    running = [entry.decode() for entry in connection.smembers(executions_key)]
    with connection.pipeline(transaction=False) as pipe:
        for queue_name in policies.QUEUES:
            for entry in running:
                rq_compat.abandon_execution(pipe, queue_name, entry)
        rq_compat.unlist_worker(pipe, name, policies.QUEUES)
        pipe.delete(rq_compat.worker_key(name), executions_key)
        pipe.execute()
    log.warning("worker %s is dead; its %d running job(s) are handed back", name, len(running))


def _pid_alive(pid: int) -> bool:
    """Whether a process of this host has this pid and is not a zombie (killed, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True

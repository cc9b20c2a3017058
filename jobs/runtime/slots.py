"""The in-process worker: one process runs the whole concurrency of its queues as threads ("slots").

`python manage.py rqworker email slack` starts one `SlotWorker` when every queue it names is
`in_process` in its policy: 5 slots for email, 10 for slack, no fork per job, and each slot keeps
its database, SMTP and HTTP connections from one job to the next.

- **Dequeue.** Per queue, one idle slot at a time waits in Redis for the next job (RQ's BLMOVE into
  the queue's intermediate list); the other idle slots wait on a local lock, so they cost no Redis
  traffic. A slot runs the job with RQ's own lifecycle (`jobs.runtime.slot_runner.SlotRunner`).
- **One heartbeat per process.** The main thread beats every `HEARTBEAT_INTERVAL` seconds for all
  slots in one pipeline: the worker hash (with `slots` and `busy` per queue, for the dashboard and
  health) and the started-registry entries of the jobs running now. A job therefore stays "started"
  however long it runs (its timeout still stops it), and entries of a dead process expire after
  `PROCESS_TTL` seconds.
- **Jobs of a dead process come back.** Every `REAP_INTERVAL` seconds one live process (of any
  kind) looks for dead workers: a worker hash that expired, or, on this host, a registered pid that
  no longer exists (a process restarted by its supervisor finds its predecessor at once). Their
  running jobs are handed to RQ's abandoned-job handling (a retry, or a final failure that
  `jobs.failures.final` archives and alerts), and the scheduler locks they held (or a dead forked
  scheduler process held) are released, so a retry delay is honoured by the next scheduler tick.
  One reaper at a time: its lock is renewed for as long as it reaps.
- **RQ's scheduler runs in the main thread** (retry delays, `enqueue_in`) for every queue, ticking
  every second while this process holds a queue's scheduler lock: no scheduler process, here or in
  the forking workers (they start theirs only if no one holds their queue's lock a minute on). It
  always runs, `--with-scheduler` or not: without it a retry delay would never end.
- **Stop.** SIGTERM or SIGINT: no new jobs, running jobs finish, exit 0. Another signal more than
  a second later: exit at once; the running jobs are marked abandoned first and come back within
  `REAP_INTERVAL`. After `WORKER_MAX_JOBS` jobs, or once its RSS passes `WORKER_MAX_RSS_MB`, the
  process stops the same graceful way and starts itself again (`exec`), so a slow leak cannot grow
  and no supervisor (honcho stops everything when one process exits) needs to notice.
"""

import logging
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager

from django.conf import settings
from django.db import close_old_connections, connections
from redis.exceptions import LockError, RedisError
from rq.executions import Execution
from rq.registry import StartedJobRegistry
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
from rq.scripts import release_lock
from rq.utils import now, utcformat
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY, unregister

from jobs.enqueue import clients

from jobs.mail import smtp, throttle

from jobs.config import pauses, policies
from jobs.failures.final import sweep_abandoned
from jobs.runtime.slot_runner import SlotRunner
from jobs.runtime.worker import CeresWorker

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 5  # seconds between two heartbeats of a process
PROCESS_TTL = 20  # a process (and its running jobs) counts as dead this long after its last heartbeat
REAP_INTERVAL = 5  # seconds between two looks for dead workers by each process
REAP_LOCK_TTL = 10  # one reaper at a time (renewed while it reaps); a dead holder delays the next by this at most
DEQUEUE_TIMEOUT = HEARTBEAT_INTERVAL  # an idle queue costs one blocking BLMOVE per interval
DB_CHECK_AFTER = 1  # seconds without a job before a slot's database connection is checked before use
SCHEDULER_TICK = 1  # seconds: the latest a due retry is enqueued
REDIS_BACKOFF_MAX = 5  # seconds: the longest a slot waits between two tries while Redis is away
SECOND_SIGNAL_GRACE = 1  # a signal this soon after the first is the same stop (Ctrl-C reaches both honcho and us)


class _QueueSlots:
    """The slots of one queue: `leader` is held by the one idle slot that waits in Redis."""

    def __init__(self, queue, size: int):
        self.queue = queue
        self.size = size
        self.throttled = policies.QUEUES[queue.name].smtp_throttled
        self.leader = threading.Lock()
        self.runners: list[SlotRunner] = []

    @property
    def busy(self) -> int:
        return sum(bool(runner.executions) for runner in self.runners)


class SlotWorker(CeresWorker):
    """The process: registered once in Redis, beats for every slot, reaps dead workers, schedules."""

    def __init__(self, *args, **kwargs):
        kwargs["worker_ttl"] = PROCESS_TTL
        super().__init__(*args, **kwargs)
        self.groups = [_QueueSlots(queue, policies.QUEUES[queue.name].concurrency) for queue in self.queues]
        self._stopping = threading.Event()
        self._first_signal_at = 0.0
        self._jobs_done = 0
        self._jobs_lock = threading.Lock()
        self._recycle = False
        self._rq_scheduler: RQScheduler | None = None
        self._pauses = pauses.PauseCache(self.connection)

    # --- the process ----------------------------------------------------------------------------

    def work(self, burst=False, logging_level=None, max_jobs=None, with_scheduler=False, **ignored) -> bool:
        self.bootstrap(logging_level or "INFO")
        self._install_signal_handlers()
        self._max_jobs = max_jobs or settings.WORKER_MAX_JOBS
        if with_scheduler or not burst:
            self._start_rq_scheduler(burst)
        if not burst:  # first the sweep for what died before we started, as RQ's workers do
            self.run_maintenance_tasks()
        for group in self.groups:
            group.runners = [self._runner(group.queue) for _ in range(group.size)]
        threads = [
            threading.Thread(target=self._run_slot, args=(group, n, burst), name=f"slot-{group.queue.name}-{n}")
            for group in self.groups
            for n in range(group.size)
        ]
        for thread in threads:
            thread.start()
        self.log.info("Worker %s: %s", self.name, self.describe_slots())
        try:
            self._main_loop(threads, burst)
        finally:
            self._stopping.set()  # the loop ends once the slots have; if it failed instead, they stop too
            for thread in threads:
                thread.join()
            self._teardown()
        if self._recycle:
            self._restart()
        return self._jobs_done > 0

    def describe_slots(self) -> str:
        return ", ".join(f"{group.queue.name}: {group.size} slots" for group in self.groups)

    def _runner(self, queue) -> SlotRunner:
        return SlotRunner(
            [queue],
            name=self.name,
            connection=self.connection,
            job_class=self.job_class,
            queue_class=self.queue_class,
            execution_ttl=PROCESS_TTL,
        )

    def _main_loop(self, threads: list[threading.Thread], burst: bool) -> None:
        next_beat = next_reap = 0.0
        while alive := [thread for thread in threads if thread.is_alive()]:
            moment = time.monotonic()
            if moment >= next_beat:
                self._safely(self.heartbeat)
                next_beat = moment + HEARTBEAT_INTERVAL
            if moment >= next_reap and not burst:
                reaped = self._safely(reap_dead_workers, self.connection)
                next_reap = moment + (REAP_INTERVAL if reaped is not None else SCHEDULER_TICK)  # busy: soon again
            if self._rq_scheduler and not burst:
                self._safely(self._tick_rq_scheduler)
            if self.should_run_maintenance_tasks and not burst:
                self._safely(self.run_maintenance_tasks)
            if rss_mb() > settings.WORKER_MAX_RSS_MB:
                self._recycle_now(f"its RSS passed {settings.WORKER_MAX_RSS_MB} MiB")
            alive[0].join(timeout=0.05 if burst else SCHEDULER_TICK)

    def _recycle_now(self, reason: str) -> None:
        if not self._stopping.is_set():
            self.log.info("Worker %s: recycling: %s", self.name, reason)
            self._recycle = True
            self._stopping.set()

    def heartbeat(self, timeout=None, pipeline=None):
        """One pipeline for the process and every job it runs; re-registers if Redis lost the hash."""
        self.last_heartbeat = now()
        running = [(group, execution) for group in self.groups for r in group.runners for execution in r.running]
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.hset(self.key, mapping={"last_heartbeat": utcformat(self.last_heartbeat), **self._slot_fields()})
            pipe.expire(self.key, PROCESS_TTL)
            pipe.expire(self.executions_key, PROCESS_TTL)
            for group, execution in running:
                execution.heartbeat(group.queue.started_job_registry, PROCESS_TTL, pipeline=pipe)
            created = pipe.execute()[0]
        if created > 1:  # the hash was gone (Redis restarted or flushed): register again
            self.log.warning("Worker %s: registration lost in Redis, registering again", self.name)
            self.register()

    def _slot_fields(self) -> dict:
        return {
            "state": "busy" if any(group.busy for group in self.groups) else "idle",
            "slots": ",".join(f"{group.queue.name}={group.size}" for group in self.groups),
            "busy": ",".join(f"{group.queue.name}={group.busy}" for group in self.groups),
        }

    def register_birth(self):
        self.birth_date = self.last_heartbeat = now()
        self.register()

    def registration(self) -> dict:
        return {**self.serialize(), **self._slot_fields()}

    registration_ttl = PROCESS_TTL

    def _install_signal_handlers(self):
        self._previous_handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum, frame):
        moment = time.monotonic()
        if not self._first_signal_at:
            self._first_signal_at = moment
            self.log.info("Worker %s: stopping after the running jobs (signal %d)", self.name, signum)
            self._recycle = False
            self._stopping.set()
        elif moment - self._first_signal_at > SECOND_SIGNAL_GRACE:
            self.log.warning("Worker %s: stopping now; running jobs will run again", self.name)
            # Not from the handler itself: it may have interrupted this thread inside redis-py's pool lock.
            threading.Thread(target=self._exit_now, daemon=True).start()

    def _exit_now(self) -> None:
        """Hand our running jobs to the next reaper now, instead of after our TTL, and exit."""
        threading.Timer(3, os._exit, args=(1,)).start()  # a Redis that does not answer must not keep us
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                for group in self.groups:
                    for runner in group.runners:
                        for execution in runner.running:
                            pipe.zadd(group.queue.started_job_registry.key, {execution.composite_key: 0}, xx=True)
                unregister(self, pipe)
                pipe.delete(self.key, self.executions_key)
                pipe.execute()
            if self._rq_scheduler:
                self._rq_scheduler.release_locks()
        except RedisError:
            log.exception("could not mark the running jobs abandoned; they come back after %d s", PROCESS_TTL)
        os._exit(1)

    def _teardown(self) -> None:
        if self._rq_scheduler:
            self._safely(self._rq_scheduler.release_locks)
        self._safely(self.register_death)
        for sig, handler in self._previous_handlers.items():  # a burst run inside another program
            signal.signal(sig, handler)

    def _restart(self) -> None:
        self.log.info("Worker %s: starting again", self.name)
        connections.close_all()
        os.execv(sys.executable, [sys.executable, *sys.argv])

    # --- RQ's scheduler, in the main thread -----------------------------------------------------

    def _start_rq_scheduler(self, burst: bool) -> None:
        # Every queue's, the forking workers' too (they start a scheduler only as a fallback); a burst
        # run enqueues what is due on its own queues, as RQ's burst workers do.
        names = [queue.name for queue in self.queues] if burst else list(policies.QUEUES)
        self._rq_scheduler = RQScheduler(
            names, connection=self.connection, interval=SCHEDULER_TICK, serializer=self.serializer, name=self.name
        )
        self._scheduler_checked = 0.0
        if burst:
            self._rq_scheduler.acquire_locks()
            if self._rq_scheduler.acquired_locks:
                self._rq_scheduler.enqueue_scheduled_jobs()
            self._rq_scheduler.release_locks()

    def _tick_rq_scheduler(self) -> None:
        scheduler = self._rq_scheduler
        moment = time.monotonic()
        if moment - self._scheduler_checked >= HEARTBEAT_INTERVAL:  # refresh held locks, try for the others
            self._scheduler_checked = moment
            scheduler.heartbeat()
            if scheduler.acquired_locks != set(policies.QUEUES):
                scheduler.acquire_locks()
        if scheduler.acquired_locks:
            scheduler.enqueue_scheduled_jobs()

    # --- the slots --------------------------------------------------------------------------------

    def _run_slot(self, group: _QueueSlots, index: int, burst: bool) -> None:
        runner = group.runners[index]
        backoff = 1.0
        last_job_ended = 0.0
        try:
            while not self._stopping.is_set():
                if not group.leader.acquire(timeout=DEQUEUE_TIMEOUT):
                    smtp.close_idle()
                    continue
                try:
                    if self._stopping.is_set():
                        break
                    if group.queue.name in self._pauses.names():
                        job_id = None
                        if not burst:
                            self._stopping.wait(pauses.REFRESH)  # then look again
                    else:
                        if group.throttled and not self._take_turn():
                            break
                        job_id = self._dequeue(group.queue, burst)
                    backoff = 1.0
                except clients.UNREACHABLE:  # `jobs.enqueue.clients` logs the outage once, for every slot
                    time.sleep(backoff)
                    backoff = min(backoff * 2, REDIS_BACKOFF_MAX)
                    continue
                except Exception:  # Redis answered with an error: the slot must survive it
                    log.exception("%s slot %d: could not take the next job", group.queue.name, index)
                    time.sleep(backoff)
                    continue
                finally:
                    group.leader.release()
                if job_id is None:
                    if burst:
                        break
                    smtp.close_idle()
                    continue
                self._run_job(runner, job_id, group.queue, waited=time.monotonic() - last_job_ended)
                last_job_ended = time.monotonic()
        finally:
            smtp.close()
            connections.close_all()

    def _dequeue(self, queue, burst: bool) -> str | None:
        """The next job's id, moved into the queue's intermediate list as RQ's `dequeue_any` does
        (RQ's maintenance checks that list), without building a Queue per job. A job that arrives
        after the queue was paused goes back."""
        if burst:
            job_id = self.connection.lmove(queue.key, queue.intermediate_queue_key)
        else:
            job_id = self.connection.blmove(queue.key, queue.intermediate_queue_key, DEQUEUE_TIMEOUT)
        if job_id is not None and queue.name in self._pauses.names():
            pauses.give_back(self.connection, queue, job_id.decode())
            return None
        return job_id.decode() if job_id is not None else None

    def _take_turn(self) -> bool:
        """Wait, holding the queue's leader, until the SMTP limit lets one more job start
        (`jobs.mail.throttle`); before taking the job, so none is held while waiting. False: stopping."""
        try:
            throttle.wait_for_turn(self._stopping)
        except InterruptedError:
            return False
        return True

    def _run_job(self, runner: SlotRunner, job_id: str, queue, waited: float) -> None:
        if waited > DB_CHECK_AFTER:
            close_old_connections()  # one that aged is replaced, one that broke while we waited too
        started = time.monotonic()
        try:
            job = runner.execute_job(job_id, queue)
            took = (time.monotonic() - started) * 1000
            outcome = job.get_status(refresh=False).value if job else "not run: deleted, or unreadable and set aside"
            log.info("%s: %s %s in %.0f ms", queue.name, job_id, outcome, took)
        except BaseException:  # the job's own errors are RQ's; this is reading it or bookkeeping
            log.exception("%s: %s: could not run", queue.name, job_id)
        finally:
            close_old_connections()  # one that failed or aged is replaced
            for connection in connections.all(initialized_only=True):
                # Django checks a kept connection with a query at its first use after this; one
                # that just served a job without error needs that only after a wait (above).
                connection.health_check_done = True
            with self._jobs_lock:
                self._jobs_done += 1
                if self._jobs_done >= self._max_jobs:
                    self._recycle_now(f"{self._jobs_done} jobs done")


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
    names = sorted(key.decode().rsplit(":", 1)[-1] for key in connection.smembers(REDIS_WORKER_KEYS))
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
    lock_keys = [RQScheduler.get_locking_key(queue_name) for queue_name in policies.QUEUES]
    owners = {key: owner.decode() for key, owner in zip(lock_keys, connection.mget(lock_keys)) if owner}
    names = list(owners.values())
    as_workers = _alive(connection, names)
    as_schedulers = _alive(connection, names, prefix=SCHEDULER_KEY_TEMPLATE % "")
    for (key, owner), worker, scheduler in zip(owners.items(), as_workers, as_schedulers):
        if not (worker or scheduler):
            release_lock(connection, key, owner)


def _alive(connection, names: list[str], prefix: str = CeresWorker.redis_worker_namespace_prefix) -> list[bool]:
    """Whether each worker (or scheduler: `prefix`) still beats (its hash has its pid) and, on this
    host, its process still runs."""
    hostname = socket.gethostname()
    with connection.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(prefix + name, "pid", "hostname")
        rows = pipe.execute()
    return [
        pid is not None and not (host and host.decode() == hostname and not _pid_alive(int(pid)))
        for pid, host in rows
    ]


def _bury(connection, name: str) -> None:
    """Unregister a dead worker; the jobs it was running are abandoned now, not when their TTL ends."""
    worker_key = CeresWorker.redis_worker_namespace_prefix + name
    executions_key = Execution(id="", job_id="", connection=connection, worker_name=name).worker_executions_key
    running = [entry.decode() for entry in connection.smembers(executions_key)]
    with connection.pipeline(transaction=False) as pipe:
        for queue_name in policies.QUEUES:
            for entry in running:
                pipe.zadd(StartedJobRegistry.key_template.format(queue_name), {entry: 0}, xx=True)
            pipe.srem(WORKERS_BY_QUEUE_KEY % queue_name, worker_key)
        pipe.srem(REDIS_WORKER_KEYS, worker_key)
        pipe.delete(worker_key, executions_key)
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


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

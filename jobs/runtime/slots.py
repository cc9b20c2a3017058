"""The in-process worker: one process runs the whole concurrency of its queues as threads ("slots").

`python manage.py rqworker email slack` starts one `SlotWorker` when every queue it names is
`in_process` in its policy: 5 slots for email, 10 for slack, no fork per job, and each slot keeps
its database, SMTP and HTTP connections from one job to the next.

- **Dequeue.** Per queue, one idle slot at a time waits in Redis for the next job; the others wait
  on a local lock (`jobs.runtime.slot_loop`). A slot runs the job with RQ's own lifecycle
  (`jobs.runtime.slot_runner.SlotRunner`).
- **One heartbeat per process.** The main thread beats every `HEARTBEAT_INTERVAL` seconds for all
  slots in one pipeline: the worker hash (with `slots` and `busy` per queue, for the dashboard and
  health) and the started-registry entries of the jobs running now. A job therefore stays "started"
  however long it runs (its timeout still stops it), and entries of a dead process expire after
  `PROCESS_TTL` seconds.
- **Jobs of a dead process come back.** Every `REAP_INTERVAL` seconds the main thread runs the
  reaper (`jobs.runtime.reaper`).
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
import sys
import threading
import time
from collections.abc import Collection
from types import FrameType
from typing import Any

from django.conf import settings
from django.db import connections
from redis.client import Pipeline
from redis.exceptions import RedisError

from jobs.config import pauses, policies
from jobs.enqueue import clients
from jobs.rq_compat import (
    HEARTBEAT_FIELD,
    STATE_FIELD,
    RQScheduler,
    abandon_execution,
    now,
    unregister_worker,
    utcformat,
)
from jobs.runtime.reaper import reap_dead_workers
from jobs.runtime.slot_loop import DEQUEUE_TIMEOUT, QueueSlots, SlotLoop
from jobs.runtime.slot_runner import SlotRunner
from jobs.runtime.worker import CeresWorker, WorkerQueues

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = DEQUEUE_TIMEOUT  # seconds between two heartbeats of a process, as long as a slot waits in Redis
PROCESS_TTL = 20  # a process (and its running jobs) counts as dead this long after its last heartbeat
REAP_INTERVAL = 5  # seconds between two looks for dead workers by each process
SCHEDULER_TICK = 1  # seconds: the latest a due retry is enqueued
SECOND_SIGNAL_GRACE = 1  # a signal this soon after the first is the same stop (Ctrl-C reaches both honcho and us)


class SlotWorker(SlotLoop, CeresWorker):
    """The process: registered once in Redis, beats for every slot, reaps dead workers, schedules."""

    def __init__(self, queues: WorkerQueues, **kwargs: Any) -> None:  # `kwargs`: RQ's, each of its own type
        kwargs["worker_ttl"] = PROCESS_TTL
        super().__init__(queues, **kwargs)
        self.groups = [QueueSlots(queue, policies.QUEUES[queue.name].concurrency) for queue in self.queues]
        self._stopping = threading.Event()
        self._first_signal_at = 0.0
        self._jobs_done = 0
        self._jobs_lock = threading.Lock()
        self._recycle = False
        self._rq_scheduler: RQScheduler | None = None
        self._pauses = pauses.PauseCache(self.connection)

    # --- the process ----------------------------------------------------------------------------

    def work(  # RQ's signature; the options of its fork loop (formats, idle time, strategy) do not apply
        self,
        burst: bool = False,
        logging_level: str | None = None,
        date_format: str = "",
        log_format: str = "",
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        dequeue_strategy: object = None,
    ) -> bool:
        self.bootstrap(logging_level or "INFO")
        self._install_stop_handlers()
        self._max_jobs = max_jobs or settings.WORKER_MAX_JOBS
        if with_scheduler or not burst:
            self._start_rq_scheduler(burst)
        if not burst:  # first the sweep for what died before we started, as RQ's workers do
            self.run_maintenance_tasks()
        for group in self.groups:
            group.runners = [self._runner(group) for _ in range(group.size)]
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

    def _runner(self, group: QueueSlots) -> SlotRunner:
        return SlotRunner(
            [group.queue],
            may_take_next=lambda: self._may_take_next(group),
            name=self.name,
            connection=clients.own_connection(self.connection),
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

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """One pipeline for the process and every job it runs; re-registers if Redis lost the hash."""
        self.last_heartbeat = now()
        running = [(group, execution) for group in self.groups for r in group.runners for execution in r.running]
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.hset(self.key, mapping={HEARTBEAT_FIELD: utcformat(self.last_heartbeat), **self._slot_fields()})
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
            STATE_FIELD: "busy" if any(group.busy for group in self.groups) else "idle",
            "slots": ",".join(f"{group.queue.name}={group.size}" for group in self.groups),
            "busy": ",".join(f"{group.queue.name}={group.busy}" for group in self.groups),
        }

    def register_birth(self) -> None:
        self.birth_date = self.last_heartbeat = now()
        self.register()

    def registration(self) -> dict:
        return {**self.serialize(), **self._slot_fields()}

    registration_ttl = PROCESS_TTL

    def _install_stop_handlers(self) -> None:
        self._previous_handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
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
                            abandon_execution(pipe, group.queue.name, execution.composite_key)
                unregister_worker(pipe, self)
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
        assert scheduler is not None  # ticked only once started
        moment = time.monotonic()
        if moment - self._scheduler_checked >= HEARTBEAT_INTERVAL:  # refresh held locks, try for the others
            self._scheduler_checked = moment
            scheduler.heartbeat()
            if scheduler.acquired_locks != set(policies.QUEUES):
                scheduler.acquire_locks()
        if scheduler.acquired_locks:
            scheduler.enqueue_scheduled_jobs()


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker_class_for(queue_names: Collection[str]) -> type[CeresWorker]:
    """The in-process worker when every queue asks for it (policy `in_process`), else the forking one."""
    kinds = {policies.QUEUES[name].in_process for name in queue_names if name in policies.QUEUES}
    if len(kinds) > 1:
        in_process = sorted(name for name in queue_names if policies.QUEUES[name].in_process)
        forking = sorted(name for name in queue_names if not policies.QUEUES[name].in_process)
        raise ValueError(
            f"{', '.join(in_process)} run in-process and {', '.join(forking)} fork per job: start one worker for each"
        )
    return SlotWorker if kinds == {True} else CeresWorker

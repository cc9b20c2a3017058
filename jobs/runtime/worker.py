"""The worker class every `rqworker` / `rqworker-pool` process uses (settings `RQ["WORKER_CLASS"]`)."""

import logging
import os
import resource
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, ParamSpec, TypeVar

from django.conf import settings
from redis.client import Pipeline
from rq import Worker
from rq.exceptions import StopRequested
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer, Serializer

from jobs.config import pauses, policies
from jobs.enqueue import clients
from jobs.failures.alarms import check_crons, check_slos
from jobs.failures.attempts import record_attempt
from jobs.failures.final import archive, close_db_connections, sweep_failures
from jobs.observability import metrics, series
from jobs.rq_compat import REDIS_DOWN_LOG, Execution, RQScheduler, listen_to, register_worker
from jobs.rq_compat import now as rq_now
from jobs.runtime import hooks
from jobs.runtime.job import CeresJob
from jobs.runtime.reaper import reap_dead_workers
from jobs.runtime.unreadable import sweep_registries

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 60  # seconds between two sweeps for missed final failures, across all workers
REDIS_RETRY_INTERVAL = 1  # seconds between two tries while Redis does not answer
PAUSED_IDLE_QUEUE = "paused-idle"  # what a forking worker waits on while all its queues are paused

WorkerQueues = str | Queue | Sequence[str] | Sequence[Queue]  # what RQ's workers take as their queues
P = ParamSpec("P")
T = TypeVar("T")


class CeresWorker(Worker):
    """An RQ worker that always speaks JSON and never loses a final failure.

    - Registered tasks only (`jobs.runtime.job.CeresJob`): a job naming any other function fails unrun.
    - JSON: django-rq's `rqworker` passes `rq.serializers.DefaultSerializer` (pickle) unless told
      otherwise, whatever the queues say; a worker that unpickled job data would run whatever
      Redis hands it.
    - Graceful: SIGTERM to the whole process group lets the running job finish.
    - Final failures go to `jobs.failures.final` from `handle_job_failure` (which also sees work-horses
      that were killed) and from the periodic sweep in the maintenance loop.
    - A Redis blip is waited out: RQ's loop quits on most Redis errors (outside its wait for a
      job), so the calls it makes between jobs try again until Redis answers, and a running job's
      heartbeat skips a beat. `jobs.enqueue.clients` logs the outage once.
    """

    def __init__(
        self,
        queues: WorkerQueues,
        *,
        serializer: Serializer | str | None = None,
        job_class: type[Job] | str | None = None,
        maintenance_interval: int = SWEEP_INTERVAL,
        **kwargs: Any,  # the rest of RQ's keyword arguments, each of its own type
    ) -> None:
        super().__init__(
            queues, serializer=JSONSerializer, job_class=CeresJob, maintenance_interval=maintenance_interval, **kwargs
        )
        clients.hold(self.connection)
        self.killed_horse_job_id: str | None = None  # `handle_work_horse_killed` to `handle_job_failure`
        if not any(isinstance(f, _QuietWhileRedisIsAway) for f in self.log.filters):
            self.log.addFilter(_QuietWhileRedisIsAway())

    def _until_redis_answers(self, action: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`action(...)`, tried again every second while Redis does not answer. A stop signal still
        ends the wait: RQ's handler raises `StopRequested` here when no job is running."""
        while True:
            try:
                return action(*args, **kwargs)
            except clients.UNREACHABLE:
                time.sleep(REDIS_RETRY_INTERVAL)

    # RQ leaves the return types of these two out (they return None): the typed `done` keeps an Any from
    # leaving through ours, and mypy says so should RQ's ever return something.

    def check_for_suspension(self, burst: bool) -> None:
        done: None = self._until_redis_answers(super().check_for_suspension, burst)
        return done

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        done: None
        if pipeline is not None:
            done = super().set_state(state, pipeline)
            return done
        done = self._until_redis_answers(super().set_state, state)
        return done

    def setup_work_horse_signals(self) -> None:
        # Process managers (honcho, systemd's cgroup, PM2's tree kill) send SIGTERM to every process,
        # work-horses included. The worker already answers it with a warm shutdown, letting the job
        # finish; a cold one still kills the horse with SIGKILL.
        super().setup_work_horse_signals()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def work(self, *args: Any, **kwargs: Any) -> bool:  # RQ's arguments, passed on as they came
        """RQ's loop. With `with_scheduler`, RQ forks a scheduler process at the start when it gets a
        queue's scheduler lock. The in-process worker schedules every queue from its main thread, so
        a forking worker only prepares its scheduler: RQ's maintenance (every `maintenance_interval`)
        starts it if no one holds the lock. A burst run keeps RQ's (what is due, then stop)."""
        burst = args[0] if args else kwargs.get("burst", False)
        if kwargs.get("with_scheduler") and not burst:
            self.prepare_scheduler()
            kwargs["with_scheduler"] = False
        return super().work(*args, **kwargs)

    def prepare_scheduler(self) -> None:
        self.scheduler = RQScheduler(self.queues, connection=self.connection, serializer=self.serializer)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        """In the forked work-horse: cap the memory the job may add (`memory_limit_mb` of its queue's
        policy) before running it; past the cap an allocation raises MemoryError, and the job fails."""
        policy = policies.QUEUES.get(queue.name)
        if policy and policy.memory_limit_mb:
            limit = _address_space() + policy.memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        done: None = super().main_work_horse(job, queue)  # it never returns (`os._exit`); RQ leaves its type out
        return done

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's heartbeat; registers again when Redis lost the worker (restarted without persistence,
        flushed), instead of beating into a hash that no list of workers holds any more. The list is
        what tells: RQ's own writes during a job (its beats, `set_state`) recreate the hash alone."""
        if pipeline is not None:
            done: None = super().heartbeat(timeout, pipeline)  # RQ leaves its return type out
            return done
        self._until_redis_answers(self._heartbeat, timeout)

    def _heartbeat(self, timeout: int | None) -> None:
        with self.connection.pipeline() as pipe:
            pipe.sismember(self.redis_workers_keys, self.key)
            super().heartbeat(timeout, pipe)
            listed = pipe.execute()[0]
        if not listed:
            self._register_again()
        self._listen_to_unpaused()

    def maintain_heartbeats(self, job: Job, execution: Execution) -> None:
        """RQ's beat while a job runs (every `job_monitoring_interval`): back on the lists mid-job too.
        RQ's own rewrites the hash it finds gone, not the lists (`jobs.rq_compat.CHECKED`)."""
        try:
            super().maintain_heartbeats(job, execution)
            if not self.connection.sismember(self.redis_workers_keys, self.key):
                self._register_again()
        except clients.UNREACHABLE:
            pass  # the job runs on; the next beat tries again

    def _register_again(self) -> None:
        self.log.warning("Worker %s: registration lost in Redis, registering again", self.name)
        self.register()

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """RQ's, minus the paused queues (`jobs.config.pauses`): RQ calls `heartbeat` before each wait,
        which sets the queues to wait on. A job that arrives from a queue paused meanwhile goes back."""
        while True:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            if result is None or result[1].name not in self._until_redis_answers(pauses.paused, self.connection):
                return result
            job, queue = result
            pauses.give_back(self.connection, queue, job.id)
            if timeout is None:  # burst: what is left is paused
                return None

    def _listen_to_unpaused(self) -> None:
        paused = pauses.paused(self.connection)
        listening = [queue for queue in self.queues if queue.name not in paused]
        # With every queue paused, wait on a list no one fills, so RQ's loop (heartbeat,
        # maintenance, this check) keeps turning every `dequeue_timeout` seconds.
        listen_to(self, listening or [self.queue_class(PAUSED_IDLE_QUEUE, connection=self.connection)])

    def register(self) -> None:
        """Write the worker hash and list the worker, as RQ's `register_birth` does, without its
        refusal of a hash that exists (one written by the heartbeat that found it gone)."""
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping=self.registration())
            register_worker(pipe, self)
            pipe.expire(self.key, self.registration_ttl)
            pipe.execute()

    def registration(self) -> dict:
        return {**self.serialize(), "state": self.get_state()}  # RQ's serialize() leaves the state out

    @property
    def registration_ttl(self) -> int:
        return self.worker_ttl + 60  # RQ's

    @property
    def dequeue_timeout(self) -> int:
        # Wake up at least every 30 s even when idle, so maintenance (and the sweep) keeps its pace.
        return min(super().dequeue_timeout, 30)

    def handle_work_horse_killed(
        self, job: Job, retpid: int | None, ret_val: int | None, rusage: resource.struct_rusage | None
    ) -> None:  # None each when RQ killed a horse that did not answer (`monitor_work_horse`)
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        self.killed_horse_job_id = job.id  # RQ calls handle_job_failure for it next

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: StartedJobRegistry | None = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        if self.killed_horse_job_id == job.id:  # no failure callback ran for this attempt
            self.killed_horse_job_id = None
            record_attempt(job, exc_string)
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        status = job.get_status(refresh=False)
        if status == JobStatus.FAILED:
            self._safely(metrics.job_failed, self.connection, job, queue.name, job.ended_at or rq_now())
            self._safely(archive, job, exc_string)
        elif status in (JobStatus.SCHEDULED, JobStatus.QUEUED):  # another attempt comes; a stopped job does not
            self._safely(metrics.job_retried, self.connection, job, queue.name, job.ended_at or rq_now())

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution | None = None
    ) -> None:
        assert execution is not None  # RQ passes it always (`_finalize_success`)
        super().handle_job_success(job, queue, started_job_registry, execution)
        self._safely(self._count_finished, job, queue)

    def _count_finished(self, job: Job, queue: Queue) -> None:
        with self.connection.pipeline(transaction=False) as pipe:
            metrics.job_finished(pipe, job, queue.name, job.ended_at or rq_now())
            pipe.execute()

    def run_maintenance_tasks(self) -> None:
        self._safely(sweep_registries, self.connection, [queue.name for queue in self.queues])  # before RQ meets them
        self._safely(super().run_maintenance_tasks)
        # At start too: a worker started again by its supervisor (or `jobs.runtime.family`) hands back the
        # jobs of the one it replaces and takes its registration off the list at once.
        self._safely(reap_dead_workers, self.connection)
        if self._safely(self._sweep_due):
            self._safely(series.keep, self.connection, policies.QUEUES, rq_now())
            self._safely(sweep_failures)
            self._safely(check_crons)
            self._safely(check_slos)
            for hook in hooks.EVERY_MINUTE:
                self._safely(hook)

    def _sweep_due(self) -> bool:
        return bool(self.connection.set(f"{settings.RQ_KEY_PREFIX}:sweep-due", 1, nx=True, ex=SWEEP_INTERVAL - 5))

    def _safely(self, action: Callable[..., T], *args: object) -> T | Literal[False]:
        """Bookkeeping (alerts, archive, metrics) must never take a worker down; the sweep catches up.
        Returns what `action` returned, False if it raised."""
        try:
            return action(*args)
        except StopRequested:  # RQ's SIGTERM handler raised it here: the stop must not be swallowed
            raise
        except clients.UNREACHABLE:  # `jobs.enqueue.clients` said so once; the next round catches up
            return False
        except Exception:
            log.exception("%s failed", action.__name__)
            return False
        finally:
            if self._close_connections_after_bookkeeping():
                close_db_connections()

    def _close_connections_after_bookkeeping(self) -> bool:
        # The forking worker must not hand a database connection down to its next work-horse.
        return not self.is_horse


class _QuietWhileRedisIsAway(logging.Filter):
    """RQ's worker logs "could not connect to Redis instance" at every try of its wait for a job and of
    its pubsub thread (every 2 s); `jobs.enqueue.clients` has said it once. Matched on RQ's words
    (`jobs.rq_compat.REDIS_DOWN_LOG`): should they change, the only cost is the old noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return REDIS_DOWN_LOG not in str(record.msg)


def _address_space() -> int:
    """This process's virtual memory size in bytes: a limit on the address space counts what the
    work-horse inherited (Django, the libraries), so the job's share comes on top of it."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")

"""Everything the in-process worker (`jobs.runtime.slots`) changes inside RQ's worker, in one place.

It overrides public methods of RQ's worker but relies on their call order in `perform_job`: read it
again, with `jobs.rq_compat`, when the system check `jobs.E010` says RQ changed. A slot runs RQ's
own job lifecycle (`BaseWorker.perform_job`: status, registries, results, retries, failure
callbacks), without what belongs to a process:

- heartbeats and the worker state: the process beats once per interval for all of its slots, so
  `heartbeat`, `set_state` and `procline` do nothing here, and a job's execution lives as long as
  the process keeps beating (`get_heartbeat_ttl`), however long the job runs;
- the counters RQ keeps in the worker hash (`jobs.observability.metrics` counts finished and failed jobs);
- a job starts in one round trip, which also reads it: RQ reads the job (`Job.fetch`), writes its
  execution (`prepare_execution`) and marks it started (`prepare_job_execution`) in three, with a
  job heartbeat that the start overwrites anyway. Under load there is not even that one: a job's
  end takes its queue's next job and starts it in the same script (as BullMQ's `moveToFinished`),
  the start's commands naming it by a placeholder (`BatchPipeline.for_returned_id`). A job started
  so runs even if a pause or a stop came meanwhile, as any job started before them;
- a job's success is one pipeline, metrics included (and the counts its task made:
  `metrics.held_counts`): RQ re-saves the whole job hash, watches and reads the job's dependents
  and counts metrics in more round trips. No job here has dependents
  (producers enqueue with `unique=True`, which refuses dependencies); a job that repeats takes
  RQ's own path. A job deleted while it ran (staff may) stays deleted: what its end wrote back is
  taken away again, so no hash without a job holds its id;
- RQ's three INFO lines per job are left out (`jobs.runtime.slots` logs one), warnings and errors stay;
- the job's end is not written to Redis on its own (RQ's `handle_execution_ended` heartbeat): the
  success or failure pipeline that follows writes it anyway;
- the job's timeout is kept by one watchdog thread per process (`WatchdogDeathPenalty`), not by
  SIGALRM, which works only in a process's main thread, nor by RQ's `TimerDeathPenalty`, which
  starts a thread per job. Like any thread-based timeout it raises in the job's Python code: a
  call blocked in C (a socket read) is bounded by its own timeout instead. It is disarmed the
  moment the task (or a callback) returns (`SlotJob`), and a timeout fired just then is withdrawn:
  it stops the job's own code or comes too late, and never lands in the bookkeeping after it
  (RQ's or redis-py's, where it could leave a pooled connection mid-command).
"""

import ctypes
import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from redis.client import Pipeline
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry

from jobs import rq_compat
from jobs.observability import metrics, reads
from jobs.rq_compat import (
    BaseDeathPenalty,
    Execution,
    FailureCallbackType,
    JobTimeoutException,
    StoppedCallbackType,
    SuccessCallbackType,
    now,
)
from jobs.runtime import unreadable
from jobs.runtime.job import CeresJob
from jobs.runtime.worker import CeresWorker, WorkerQueues

WATCHDOG_TICK = 0.2  # seconds: how late past its timeout a job may be stopped
NEXT_JOB = "CeresNextJob0placeholder"  # the next job's id in the commands a job's end queues to start it

P = ParamSpec("P")
T = TypeVar("T")


class _Watchdog:
    """One thread per process that raises the timeout exception in slots whose job ran too long."""

    def __init__(self) -> None:
        self._deadlines: dict[int, tuple[float, type[BaseException]]] = {}  # thread id -> deadline
        self._fired: set[int] = set()  # threads sent their timeout, which they may not have raised yet
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, exception: type[BaseException]) -> None:
        with self._lock:
            self._deadlines[threading.get_ident()] = (time.monotonic() + seconds, exception)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="job-timeouts", daemon=True)
                self._thread.start()

    def disarm(self) -> None:
        """No timeout for this thread any more, including one sent that it has not raised yet (a
        thread raises an async exception only at its next check, maybe after the job returned)."""
        ident = threading.get_ident()
        with self._lock:  # the watchdog sends under this lock: after it, nothing more can come
            self._deadlines.pop(ident, None)
            if ident in self._fired:
                self._fired.discard(ident)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)  # NULL: withdraw

    def _watch(self) -> None:
        while True:
            time.sleep(WATCHDOG_TICK)
            moment = time.monotonic()
            with self._lock:
                due = [(ident, exc) for ident, (deadline, exc) in self._deadlines.items() if deadline <= moment]
                for ident, exception in due:
                    del self._deadlines[ident]
                    self._fired.add(ident)
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exception))


_watchdog = _Watchdog()
_quiet_log = logging.getLogger(f"{rq_compat.RQ_WORKER_LOGGER}.slots")
_quiet_log.setLevel(logging.WARNING)
_timeout_classes: dict[float, type[JobTimeoutException]] = {}


class WatchdogDeathPenalty(BaseDeathPenalty):
    def __init__(
        self,
        timeout: float,  # a job's (RQ types it float), its queue's default, or a callback's
        exception: type[BaseException] = JobTimeoutException,
        **kwargs: object,
    ) -> None:
        super().__init__(timeout, exception, **kwargs)
        self.seconds = timeout

    def setup_death_penalty(self) -> None:
        if self.seconds > 0:
            _watchdog.arm(self.seconds, _timeout_class(self.seconds))

    def cancel_death_penalty(self) -> None:
        _watchdog.disarm()


def _run_job_code(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call the job's own code, its deadline disarmed the moment it returns. A timeout raised at
    the call as `func` returns stops the job (its result is not in yet); one raised after it (at
    the disarm's first line, before its lock) came too late: it is dropped, then the disarm done
    again (the watchdog sends one timeout per deadline)."""
    try:
        return func(*args, **kwargs)
    finally:
        try:
            _watchdog.disarm()
        except JobTimeoutException:
            _watchdog.disarm()


class SlotJob(CeresJob):
    """A job as a slot runs it: only the task's call, and its callbacks', run under the deadline
    (`_run_job_code`); RQ's `perform` around them (its context, the result) does not. A coroutine
    would run without its deadline (RQ runs it after the call): no task of ours is one."""

    returned: object = None  # what the task returned, kept for the success pipeline (RQ keeps it privately)

    @property
    def func(self) -> Callable[..., object]:
        return functools.partial(_run_job_code, super().func)

    def perform(self) -> object:
        self.returned = super().perform()
        return self.returned

    @property
    def success_callback(self) -> SuccessCallbackType | None:
        return _deadline_bound(super().success_callback)

    @property
    def failure_callback(self) -> FailureCallbackType | None:
        return _deadline_bound(super().failure_callback)

    @property
    def stopped_callback(self) -> StoppedCallbackType | None:
        return _deadline_bound(super().stopped_callback)


def _deadline_bound(callback: Callable[..., T] | None) -> Callable[..., T] | None:
    return functools.partial(_run_job_code, callback) if callback else None


def _timeout_class(seconds: float) -> type[JobTimeoutException]:
    """An async exception is raised from its class alone: one subclass per timeout carries the message."""
    if seconds not in _timeout_classes:
        message = rq_compat.TIMEOUT_MESSAGE.format(seconds=seconds)
        init = lambda self, *args: Exception.__init__(self, message)  # noqa: E731
        _timeout_classes[seconds] = type("JobTimeoutException", (JobTimeoutException,), {"__init__": init})
    return _timeout_classes[seconds]


class SlotRunner(CeresWorker):
    """Runs one slot's jobs in the calling thread, under the name (and worker key) of its process."""

    death_penalty_class = WatchdogDeathPenalty

    def __init__(
        self,
        queues: WorkerQueues,
        *,
        execution_ttl: int,
        may_take_next: Callable[[], bool] = lambda: False,
        **kwargs: Any,  # `CeresWorker`'s, each of its own type
    ) -> None:
        """`may_take_next`: whether a job's end may take its queue's next job (`take_next_job_id`)."""
        super().__init__(queues, prepare_for_work=False, **kwargs)
        self.may_take_next = may_take_next
        self.job_class = SlotJob
        self.execution_ttl = execution_ttl
        self.log = _quiet_log
        self.next_job_id: str | None = None
        self._next_started: tuple[Job, Execution] | None = None

    def take_next_job_id(self) -> str | None:
        """The id of the job the last job's end took from its queue, if any: started already
        (`started_next`), or only moved to the queue's intermediate list."""
        job_id, self.next_job_id = self.next_job_id, None
        return job_id

    @property
    def started_next(self) -> bool:
        """Whether the last job's end also started the job it took (see `handle_job_success`)."""
        return self._next_started is not None

    def run_job_id(self, job_id: str, queue: Queue) -> Job | None:
        """Run the job `job_id`: started by the last job's end, or just moved from `queue` to its
        intermediate list (then started here). Returns the job, or None if it was deleted meanwhile."""
        job: Job | None
        execution: Execution | None
        started, self._next_started = self._next_started, None
        if started is not None and started[0].id == job_id:
            job, execution = started
        else:
            job, execution = self.start(job_id, queue)
        if job is not None and execution is not None:  # both or neither
            with metrics.held_counts(self.connection):  # written by the job's end (`handle_job_success`)
                self.perform_job(job, queue, execution)
        return job

    def start(self, job_id: str, queue: Queue) -> tuple[Job | None, Execution | None]:
        """Mark the job started and read it, in one round trip: RQ reads it, then starts it. None if
        it was deleted meanwhile, or cannot be read (then it is set aside: `jobs.runtime.unreadable`)."""
        if not reads.valid_id(job_id):
            unreadable.set_aside(self.connection, job_id, "its id has characters RQ does not allow")
            return None, None
        with rq_compat.batch(self.connection) as pipe:
            job, execution = self._queue_start(pipe, job_id, queue)
            raw = pipe.execute()[-1]
        return self._started(job, execution, queue, raw)

    def _queue_start(self, pipe: Pipeline, job_id: str, queue: Queue) -> tuple[Job, Execution]:
        """Queue on `pipe` the start of the job `job_id`, and its read last."""
        job = self.job_class(job_id, connection=self.connection, serializer=self.serializer)
        job.origin = queue.name  # the started registry's, until the job's own is read
        execution = Execution.create(job, self.execution_ttl, pipeline=pipe, worker_name=self.name)
        # What rq's prepare_job_execution does, less the heartbeats...
        job.prepare_for_execution(self.name, pipeline=pipe)
        pipe.persist(job.key)
        pipe.lrem(queue.intermediate_queue_key, 1, job_id)
        # ...and the job as it is now, started.
        pipe.hgetall(job.key)
        return job, execution

    def _started(
        self, job: Job, execution: Execution, queue: Queue, raw: dict[bytes, bytes]
    ) -> tuple[Job | None, Execution | None]:
        """The job `_queue_start` started, read from `raw`; None if it was deleted while queued or
        cannot be read (then it is set aside)."""
        if not rq_compat.hash_holds_job(raw):  # deleted while queued: what we just wrote is all there is
            self._undo_start(job, execution, delete_stub=True)
            return None, None
        try:
            job.restore(raw)
        except Exception as error:
            unreadable.set_aside(self.connection, job.id, f"{type(error).__name__}: {error}", queue_name=queue.name)
            self._undo_start(job, execution, delete_stub=False)
            return None, None
        self.executions[execution.id] = execution
        return job, execution

    def _undo_start(self, job: Job, execution: Execution, *, delete_stub: bool) -> None:
        with self.connection.pipeline() as pipe:
            execution.delete(job, pipeline=pipe)
            if delete_stub:
                pipe.delete(job.key)
            pipe.execute()

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        pass  # done by `start`

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution | None = None
    ) -> None:
        if job.repeats_left:
            return super().handle_job_success(job, queue, started_job_registry, execution)
        # What a slot's `perform_job` hands over, for mypy: the job `start` built (`job_class`), its
        # execution (`run_job_id` passes it) and its end (`handle_execution_ended` set it).
        assert isinstance(job, SlotJob)
        assert execution is not None
        assert job.ended_at is not None
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        with rq_compat.batch(self.connection) as pipe:
            rq_compat.write_finished(pipe, job, job.ended_at)
            if result_ttl != 0:
                rq_compat.save_success_result(pipe, job, job.returned, ttl=result_ttl, worker_name=self.name,
                                              execution=execution)  # fmt: skip
                job.finished_job_registry.add(job, result_ttl, pipe)
            if result_ttl == 0:
                job.delete(pipeline=pipe, remove_from_queue=False)
            elif result_ttl > 0:
                pipe.expire(job.key, result_ttl)
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            metrics.job_finished(pipe, job, queue.name, job.ended_at)
            metrics.write_held(pipe)
            take_next = self.may_take_next()
            if take_next:  # the next job in the same round trip, moved as RQ's dequeue does, and started
                took = len(pipe.command_stack)
                pipe.lmove(queue.key, queue.intermediate_queue_key)
                pipe.for_returned_id(NEXT_JOB)
                next_job, next_execution = self._queue_start(pipe, NEXT_JOB, queue)
            replies = pipe.execute()
        created_fields = replies[0]
        if take_next and replies[took] is not None:
            self.next_job_id = replies[took].decode()
            if replies[-1] is not None:  # started too (not if its id has characters RQ does not allow)
                next_job.id = self.next_job_id
                next_execution.job_id = self.next_job_id
                started_job, started_execution = self._started(next_job, next_execution, queue, replies[-1])
                if started_job is not None and started_execution is not None:
                    self._next_started = (started_job, started_execution)
                else:
                    self.next_job_id = None  # deleted while queued, or set aside
        if created_fields == 2:  # `status` was not there: the job was deleted while it ran
            rq_compat.forget_deleted_job(self.connection, job)
        rq_compat.release_rate_slot(job)

    @property
    def running(self) -> list[Execution]:
        return list(self.executions.values())

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.execution_ttl

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        pass

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        pass

    def procline(self, message: str) -> None:
        pass

    def increment_failed_job_count(self, pipeline: Pipeline | None = None) -> None:
        pass

    def increment_successful_job_count(self, pipeline: Pipeline | None = None) -> None:
        pass

    def increment_total_working_time(self, job_execution_time: timedelta, pipeline: Pipeline) -> None:
        pass

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        job.ended_at = now()

    def _close_connections_after_bookkeeping(self) -> bool:
        return False  # a slot keeps its database connection; the slot loop checks it around each job

"""What each slot thread of the in-process worker (`jobs.runtime.slots`) does: wait for a job of its
queue, run it with RQ's lifecycle (`SlotRunner`), keep its connections between jobs.

Per queue, one idle slot at a time waits in Redis for the next job (RQ's BLMOVE into the queue's
intermediate list); the other idle slots wait on a local lock, so they cost no Redis traffic.
`SlotLoop` is a part of `SlotWorker` (a base class of it): it uses the worker's stop event, pauses
and job count.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable

from django.db import close_old_connections, connections
from redis import Redis
from rq.queue import Queue

from jobs.config import pauses, policies
from jobs.enqueue import clients
from jobs.runtime import hooks
from jobs.runtime.slot_runner import SlotRunner

log = logging.getLogger(__name__)

DEQUEUE_TIMEOUT = 5  # seconds: an idle queue costs one blocking BLMOVE per interval (the heartbeat's too)
# seconds: a paced queue's next turn sooner than this is slept for here, then taken: Redis ends a blocking
# command's wait only at its clock's tick (10 a second by default), which would cap the pace.
SHORT_TURN = 0.25
DB_CHECK_AFTER = 1  # seconds without a job before a slot's database connection is checked before use
REDIS_BACKOFF_MAX = 5  # seconds: the longest a slot waits between two tries while Redis is away


class QueueSlots:
    """The slots of one queue: `leader` is held by the one idle slot that waits in Redis."""

    def __init__(self, queue: Queue, size: int) -> None:
        self.queue = queue
        self.size = size
        self.throttled = policies.QUEUES[queue.name].smtp_throttled
        self.paced = policies.QUEUES[queue.name].paced
        self.leader = threading.Lock()
        self.runners: list[SlotRunner] = []

    @property
    def busy(self) -> int:
        return sum(bool(runner.executions) for runner in self.runners)


class SlotLoop:
    """The slot threads' part of `SlotWorker`, which sets these:"""

    connection: Redis
    _stopping: threading.Event
    _pauses: pauses.PauseCache
    _jobs_lock: threading.Lock
    _jobs_done: int
    _max_jobs: int
    _recycle_now: Callable[[str], None]

    def _run_slot(self, group: QueueSlots, index: int, burst: bool) -> None:
        runner = group.runners[index]
        backoff = 1.0
        last_job_ended = 0.0
        try:
            while not self._stopping.is_set():
                if not group.leader.acquire(timeout=DEQUEUE_TIMEOUT):
                    _run(hooks.SLOT_IDLE)
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
                        timeout = self._pace(group.queue.name) if group.paced else DEQUEUE_TIMEOUT
                        job_id = self._dequeue(group.queue, burst, timeout)
                        if job_id is not None and group.paced and not self._had_turn(job_id, group.queue):
                            continue  # set aside to wait for its turn
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
                    _run(hooks.SLOT_IDLE)
                    continue
                clients.drop_if_closed(runner.connection)  # Redis may have restarted while the slot waited
                self._run_job(runner, job_id, group.queue, waited=time.monotonic() - last_job_ended)
                while (job_id := self._handed_over(runner, group.queue)) is not None:
                    self._run_job(runner, job_id, group.queue, waited=0.0)
                last_job_ended = time.monotonic()
        finally:
            _run(hooks.SLOT_END)
            connections.close_all()
            runner.connection.close()

    def _dequeue(self, queue: Queue, burst: bool, timeout: float = DEQUEUE_TIMEOUT) -> str | None:
        """The next job's id, moved into the queue's intermediate list as RQ's `dequeue_any` does
        (RQ's maintenance checks that list), without building a Queue per job. A job that arrives
        after the queue was paused goes back."""
        if burst:
            raw = self.connection.lmove(queue.key, queue.intermediate_queue_key)
        else:
            # Redis takes a decimal timeout (since 6.0); redis-py's annotation says int.
            raw = self.connection.blmove(queue.key, queue.intermediate_queue_key, timeout)  # type: ignore[arg-type]
        if raw is None:
            return None
        job_id = raw.decode() if isinstance(raw, bytes) else raw
        if queue.name in self._pauses.names():
            pauses.give_back(self.connection, queue, job_id)
            return None
        return job_id

    def _may_take_next(self, group: QueueSlots) -> bool:
        """Whether a job's end may take and start the next job of its queue in the same round trip (not
        while stopping or paused, nor where each job waits for its turn under the SMTP limit or is checked
        for having had it, nor at the job that ends the process's share before it starts again:
        `WORKER_MAX_JOBS`)."""
        last = self._jobs_done + 1 >= self._max_jobs
        waits = group.throttled or group.paced
        return not (last or waits or self._stopping.is_set() or group.queue.name in self._pauses.names())

    def _handed_over(self, runner: SlotRunner, queue: Queue) -> str | None:
        """The job the last job's end took. One it started runs, as any job started before a pause or
        a stop; one it only moved goes back to the queue's head if the worker is stopping or the queue
        was paused meanwhile."""
        started, job_id = runner.started_next, runner.take_next_job_id()
        if job_id is not None and not started and (self._stopping.is_set() or queue.name in self._pauses.names()):
            pauses.give_back(self.connection, queue, job_id)
            return None
        return job_id

    def _take_turn(self) -> bool:
        """Wait, holding the queue's leader, until the SMTP limit lets one more job start
        (`hooks.BEFORE_THROTTLED_JOB`: the SMTP limit); before taking the job, so none is held while waiting. False: stopping."""
        try:
            for wait in hooks.BEFORE_THROTTLED_JOB:
                wait(self._stopping)
        except InterruptedError:
            return False
        return True

    def _pace(self, queue_name: str) -> float:
        """Move the jobs of a paced queue whose turn has come into it (`hooks.PACE`); returns how long
        the dequeue may wait for one: until the next turn, at most `DEQUEUE_TIMEOUT`."""
        while True:
            waits = [wait for pace in hooks.PACE if (wait := pace(queue_name)) is not None]
            wait = min(waits, default=DEQUEUE_TIMEOUT)
            if wait == 0:  # some moved: the dequeue takes one at once, unless a job's end took it first
                return SHORT_TURN
            if wait >= SHORT_TURN:
                return min(wait, DEQUEUE_TIMEOUT)
            if self._stopping.wait(wait):
                return DEQUEUE_TIMEOUT

    def _had_turn(self, job_id: str, queue: Queue) -> bool:
        """Whether a job taken from a paced queue had its turn (`hooks.HAD_TURN`); one that did not was set
        aside to wait for it."""
        return all(had_turn(job_id, queue) for had_turn in hooks.HAD_TURN)

    def _run_job(self, runner: SlotRunner, job_id: str, queue: Queue, waited: float) -> None:
        if waited > DB_CHECK_AFTER:
            close_old_connections()  # one that aged is replaced, one that broke while we waited too
        started = time.monotonic()
        try:
            job = runner.run_job_id(job_id, queue)
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


def _run(functions: Iterable[Callable[[], object]]) -> None:
    for function in functions:
        function()

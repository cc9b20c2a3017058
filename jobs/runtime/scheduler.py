"""rq-scheduler, made to fit (settings `RQ["SCHEDULER_CLASS"]`, run by `manage.py rqscheduler`).

- Keys: rq-scheduler hard-codes `rq:scheduler*`; these take rq's `RQ_KEY_PREFIX`, so every key
  the scheduler writes starts with `<REDIS_PREFIX>queue:` like the rest.
- JSON: its jobs are created and read with the JSON serializer, not pickle.
- Crons: each spec of `jobs.config.crons` has one entry, `cron-<name>`. When the entry comes due, the
  scheduler does not run the entry itself: it enqueues a run for the current slot under the id
  `cron-<name>-<slot>` (atomic `unique=True`), then computes the next slot in the spec's zone.
  Two schedulers firing together make one run; a scheduler back from an outage makes one run, for
  the latest slot, not one per missed slot.
- Blips: rq-scheduler's loop ends the process at the first Redis error. This one's tick is tried
  again at the next interval while Redis is away (`jobs.enqueue.clients` logs the outage once), and a stop
  signal ends it whether Redis answers or not.
"""

import logging
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from types import FrameType
from typing import NoReturn

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer, Serializer

from jobs.config import crons, task_names
from jobs.enqueue import clients
from jobs.enqueue.producers import enqueue_cron_run
from jobs.rq_compat import KEY_PREFIX, SCHEDULER_KEYS, DjangoScheduler, forget_scheduler_lock, to_unix

ENTRY_PREFIX = "cron-"
ScheduledJobs = Iterator[Job] | Iterator[tuple[Job, datetime]]  # rq-scheduler's `get_jobs`: (job, time) `with_times`

log = logging.getLogger(__name__)


class JSONJob(Job):
    def __init__(
        self, id: str | None = None, connection: Redis | None = None, serializer: Serializer | str | None = None
    ) -> None:
        super().__init__(id, connection=connection, serializer=serializer or JSONSerializer)


class CeresScheduler(DjangoScheduler):
    redis_scheduler_namespace_prefix = SCHEDULER_KEYS["redis_scheduler_namespace_prefix"]
    scheduler_key = SCHEDULER_KEYS["scheduler_key"]
    scheduler_lock_key = SCHEDULER_KEYS["scheduler_lock_key"]
    scheduled_jobs_key = SCHEDULER_KEYS["scheduled_jobs_key"]

    alive_key = f"{KEY_PREFIX}:scheduler-alive"  # one key to read, instead of scanning for instances

    # rq-scheduler is untyped: what it sets in `__init__`, typed for mypy (annotations only, no values).
    connection: Redis
    job_class: type[Job]
    name: str

    def __init__(self, *args: object, interval: int = 60, **kwargs: object) -> None:  # rq-scheduler's default interval
        kwargs["job_class"] = JSONJob
        super().__init__(*args, interval=interval, **kwargs)
        self.interval = interval  # seconds between two ticks
        clients.hold(self.connection)

    def run(self, burst: bool = False) -> None:
        """rq-scheduler's loop (register, then every interval: beat, take the lock, enqueue what is
        due), riding out Redis outages."""
        self._stop_on(signal.SIGINT, signal.SIGTERM)
        try:
            self._until_redis_answers(self.register_birth)
            while True:
                started = time.monotonic()
                try:
                    self._tick()
                except clients.UNREACHABLE:
                    forget_scheduler_lock(self)  # it expires on its own: a scheduler elsewhere may take over
                if burst:
                    return
                time.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            try:
                self.remove_lock()
                self.register_death()
            except clients.UNREACHABLE:
                pass  # the lock and the registration expire on their own

    def _tick(self) -> None:
        self.heartbeat()
        if self.acquire_lock():
            try:
                self.enqueue_jobs()
                self.heartbeat()
            finally:
                self.remove_lock()

    def _until_redis_answers(self, action: Callable[[], None]) -> None:
        while True:
            try:
                return action()
            except clients.UNREACHABLE:
                time.sleep(1)

    def _stop_on(self, *signals: signal.Signals) -> None:
        def stop(signum: int, frame: FrameType | None) -> NoReturn:
            log.info("scheduler stopping (signal %d)", signum)
            raise SystemExit(0)

        for signum in signals:
            signal.signal(signum, stop)

    def heartbeat(self) -> None:
        super().heartbeat()
        was = self.connection.set(self.alive_key, self.name, ex=int(self.interval) + 10, get=True)
        if was is None:  # just started, or Redis lost every key (restarted without persistence): crons too
            done = self.sync_crons()
            if done["added"] or done["changed"] or done["removed"]:
                self.log.warning("crons registered again: %s", done)

    def register_death(self) -> None:
        super().register_death()
        self.connection.delete(self.alive_key)

    def is_alive(self) -> bool:
        """Whether some rqscheduler process has beaten its heart within its interval."""
        return bool(self.connection.exists(self.alive_key))

    # rq-scheduler is untyped: what its methods return goes through a typed `done`, so no Any leaves through ours.

    def get_jobs_to_queue(self, with_times: bool = False) -> ScheduledJobs:
        done: ScheduledJobs = self.get_jobs(to_unix(crons.now()), with_times=with_times)
        return done

    def enqueue_job(self, job: Job) -> None:
        name = job.meta.get("cron_spec")
        if name is None:
            done: None = super().enqueue_job(job)
            return done
        spec = crons.SPECS.get(name)
        if spec is None:  # removed from the list since registration
            self.cancel(job)
            return None
        at = crons.now()
        enqueue_cron_run(name=spec.name, slot=spec.last_slot(at), queue_name=spec.queue)
        self.connection.zadd(self.scheduled_jobs_key, {job.id: to_unix(spec.next_slot(at))})
        return None

    def cron_entry(self, name: str) -> Job | None:
        try:
            return self.job_class.fetch(ENTRY_PREFIX + name, connection=self.connection)
        except NoSuchJobError:
            return None

    def sync_crons(self) -> dict[str, list[str]]:
        """Make the scheduler hold exactly one entry per spec; say what was added, changed, removed."""
        done: dict[str, list[str]] = {"added": [], "changed": [], "unchanged": [], "removed": []}
        at = crons.now()
        for spec in crons.SPECS.values():
            entry, wanted = self.cron_entry(spec.name), {"schedule": spec.schedule, "zone": spec.zone}
            scheduled = entry is not None and entry.id in self
            if entry is None:  # saved, and scheduled for its next slot
                meta = {"cron_spec": spec.name, "registered_at": at.isoformat(), **wanted}
                self.schedule(spec.next_slot(at), task_names.RUN_CRON, kwargs={"name": spec.name},
                              id=ENTRY_PREFIX + spec.name, queue_name=spec.queue, meta=meta)  # fmt: skip
                done["added"].append(spec.name)
                continue
            elif {key: entry.meta.get(key) for key in wanted} != wanted or entry.origin != spec.queue or not scheduled:
                entry.meta.update(wanted)
                entry.origin = spec.queue
                entry.save()
                done["changed"].append(spec.name)
            else:
                done["unchanged"].append(spec.name)
                continue
            self.connection.zadd(self.scheduled_jobs_key, {entry.id: to_unix(spec.next_slot(at))})
        for job_id in self.connection.zrange(self.scheduled_jobs_key, 0, -1):
            assert isinstance(job_id, bytes)  # for mypy: rq's connections do not decode responses
            job_id = job_id.decode()
            if job_id.startswith(ENTRY_PREFIX) and job_id[len(ENTRY_PREFIX) :] not in crons.SPECS:
                self.cancel(job_id)
                self.connection.delete(Job.key_for(job_id))
                done["removed"].append(job_id[len(ENTRY_PREFIX) :])
        return done

    def next_run(self, name: str) -> datetime | None:
        score = self.connection.zscore(self.scheduled_jobs_key, ENTRY_PREFIX + name)
        return None if score is None else datetime.fromtimestamp(score, crons.now().tzinfo)

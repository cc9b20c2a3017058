"""The one door to RQ's insides: every name of rq, rq-scheduler and django-rq that is not their
public API, and every Redis key layout, hash field and message string of theirs we rely on.

Checked against the versions in `CHECKED`; the system check `jobs.E010` (`jobs.config.checks`)
fails on any other installed version until this module has been read again against it. Nothing
else in the project imports rq's internal modules (`rq.scripts`, `rq.worker_registration`,
`rq.executions`, `rq.results`, `rq.timeouts`, `rq.rate_limit`, `rq.scheduler`, `rq.utils`,
`rq.defaults`, `rq_scheduler.utils`, `django_rq.queues`) or touches an underscore name of theirs.

What it holds:
- re-exports of internal classes and helpers the runtime builds on (`Execution`, `Result`,
  `RQScheduler`, `BaseDeathPenalty`, `JobTimeoutException`, `DjangoScheduler`, rq's timestamp
  format `now`/`utcformat`/`utcparse`, `import_attribute`, rq-scheduler's `to_unix`), and the
  types of a job's callbacks that the runtime's overrides declare (`SuccessCallbackType`, ...);
- key layouts and hash fields: worker lists and hashes, executions, started registry, scheduler
  locks and hashes, job hash (`data` and its layout, `jobs_kwargs`; `status`, `ended_at`), the
  scheduler's keys under rq's prefix, a rate limit's hash and sets (`limit_key`, `rate_limited_key`),
  and Lua functions that hold a job back and move it to its queue as rq does (`JOB_LAYOUT_LUA`);
- writes rq does only on its own round trip, here queued on a caller's pipeline (`push_unique`,
  `push_unique_rate_limited`, `register_worker`, `unlist_worker`, `save_success_result`,
  `forget_deleted_job`), or in fewer round trips than rq (`release_rate_slot`); a job pushed aside
  in a rate limit's layout without the limit (`push_unique_aside`: `jobs.mail.throttle` moves it);
- underscore attributes read or set (`callback_name`, `listen_to`, `forget_scheduler_lock`);
- rq's message strings that stored failures are parsed with (`WORK_HORSE_KILLED`, `ABANDONED`),
  that a log filter matches (`REDIS_DOWN_LOG`), or that a copied timeout keeps (`TIMEOUT_MESSAGE`).

The lowest layer: it imports only the standard library, redis, rq, rq-scheduler, django-rq and
django.conf / django.core, never another `jobs` module.
"""

import hashlib
import re
import zlib
from collections.abc import Callable, Iterable
from datetime import datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError
from redis.utils import DEFAULT_RESP_VERSION
from rq import Worker, defaults
from rq.exceptions import AbandonedJobError
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution  # noqa: F401 (Execution re-exported)
from rq.job import Job, JobStatus, validate_job_id
from rq.queue import Queue
from rq.rate_limit import ACQUIRE_AND_ENQUEUE_SCRIPT, RELEASE_AND_ENQUEUE_SCRIPT, RateLimit, RateLimitRegistry
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
from rq.scripts import UNIQUE_ENQUEUE_SCRIPT, _build_hset_args, release_lock
from rq.timeouts import BaseDeathPenalty, JobTimeoutException  # noqa: F401 (re-exported)
from rq.types import FailureCallbackType, SuccessCallbackType  # noqa: F401 (re-exported)
from rq.utils import current_timestamp, import_attribute, now, utcformat, utcparse  # noqa: F401 (re-exported)
from rq.worker import BaseWorker
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY, register, unregister
from rq_scheduler import Scheduler
from rq_scheduler.utils import to_unix  # noqa: F401 (re-exported)

StoppedCallbackType = Callable[[Job, Redis], Any]  # the type of `Job.stopped_callback`, spelt out there

if TYPE_CHECKING:  # mypy reads the class here; at run time `__getattr__` imports it when first asked
    from django_rq.queues import DjangoScheduler


def __getattr__(name: str) -> "type[DjangoScheduler]":
    # django-rq reads the settings when imported: only when asked, so this module imports without them.
    if name == "DjangoScheduler":  # the base of `RQ["SCHEDULER_CLASS"]`
        from django_rq.queues import DjangoScheduler

        return DjangoScheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


CHECKED = {"rq": "3.0.0", "rq-scheduler": "0.14.0", "django-rq": "4.2.0"}


def installed_versions() -> dict[str, str]:
    return {package: metadata.version(package) for package in CHECKED}


def versions_differing(installed: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Each package whose installed version is not the one this module was checked against:
    name -> (checked, installed)."""
    installed = installed_versions() if installed is None else installed
    return {name: (checked, installed.get(name, "missing")) for name, checked in CHECKED.items()
            if installed.get(name) != checked}  # fmt: skip


# --- keys and hash fields -----------------------------------------------------------------------

# rq's key prefix: "rq" unless the env var RQ_KEY_PREFIX was set before rq's import (settings set it).
KEY_PREFIX = defaults.RQ_KEY_PREFIX


QUEUE_KEY_PREFIX, JOB_KEY_PREFIX = Queue.redis_queue_namespace_prefix, Job.redis_job_namespace_prefix
RATE_LIMITS_KEY = RateLimitRegistry.rl_keys_key  # the set of every rate limit's key that has jobs
WORKERS_KEY = REDIS_WORKER_KEYS  # set of every worker's key
WORKER_KEY_PREFIX = Worker.redis_worker_namespace_prefix
HEARTBEAT_FIELD, STATE_FIELD = "last_heartbeat", "state"  # worker hash fields rq writes
JOB_DATA_FIELD = "data"  # a job hash without it is no job (a stub that a late write left)

# rq-scheduler hard-codes `rq:scheduler*`: class attributes that put its keys under rq's prefix.
SCHEDULER_KEYS = {
    "redis_scheduler_namespace_prefix": f"{KEY_PREFIX}:scheduler_instance:",
    "scheduler_key": f"{KEY_PREFIX}:scheduler",
    "scheduler_lock_key": f"{KEY_PREFIX}:scheduler_lock",
    "scheduled_jobs_key": f"{KEY_PREFIX}:scheduler:scheduled_jobs",
}


def workers_of_queue_key(queue_name: str) -> str:
    return WORKERS_BY_QUEUE_KEY % queue_name


def worker_key(name: str) -> str:
    return WORKER_KEY_PREFIX + name


def worker_name_from_key(key: bytes | str) -> str:
    key = key.decode() if isinstance(key, bytes) else key
    return key.rsplit(":", 1)[-1]


def worker_executions_key(worker_name: str) -> str:
    return WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name)  # as `Execution.worker_executions_key`


def worker_process_fields(pipe: Pipeline, key: str) -> None:
    """Queue on `pipe` the read of the pid and hostname a worker (or scheduler) hash holds."""
    pipe.hmget(key, "pid", "hostname")


def scheduler_lock_key(queue_name: str) -> str:
    key: str = RQScheduler.get_locking_key(queue_name)  # rq leaves its return type out
    return key


def scheduler_hash_key(name: str) -> str:
    """The hash a scheduler process (rq's, forked by a worker) writes about itself."""
    return SCHEDULER_KEY_TEMPLATE % name


def release_scheduler_lock(connection: Redis, lock_key: str, owner: str) -> bool:
    """Delete a scheduler lock still held by `owner` (rq's `release_locks` frees only its own)."""
    return release_lock(connection, lock_key, owner)


def valid_job_id(job_id: str) -> bool:
    """Whether rq accepts `job_id` (letters, digits, `_` and `-`)."""
    try:
        validate_job_id(job_id)
    except (TypeError, ValueError):
        return False
    return True


def jobs_kwargs(connection: Redis, job_ids: list[str], serializer: Any) -> list[dict | None]:
    """Each job's kwargs, read from its `data` field alone (rq's `Job.restore` reads and parses the
    whole hash): rq stores `(func_name, instance, args, kwargs)`, serialized, zlib-compressed (or not,
    in old jobs). None for a job that is gone or cannot be read."""
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), JOB_DATA_FIELD)
        found = pipe.execute()
    kwargs: list[dict | None] = []
    for raw in found:
        try:
            try:
                raw = zlib.decompress(raw)
            except zlib.error:
                pass  # stored uncompressed
            kwargs.append(serializer.loads(raw)[3])
        except Exception:  # gone (None), or a payload no serializer reads
            kwargs.append(None)
    return kwargs


def hash_holds_job(raw: dict[bytes, bytes]) -> bool:
    """Whether a job hash read with HGETALL (bytes keys) holds a job."""
    return JOB_DATA_FIELD.encode() in raw


# --- registration -------------------------------------------------------------------------------


def register_worker(pipe: Pipeline, worker: BaseWorker) -> None:
    """List the worker (all workers, and per queue), as rq's `register_birth` does."""
    register(worker, pipe)


def unregister_worker(pipe: Pipeline, worker: BaseWorker) -> None:
    unregister(worker, pipe)


def unlist_worker(pipe: Pipeline, name: str, queue_names: Iterable[str]) -> None:
    """Take a worker known only by name (a dead one) off the worker lists."""
    key = worker_key(name)
    for queue_name in queue_names:
        pipe.srem(workers_of_queue_key(queue_name), key)
    pipe.srem(WORKERS_KEY, key)


def abandon_execution(pipe: Pipeline, queue_name: str, composite_key: str) -> None:
    """Expire a started-registry entry (`<job id>:<execution id>`) now, if it is there: rq's
    clean-up then handles its job as abandoned (a retry, or a final failure)."""
    pipe.zadd(StartedJobRegistry.key_template.format(queue_name), {composite_key: 0}, xx=True)


def listen_to(worker: BaseWorker, queues: list[Queue]) -> None:
    """The queues a forking worker waits on at its next dequeue (rq's `_ordered_queues`)."""
    worker._ordered_queues = queues


def forget_scheduler_lock(scheduler: Scheduler) -> None:
    """rq-scheduler believes it holds its lock until told otherwise; after an outage it may not."""
    scheduler._lock_acquired = False


# --- enqueue ------------------------------------------------------------------------------------


def push_unique(pipe: Pipeline, queue: Queue, job: Job) -> None:
    """What `queue.enqueue(..., unique=True)` does to save and push `job`, queued on `pipe`: rq's
    check-save-push Lua script, which answers 1 (enqueued) or 0 (the id exists). rq runs it on its
    own round trip; to run it in a pipeline this repeats `Queue._enqueue_async_job` and
    `rq.scripts.save_unique_job`. EVAL, not a registered script: a pipeline checks SCRIPT EXISTS
    first, one more round trip per call. The caller lists the queue (`SADD redis_queues_keys`)."""
    queue._prepare_for_queue(job)
    ttl = job.ttl if job.ttl is not None else -1
    pipe.eval(UNIQUE_ENQUEUE_SCRIPT, 2, job.key, queue.key, job.id, "R", ttl, *_build_hset_args(job))


# rq refuses `unique=True` for rate-limited jobs (`Queue.enqueue_job`); every producer enqueues uniquely. This is
# rq's unique check, then what `Queue._enqueue_rate_limited_job` writes (the job saved as `rate_limited`, its
# limit registered, the job added to the limit's waiting set), then rq's own acquire script, which moves the
# oldest waiting jobs to the queue while the limit has room: one script, so a job is never half enqueued.
# KEYS: the limit's allowed and waiting sets (the acquire script's KEYS[1], KEYS[2]), the job, the limit's
# config hash, rq's set of limits. ARGV: the acquire script's five, then the job id, its TTL, the limit's key
# and the job hash's fields. Answers 0 if the id exists, else the ids the acquire moved to their queue.
_UNIQUE_RATE_LIMITED = (
    """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('HSET', KEYS[3], unpack(ARGV, 9))
if tonumber(ARGV[7]) > 0 then redis.call('EXPIRE', KEYS[3], ARGV[7]) end
redis.call('SADD', KEYS[5], ARGV[8])
redis.call('HSET', KEYS[4], 'concurrency', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[6])
"""
    + ACQUIRE_AND_ENQUEUE_SCRIPT
)


def rate_limit(job: Job, key: str, concurrency: int) -> None:
    """Put `job` under rq's concurrency limit `key` (`RateLimit`: at most `concurrency` of its jobs
    queued or running; the rest wait in the limit's set, oldest first), as `Queue.create_job` does."""
    limit = RateLimit(key, concurrency)
    job.rate_limit_key, job.rate_limit_concurrency = limit.key, limit.concurrency


def push_unique_rate_limited(pipe: Pipeline, queue: Queue, job: Job) -> None:
    """`push_unique` for a job under a rate limit (`rate_limit`): its reply is 0 if the id exists,
    else the list of job ids moved to their queue (the job's own among them if its limit had room)."""
    assert job.rate_limit_key and job.rate_limit_concurrency
    queue._prepare_for_queue(job)
    job._status, job.enqueued_at = JobStatus.RATE_LIMITED, None  # enqueued when let through
    key = job.rate_limit_key
    keys = (*_limit_sets(key), job.key, limit_key(key), RATE_LIMITS_KEY)
    ttl = job.ttl if job.ttl is not None else -1
    moment = now()
    acquire = (job.rate_limit_concurrency, moment.timestamp(), utcformat(moment), QUEUE_KEY_PREFIX, JOB_KEY_PREFIX)
    pipe.eval(_UNIQUE_RATE_LIMITED, len(keys), *keys, *acquire, job.id, ttl, key, *_build_hset_args(job))


_WAITING = ":rate_limited"  # the end of a limit's waiting set's key


def limit_key(key: str) -> str:
    """The config hash of rq's limit `key` (`RateLimitRegistry.config_key`); its sets share its start."""
    return f"{KEY_PREFIX}:rl:{key}"


def rate_limited_key(key: str) -> str:
    """The sorted set of the jobs waiting under rq's limit `key`, scored by when they came."""
    return f"{limit_key(key)}{_WAITING}"


def _limit_sets(key: str) -> tuple[str, str]:
    """The jobs a limit let through (queued or running), and those it holds back."""
    return f"{limit_key(key)}:allowed", rate_limited_key(key)


# Lua functions in rq's job layout, for scripts that hold jobs back in a limit's waiting set and move them to
# their queue by another rule than rq's count (`jobs.mail.throttle`): `held_back_origin(job_key)`, the queue
# of a job held back (None for a stale entry: gone, or no longer `rate_limited`); `move_to_queue(job_key,
# job_id, queue_key, enqueued_at)`, as rq's acquire script moves one; `hold_back(job_key, job_id, key,
# score)`, a job put in limit `key`'s waiting set (`waiting_set(key)`), as `_enqueue_rate_limited_job` does.
JOB_LAYOUT_LUA = f"""
local function waiting_set(key) return '{limit_key("")}' .. key .. '{_WAITING}' end
local function held_back_origin(job_key)
  local fields = redis.call('HMGET', job_key, 'origin', 'status')
  if fields[1] and fields[2] == '{JobStatus.RATE_LIMITED.value}' then return fields[1] end
  return nil
end
local function move_to_queue(job_key, job_id, queue_key, enqueued_at)
  redis.call('RPUSH', queue_key, job_id)
  redis.call('HSET', job_key, 'status', '{JobStatus.QUEUED.value}', 'enqueued_at', enqueued_at)
end
local function hold_back(job_key, job_id, key, score)
  redis.call('HSET', job_key, 'status', '{JobStatus.RATE_LIMITED.value}')
  redis.call('SADD', '{RATE_LIMITS_KEY}', key)
  redis.call('ZADD', waiting_set(key), score, job_id)
end
"""

# A job of a paced queue (`jobs.mail.throttle.promote`) waits aside as a job over a rate limit does, in the
# limit's waiting set, so rq's maintenance and the dashboard see it the same way; but the job names no limit:
# rq's release and acquire (at a job's end, retry or cancel) would let waiting jobs through by count, and
# only their server's turn may. rq's unique check, then the writes of `Queue._enqueue_rate_limited_job`
# without the limit's config (so rq's maintenance never moves these jobs, and drops the limit once empty).
# KEYS: the job. ARGV: job id, TTL, the limit's key, the score, the job hash's fields. Answers 0 if the id
# exists, else 1.
_UNIQUE_ASIDE = (
    JOB_LAYOUT_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
hold_back(KEYS[1], ARGV[1], ARGV[3], ARGV[4])
return 1
"""
)


def push_unique_aside(pipe: Pipeline, queue: Queue, job: Job, key: str) -> None:
    """`push_unique` for a job that waits aside in limit `key`'s waiting set until something moves it
    to its queue (`jobs.mail.throttle.promote`)."""
    queue._prepare_for_queue(job)
    job._status, job.enqueued_at = JobStatus.RATE_LIMITED, None  # enqueued when moved
    ttl = job.ttl if job.ttl is not None else -1
    fields = (*_build_hset_args(job), "paced_key", key)  # where it waits again if it arrives without a turn
    pipe.eval(_UNIQUE_ASIDE, 1, job.key, job.id, ttl, key, current_timestamp(), *fields)


# KEYS: a limit's waiting set. ARGV: the start of rq's job keys, then job ids. Each of them still held back
# there is deleted (its hash: a job held back has no result, registry entry or dependents yet); one moved to
# its queue meanwhile stays. Answers how many were deleted.
_DROP_HELD = (
    JOB_LAYOUT_LUA
    + """
local dropped = 0
for i = 2, #ARGV do
  if held_back_origin(ARGV[1] .. ARGV[i]) then
    redis.call('DEL', ARGV[1] .. ARGV[i])
    redis.call('ZREM', KEYS[1], ARGV[i])
    dropped = dropped + 1
  end
end
return dropped
"""
)


def drop_held(connection: Redis, key: str, job_ids: list[str]) -> int:
    """Delete the jobs among `job_ids` still waiting in limit `key`'s set; returns how many."""
    return connection.eval(_DROP_HELD, 1, rate_limited_key(key), JOB_KEY_PREFIX, *job_ids) if job_ids else 0


def rate_limit_keys(connection: Redis) -> list[str]:
    """The key of every rq rate limit that has jobs (rq's maintenance drops the empty ones)."""
    return [key.decode() if isinstance(key, bytes) else key for key in connection.smembers(RATE_LIMITS_KEY)]


# --- one round trip: redis-py's pipeline, run as one script ---------------------------------------

# ARGV: the protocol the client speaks (each reply must have the shape its callbacks expect; redis-py 8
# speaks RESP3 unless told otherwise), the placeholder and the position (1-based, 0: none) of the first
# command for a returned id (`BatchPipeline.for_returned_id`), then each command as its length and its
# words. Runs every command, as EXEC does after an error. Each reply comes back inside a list of one,
# or none for a null (a nil would end Lua's list of replies there).
_BATCH = """
redis.setresp(tonumber(ARGV[1]))
local placeholder, bound_from = ARGV[2], tonumber(ARGV[3])
local replies, i, id = {}, 4, nil
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if #replies + 1 == bound_from then
    id = replies[#replies][1]
    if type(id) ~= "string" or not string.match(id, "^[%w_-]+$") then break end
  end
  if id then
    local words = {}
    for k = 1, n do words[k] = (string.gsub(ARGV[i + k], placeholder, id)) end
    replies[#replies + 1] = {redis.pcall(unpack(words))}
  else
    replies[#replies + 1] = {redis.pcall(unpack(ARGV, i + 1, i + n))}
  end
  i = i + n + 1
end
return replies
"""
_BATCH_SHA = hashlib.sha1(_BATCH.encode()).hexdigest()
_PLACEHOLDER = re.compile(r"[A-Za-z0-9]+")  # no character Lua's patterns treat as magic


class BatchPipeline(Pipeline):
    """A transaction whose commands run in one Lua script (atomic, as MULTI/EXEC): the worker reads
    one reply per job start or end instead of one per command plus MULTI's and EXEC's, which was most
    of the CPU a job's bookkeeping cost. Built on redis-py's `Pipeline` (its `command_stack` and
    response callbacks, as its `_execute_transaction` applies them); no WATCH, no pipelined scripts."""

    via: Redis  # the client that runs the script (`batch` sets it)
    placeholder = ""
    bound_from = 0  # the first command for a returned id, counted from 1 (0: none)

    def __enter__(self) -> "BatchPipeline":
        return self

    def for_returned_id(self, placeholder: str) -> None:
        """The commands queued from now on run only if the command queued last returns an id (letters,
        digits, `_` and `-`, as RQ's), with `placeholder` in their keys and values replaced by it:
        a job's end takes the next job and starts it in one round trip. Otherwise they do not run,
        and `execute` answers None for each."""
        if not _PLACEHOLDER.fullmatch(placeholder) or not self.command_stack:
            raise ValueError(f"a placeholder of letters and digits, after a command: {placeholder!r}")
        self.placeholder, self.bound_from = placeholder, len(self.command_stack) + 1

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, client = self.command_stack, self.via
        protocol = self.connection_pool.connection_kwargs.get("protocol") or DEFAULT_RESP_VERSION
        argv: list[Any] = [protocol, self.placeholder, self.bound_from]
        for args, _options in stack:
            argv.append(len(args))
            argv.extend(args)
        try:
            try:
                replies = client.evalsha(_BATCH_SHA, 0, *argv)
            except NoScriptError:  # Redis restarted or flushed its scripts
                replies = client.eval(_BATCH, 0, *argv)
        finally:
            self.reset()
            self.placeholder, self.bound_from = "", 0
        if len(replies) != len(stack):  # the commands for a returned id did not run
            replies = replies + [None] * (len(stack) - len(replies))
        results: list[Any] = []
        for (args, options), boxed in zip(stack, replies, strict=True):
            if boxed is None:
                results.append(None)
                continue
            reply = boxed[0] if boxed else None
            if isinstance(reply, Exception):
                if raise_on_error:
                    raise reply
            else:
                options.pop("keys", None)
                callback = self.response_callbacks.get(args[0])
                reply = callback(reply, **options) if callback else reply
            results.append(reply)
        return results


def batch(connection: Redis) -> BatchPipeline:
    pipe = BatchPipeline(connection.connection_pool, connection.response_callbacks, transaction=True, shard_hint=None)
    pipe.via = connection
    return pipe


# --- a job's run --------------------------------------------------------------------------------


def callback_name(job: Job, kind: str) -> str | None:
    """The stored name of a job's `success`, `failure` or `stopped` callback, unresolved."""
    name: str | None = getattr(job, f"_{kind}_callback_name")  # rq's `Job.__init__` types the three so
    return name


def remaining_retry_intervals(intervals: list[int], retries_left: int) -> list[int]:
    """The delays before each retry left, in order: rq picks `intervals[len - retries_left]` for the
    next one (`Job.get_retry_interval`), the first interval while more retries are left than intervals."""
    return [intervals[max(len(intervals) - left, 0)] for left in range(retries_left, 0, -1)]


def write_finished(pipe: Pipeline, job: Job, ended_at: datetime) -> None:
    """Of the job hash rq saves again at a success, the two fields that changed since the start, in
    one HSET (it answers 2, both fields created, when the hash was gone: the job was deleted while it
    ran). Sets the status rq caches on the job, as `set_status` does with an HSET of its own."""
    job._status = JobStatus.FINISHED
    pipe.hset(job.key, mapping={"status": JobStatus.FINISHED.value, "ended_at": utcformat(ended_at)})


def save_success_result(
    pipe: Pipeline, job: Job, return_value: object, *, ttl: int, worker_name: str, execution: Execution
) -> None:
    """rq's `Result.create` for a successful run, as `Job._handle_success` calls it, on `pipe`."""
    Result.create(job, Result.Type.SUCCESSFUL, return_value=return_value, ttl=ttl, worker_name=worker_name,
                  pipeline=pipe, execution_id=execution.id, execution_started_at=execution.created_at,
                  execution_ended_at=job.ended_at)  # fmt: skip


# Takes back what a deleted job's end wrote (hash, finished entry, result), unless a new job of the
# same id (with its `data`) took the hash meanwhile.
_FORGET_DELETED = f"""
if redis.call('HEXISTS', KEYS[1], '{JOB_DATA_FIELD}') == 1 then return 0 end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


def forget_deleted_job(connection: Redis, job: Job) -> None:
    keys = (job.key, job.finished_job_registry.key, Result.get_key(job.id))
    connection.eval(_FORGET_DELETED, len(keys), *keys, job.id)


_RELEASE_SHA = hashlib.sha1(RELEASE_AND_ENQUEUE_SCRIPT.encode()).hexdigest()


def release_rate_slot(job: Job) -> None:
    """rq's `release_slot` at a job's end: frees its place under its limit and moves the next waiting
    job to its queue (nothing for a job under no limit). In one round trip: rq reads the limit's
    concurrency first, which the job carries."""
    if not job.has_rate_limit or job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.STARTED):
        return
    assert job.rate_limit_key and job.rate_limit_concurrency
    args = (*_limit_sets(job.rate_limit_key), job.rate_limit_concurrency, current_timestamp(), utcformat(now()),
            QUEUE_KEY_PREFIX, JOB_KEY_PREFIX, job.id)  # fmt: skip
    try:
        job.connection.evalsha(_RELEASE_SHA, 2, *args)
    except NoScriptError:  # Redis restarted or flushed its scripts
        job.connection.eval(RELEASE_AND_ENQUEUE_SCRIPT, 2, *args)


# --- rq's strings -------------------------------------------------------------------------------

WORK_HORSE_KILLED = "Work-horse terminated unexpectedly"  # start of the exc_string rq stores (worker_classes.py)
ABANDONED = AbandonedJobError.__name__  # in "Moved to FailedJobRegistry, due to AbandonedJobError, at ..."
REDIS_DOWN_LOG = "could not connect to Redis instance"  # rq's worker logs it at every try while Redis is away
TIMEOUT_MESSAGE = "Task exceeded maximum timeout value ({seconds} seconds)"  # rq's death penalties' message
RQ_WORKER_LOGGER = "rq.worker"  # rq's worker logs here; a child logger inherits its handler

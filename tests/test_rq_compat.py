"""`jobs.rq_compat` against the installed rq, rq-scheduler and django-rq: each key, field and
string it spells out is the one their public objects use or their code writes, so a new version
that changes one fails here (besides the version check `jobs.E010`)."""

import inspect
import logging

import django_rq
import pytest
import rq.timeouts
import rq.worker.base
import rq.worker.worker_classes
from redis import Redis
from redis.exceptions import ResponseError
from rq import Callback, RateLimit, Retry, Worker
from rq.job import Job, JobStatus
from rq.rate_limit import RateLimitRegistry
from rq.scheduler import RQScheduler

from jobs import rq_compat
from jobs.runtime.scheduler import CeresScheduler
from jobs.runtime.worker import CeresWorker
from tests.test_producers import stored_job


def test_worker_keys_are_rqs(redis_conn):
    worker = Worker(["email", "slack"], connection=redis_conn, name="compat-1")
    worker.register_birth()
    worker.set_state("idle")  # as rq's work() does next

    assert rq_compat.worker_key("compat-1") == worker.key
    assert rq_compat.worker_name_from_key(worker.key.encode()) == "compat-1"
    assert rq_compat.worker_executions_key("compat-1") == worker.executions_key
    assert {key.decode() for key in redis_conn.smembers(rq_compat.WORKERS_KEY)} == {worker.key}
    assert Worker.all_keys(connection=redis_conn, queue=django_rq.get_queue("slack")) == [worker.key]
    assert redis_conn.smembers(rq_compat.workers_of_queue_key("slack")) == {worker.key.encode()}
    fields = redis_conn.hgetall(worker.key)
    assert {rq_compat.HEARTBEAT_FIELD.encode(), rq_compat.STATE_FIELD.encode(), b"pid", b"hostname"} <= set(fields)

    with redis_conn.pipeline() as pipe:
        rq_compat.unlist_worker(pipe, "compat-1", ["email", "slack"])
        pipe.execute()
    assert Worker.all_keys(connection=redis_conn) == []
    assert Worker.all_keys(connection=redis_conn, queue=django_rq.get_queue("slack")) == []


def test_register_and_unregister_list_a_worker_as_rq_does(redis_conn):
    worker = Worker(["email"], connection=redis_conn, name="compat-2")
    with redis_conn.pipeline() as pipe:
        rq_compat.register_worker(pipe, worker)
        pipe.execute()
    assert Worker.all_keys(connection=redis_conn, queue=django_rq.get_queue("email")) == [worker.key]

    with redis_conn.pipeline() as pipe:
        rq_compat.unregister_worker(pipe, worker)
        pipe.execute()
    assert Worker.all_keys(connection=redis_conn) == []


def test_scheduler_keys_are_rqs(redis_conn):
    scheduler = RQScheduler(["email"], connection=redis_conn, name="compat-scheduler")

    assert rq_compat.scheduler_lock_key("email") == scheduler.get_locking_key("email")
    assert rq_compat.scheduler_hash_key("compat-scheduler") == scheduler.key

    scheduler.acquire_locks()
    assert scheduler.acquired_locks == {"email"}
    assert not rq_compat.release_scheduler_lock(redis_conn, rq_compat.scheduler_lock_key("email"), "someone-else")
    assert rq_compat.release_scheduler_lock(redis_conn, rq_compat.scheduler_lock_key("email"), "compat-scheduler")
    assert redis_conn.get(rq_compat.scheduler_lock_key("email")) is None


def test_an_abandoned_execution_is_expired_in_rqs_started_registry(redis_conn):
    queue = django_rq.get_queue("email")
    job = queue.create_job("tests.tasks.sleep", args=[0], job_id="compat-started")
    job.save()  # not in the queue: as a worker that dequeued it has it
    with redis_conn.pipeline() as pipe:
        execution = rq_compat.Execution.create(job, 60, pipeline=pipe, worker_name="compat-3")
        job.prepare_for_execution("compat-3", pipeline=pipe)  # as `SlotRunner.start` does
        pipe.execute()
    registry = queue.started_job_registry
    assert registry.get_job_ids() == ["compat-started"]
    assert redis_conn.smembers(rq_compat.worker_executions_key("compat-3")) == {execution.composite_key.encode()}

    with redis_conn.pipeline() as pipe:
        rq_compat.abandon_execution(pipe, "email", execution.composite_key)
        rq_compat.abandon_execution(pipe, "email", "not-there:exec")  # XX: nothing added
        pipe.execute()
    assert registry.get_expired_job_ids() == ["compat-started"]
    assert redis_conn.zcard(registry.key) == 1

    registry.cleanup()  # rq's clean-up: the job is abandoned, and fails with rq's note
    assert queue.failed_job_registry.get_job_ids() == ["compat-started"]
    exc_string = queue.fetch_job("compat-started").latest_result().exc_string
    assert f"due to {rq_compat.ABANDONED}" in exc_string


def test_push_unique_stores_what_rqs_unique_enqueue_stores(redis_conn):
    queue = django_rq.get_queue("email")
    options = dict(kwargs={"n": 1}, job_id="compat-unique", result_ttl=60, failure_ttl=600,
                   retry=Retry(max=2, interval=[1, 5]), on_failure=Callback("jobs.failures.attempts.on_job_failure"))  # fmt: skip
    queue.enqueue("tests.tasks.sleep", unique=True, **options)
    by_rq = stored_job(redis_conn, "compat-unique"), redis_conn.ttl(Job.key_for("compat-unique")), queue.job_ids
    redis_conn.flushdb()

    replies = []
    for _ in range(2):
        with redis_conn.pipeline() as pipe:
            rq_compat.push_unique(pipe, queue, queue.create_job("tests.tasks.sleep", **options))
            replies += pipe.execute()

    assert replies == [1, 0]  # the second: the id exists
    assert (
        stored_job(redis_conn, "compat-unique"),
        redis_conn.ttl(Job.key_for("compat-unique")),
        queue.job_ids,
    ) == by_rq


def _rate_limited_state(redis_conn, queue, limit: RateLimitRegistry) -> tuple:
    jobs = {job_id: stored_job(redis_conn, job_id) for job_id in ("compat-rl-1", "compat-rl-2")}
    return (jobs, queue.job_ids, limit.get_allowed_job_ids(), limit.get_rate_limited_job_ids(), limit.concurrency,
            {key.decode() for key in redis_conn.smembers(RateLimitRegistry.rl_keys_key)})  # fmt: skip


def test_push_unique_rate_limited_stores_what_rqs_rate_limited_enqueue_stores(redis_conn):
    queue = django_rq.get_queue("email")
    options = dict(result_ttl=60, failure_ttl=600, rate_limit=RateLimit("compat-limit", 1))
    for n in (1, 2):
        queue.enqueue("tests.tasks.sleep", kwargs={"n": n}, job_id=f"compat-rl-{n}", **options)
    limit = RateLimitRegistry("compat-limit", redis_conn)
    by_rq = _rate_limited_state(redis_conn, queue, limit)
    redis_conn.flushdb()

    replies = []
    for n in (1, 2, 2):
        job = queue.create_job("tests.tasks.sleep", kwargs={"n": n}, job_id=f"compat-rl-{n}", result_ttl=60,
                               failure_ttl=600)  # fmt: skip
        rq_compat.rate_limit(job, "compat-limit", 1)
        with redis_conn.pipeline() as pipe:
            rq_compat.push_unique_rate_limited(pipe, queue, job)
            replies += pipe.execute()

    assert replies == [[b"compat-rl-1"], [], 0]  # the first let through, the second held back, the third a duplicate
    assert _rate_limited_state(redis_conn, queue, RateLimitRegistry("compat-limit", redis_conn)) == by_rq
    assert (rq_compat.limit_key("compat-limit"), rq_compat.rate_limited_key("compat-limit")) == (
        limit.config_key, limit.rate_limited_key)  # fmt: skip
    assert rq_compat.rate_limit_keys(redis_conn) == ["compat-limit"]


def test_release_rate_slot_lets_the_next_job_through_as_rqs_release_does(redis_conn):
    queue = django_rq.get_queue("email")
    limit = RateLimit("compat-limit", 1)
    first, second = (
        queue.enqueue("tests.tasks.sleep", kwargs={"n": n}, job_id=f"compat-rl-{n}", rate_limit=limit) for n in (1, 2)
    )
    first.set_status(JobStatus.STARTED)
    rq_compat.release_rate_slot(first)  # still running: keeps its place
    assert second.get_status() == JobStatus.RATE_LIMITED

    first.set_status(JobStatus.FINISHED)
    rq_compat.release_rate_slot(first)

    registry = RateLimitRegistry("compat-limit", redis_conn)
    assert second.get_status() == JobStatus.QUEUED and queue.job_ids == ["compat-rl-1", "compat-rl-2"]
    assert registry.get_allowed_job_ids() == ["compat-rl-2"] and registry.get_rate_limited_job_ids() == []
    redis_conn.script_flush()  # Redis restarted: the script is loaded again
    second.set_status(JobStatus.FAILED)
    rq_compat.release_rate_slot(second)
    assert registry.get_allowed_job_ids() == []


def test_jobs_kwargs_are_the_ones_rq_reads(redis_conn):
    queue = django_rq.get_queue("email")
    job = queue.enqueue("tests.tasks.sleep", kwargs={"seconds": 0, "municipality": 3}, job_id="compat-kw")
    redis_conn.hset(Job.key_for("compat-broken"), "data", b"not a payload")

    found = rq_compat.jobs_kwargs(redis_conn, ["compat-kw", "compat-gone", "compat-broken"], queue.serializer)

    assert found == [Job.fetch(job.id, connection=redis_conn, serializer=queue.serializer).kwargs, None, None]
    assert found[0] == {"seconds": 0, "municipality": 3}


def test_a_job_hash_holds_a_job_only_with_its_data(redis_conn):
    job = django_rq.get_queue("email").enqueue("tests.tasks.sleep", 0, job_id="compat-data")
    assert rq_compat.hash_holds_job(redis_conn.hgetall(job.key))
    redis_conn.hdel(job.key, rq_compat.JOB_DATA_FIELD)
    assert not rq_compat.hash_holds_job(redis_conn.hgetall(job.key))


def test_callback_names_are_the_stored_ones(redis_conn):
    job = django_rq.get_queue("email").enqueue(
        "tests.tasks.sleep", 0, job_id="compat-callbacks", on_failure=Callback("tests.tasks.always_fail")
    )
    job = Job.fetch(job.id, connection=redis_conn)
    assert rq_compat.callback_name(job, "failure") == "tests.tasks.always_fail"
    assert rq_compat.callback_name(job, "success") is None
    assert rq_compat.callback_name(job, "stopped") is None


@pytest.mark.parametrize("intervals, retries_left", [([1, 5, 15], 3), ([1, 5, 15], 1), ([7], 4), ([2, 9], 5)])
def test_remaining_retry_intervals_are_the_ones_rq_picks(redis_conn, intervals, retries_left):
    job = Job.create("tests.tasks.sleep", connection=redis_conn)
    job.retry_intervals, picked = intervals, []
    for left in range(retries_left, 0, -1):
        job.retries_left = left
        picked.append(job.get_retry_interval())
    assert rq_compat.remaining_retry_intervals(intervals, retries_left) == picked


@pytest.mark.parametrize("job_id", ["email-verify-1", "a_b", "with space", "dots.in.it", "", "ümlaut"])
def test_valid_job_ids_are_the_ones_rq_accepts(redis_conn, job_id):
    job = Job.create("tests.tasks.sleep", connection=redis_conn)
    try:
        job.id = job_id  # rq's setter validates
        accepted = True
    except ValueError:
        accepted = False
    assert rq_compat.valid_job_id(job_id) is accepted


def test_the_strings_are_rqs():
    """Stored failures are parsed with these and a log filter matches one: they must still be rq's."""
    assert rq_compat.WORK_HORSE_KILLED in inspect.getsource(rq.worker.worker_classes)
    assert rq_compat.REDIS_DOWN_LOG in inspect.getsource(rq.worker.base)
    with pytest.raises(rq_compat.JobTimeoutException) as raised:  # not the timer's: it patches the class
        rq.timeouts.UnixSignalDeathPenalty(7, rq_compat.JobTimeoutException).handle_death_penalty(None, None)
    assert str(raised.value) == rq_compat.TIMEOUT_MESSAGE.format(seconds=7)
    assert Worker(["email"], connection=django_rq.get_connection("email")).log.name == rq_compat.RQ_WORKER_LOGGER


def test_the_scheduler_keys_are_under_rqs_prefix(settings):
    scheduler = django_rq.get_scheduler("maintenance")
    assert isinstance(scheduler, CeresScheduler)
    for attribute, key in rq_compat.SCHEDULER_KEYS.items():
        assert getattr(scheduler, attribute) == key and key.startswith(f"{settings.RQ_KEY_PREFIX}:")


def test_the_worker_log_drops_rqs_redis_down_lines_and_only_those(redis_conn):
    worker = django_rq.get_worker("maintenance", worker_class=CeresWorker)
    assert worker.log.name == rq_compat.RQ_WORKER_LOGGER

    def record(message: str, *args) -> logging.LogRecord:
        return logging.LogRecord(worker.log.name, logging.ERROR, __file__, 0, message, args, None)

    rqs = record("Worker %s: could not connect to Redis instance: %s retrying in %d seconds...", "w", "refused", 1)
    assert not all(f.filter(rqs) for f in worker.log.filters)
    assert all(f.filter(record("Worker %s: job %s failed", "w", "j")) for f in worker.log.filters)


def some_commands(pipe) -> None:
    """Commands whose replies redis-py shapes in every way: counts, flags, maps, sets, scores, nils."""
    pipe.hset("batch:hash", mapping={"a": "1", "b": "2"})
    pipe.hgetall("batch:hash")
    pipe.sadd("batch:set", "x", "y")
    pipe.smembers("batch:set")
    pipe.zadd("batch:zset", {"m": 1.5})
    pipe.zscore("batch:zset", "m")
    pipe.zrange("batch:zset", 0, -1, withscores=True)
    pipe.expire("batch:hash", 60)
    pipe.get("batch:missing")
    pipe.lmove("batch:empty", "batch:other")
    pipe.rpush("batch:list", "j1")
    pipe.lmove("batch:list", "batch:other")
    pipe.incr("batch:hash")  # an error: a hash is not a number
    pipe.incr("batch:count")  # still runs, as after an error inside MULTI/EXEC


def outcome(replies: list) -> list:
    return [(type(r), str(r)) if isinstance(r, Exception) else r for r in replies]


@pytest.mark.parametrize("protocol", [None, 2, 3])  # None: what redis-py picks, as our clients
def test_a_batch_answers_as_a_transaction_does(redis_conn, protocol):
    kwargs = redis_conn.connection_pool.connection_kwargs
    client = Redis(host=kwargs["host"], port=kwargs["port"], db=kwargs["db"], protocol=protocol)

    with client.pipeline() as pipe:
        some_commands(pipe)
        expected = outcome(pipe.execute(raise_on_error=False))
    client.flushdb()
    client.script_flush()  # the first batch loads its script again
    with rq_compat.batch(client) as pipe:
        some_commands(pipe)
        replies = outcome(pipe.execute(raise_on_error=False))

    assert replies == expected
    assert replies[1] == {b"a": b"1", b"b": b"2"} and replies[5] == 1.5 and replies[8] is None
    assert replies[-2][0] is ResponseError and replies[-1] == 1


def test_a_batch_raises_the_first_error_after_running_every_command(redis_conn):
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        with rq_compat.batch(redis_conn) as pipe:
            some_commands(pipe)
            pipe.execute()
    assert redis_conn.get("batch:count") == b"1"
    assert redis_conn.lrange("batch:other", 0, -1) == [b"j1"]


@pytest.mark.parametrize("protocol", [None, 2, 3])
@pytest.mark.parametrize("pushed", ["job-7_b", None, "bad:id", "100%"], ids=["an-id", "none", "colon", "percent"])
def test_commands_for_a_returned_id_run_with_it_or_not_at_all(redis_conn, protocol, pushed):
    """What a job's end does to start the next job: the commands after `for_returned_id` name the id
    the command before them returned, and run only if it is an id of RQ's alphabet."""
    kwargs = redis_conn.connection_pool.connection_kwargs
    client = Redis(host=kwargs["host"], port=kwargs["port"], db=kwargs["db"], protocol=protocol)
    if pushed is not None:
        client.rpush("ids", pushed)

    with rq_compat.batch(client) as pipe:
        pipe.set("before", "1")
        pipe.lmove("ids", "taken")
        pipe.for_returned_id("NextId0")
        pipe.hset("job:NextId0", mapping={"id": "NextId0", "n": 1})
        pipe.sadd("started", "NextId0:exec")
        pipe.hgetall("job:NextId0")
        replies = pipe.execute()

    started = pushed == "job-7_b"
    assert replies[0] is True and replies[1] == (pushed.encode() if pushed else None)
    assert replies[2:] == ([2, 1, {b"id": b"job-7_b", b"n": b"1"}] if started else [None, None, None])
    assert client.smembers("started") == ({b"job-7_b:exec"} if started else set())
    assert client.keys("job:*") == ([b"job:job-7_b"] if started else [])
    assert client.get("before") == b"1"


@pytest.mark.parametrize("placeholder", ["", "next.id", "a-b"])
def test_a_placeholder_is_letters_and_digits_after_a_command(redis_conn, placeholder):
    with rq_compat.batch(redis_conn) as pipe:
        pipe.lmove("ids", "taken")
        with pytest.raises(ValueError, match="placeholder"):
            pipe.for_returned_id(placeholder)
    with rq_compat.batch(redis_conn) as pipe, pytest.raises(ValueError, match="after a command"):
        pipe.for_returned_id("NextId0")

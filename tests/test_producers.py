"""Producers: deterministic ids, atomic uniqueness, policy on the job, enqueue after commit, resends."""

import json
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import django_rq
import pytest
from django.db import transaction
from django.test import override_settings
from rq import Callback, Retry
from rq.job import Job, JobStatus

from jobs.config import tenancy
from jobs.config.policies import QueuePolicy
from jobs.enqueue import unique
from jobs.enqueue.producers import enqueue_email_verify, enqueue_email_verify_many, enqueue_email_welcome
from jobs.failures.attempts import on_job_failure
from jobs.staff.operations import jobs_delete
from tests.conftest import wait_for

# Producers take ids only: most tests need no database (and so run outside any transaction).
TOWN = 7  # the municipality every job here names (none runs)


def in_town(user_ids) -> dict[int, int]:
    return dict.fromkeys(user_ids, TOWN)


@pytest.fixture(autouse=True)
def one_municipality(monkeypatch):
    """Not several municipalities (which producers would count in the database): no job waits its turn."""
    monkeypatch.setattr(tenancy, "shared", lambda: False)


def email_queue():
    return django_rq.get_queue("email")


def test_verify_job_has_deterministic_id_policy_and_ttls():
    result = enqueue_email_verify(user_id=42, municipality=TOWN)

    assert result.job_id == "email-verify-42" and result.created and result.status == "queued"
    job = email_queue().fetch_job("email-verify-42")
    assert job.func_name == "jobs.tasks.email.send_verify_email"
    assert job.args == [] and job.kwargs == {"user_id": 42, "municipality": TOWN}
    assert job.retries_left == 5 and job.retry_intervals == [1, 5, 15, 60, 300]
    assert job.result_ttl == 3600 and job.failure_ttl == 86400 and job.timeout == 720
    assert email_queue().job_ids == ["email-verify-42"]


def test_a_municipality_s_job_without_its_municipality_is_refused(redis_conn):
    with pytest.raises(TypeError, match="municipality=<its id>"):
        enqueue_email_verify(user_id=42)
    with pytest.raises(TypeError, match="municipality=<its id>"):
        enqueue_email_verify_many(user_ids=[1, 2], municipalities=in_town([1]))
    assert redis_conn.keys("*") == []


def test_welcome_job_id():
    assert enqueue_email_welcome(user_id=7, municipality=TOWN).job_id == "email-welcome-7"
    assert email_queue().job_ids == ["email-welcome-7"]


def test_second_call_reports_the_pending_job_and_adds_nothing():
    first = enqueue_email_verify(user_id=42, municipality=TOWN)
    second = enqueue_email_verify(user_id=42, municipality=TOWN)

    assert first.created and not second.created
    assert second.job_id == first.job_id and second.status == "queued"
    assert email_queue().job_ids == ["email-verify-42"]


def test_fifty_concurrent_calls_make_one_job():
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: enqueue_email_verify(user_id=42, municipality=TOWN), range(50)))

    assert sum(r.created for r in results) == 1
    assert {r.job_id for r in results} == {"email-verify-42"}
    assert email_queue().job_ids == ["email-verify-42"]


def test_jobs_are_stored_as_json(redis_conn):
    enqueue_email_verify(user_id=42, municipality=TOWN)

    data = json.loads(zlib.decompress(redis_conn.hget(Job.key_for("email-verify-42"), "data")))
    assert data[0] == "jobs.tasks.email.send_verify_email" and data[3] == {"user_id": 42, "municipality": TOWN}
    assert email_queue().serializer.__name__ == "JSONSerializer"


@pytest.mark.django_db(transaction=True)
def test_enqueue_waits_for_commit():
    with transaction.atomic():
        assert enqueue_email_verify(user_id=42, municipality=TOWN) is None
        assert email_queue().job_ids == []
    assert email_queue().job_ids == ["email-verify-42"]


@pytest.mark.django_db(transaction=True)
def test_rollback_enqueues_nothing():
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            enqueue_email_verify(user_id=42, municipality=TOWN)
            raise RuntimeError("rolled back")
    assert email_queue().job_ids == []
    assert email_queue().fetch_job("email-verify-42") is None


# --- a resend in every state of the existing job ---------------------------------------------


def existing_job(status: JobStatus, ended_ago: timedelta | None = None, user_id: int = 42) -> Job:
    enqueue_email_verify(user_id=user_id, municipality=TOWN)
    queue = email_queue()
    job = queue.fetch_job(f"email-verify-{user_id}")
    if status is JobStatus.SCHEDULED:
        queue.remove(job)
        queue.schedule_job(job, job.enqueued_at + timedelta(minutes=5))
    elif status is not JobStatus.QUEUED:
        queue.remove(job)
        job.set_status(status)
        if ended_ago is not None:
            job.ended_at = job.enqueued_at - ended_ago
            job.save()
    return job


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED])
def test_resend_while_pending_is_a_no_op(status):
    before = existing_job(status)

    result = enqueue_email_verify(user_id=42, municipality=TOWN)

    assert not result.created and result.status == status.value
    after = email_queue().fetch_job("email-verify-42")
    assert after.created_at == before.created_at


def test_resend_right_after_a_send_is_a_no_op():
    existing_job(JobStatus.FINISHED, ended_ago=timedelta(seconds=5))

    result = enqueue_email_verify(user_id=42, municipality=TOWN)

    assert not result.created and result.status == "finished"
    assert email_queue().job_ids == []


@pytest.mark.parametrize(
    "status,ended_ago",
    [
        (JobStatus.FINISHED, timedelta(minutes=10)),
        (JobStatus.FAILED, timedelta(seconds=1)),
        (JobStatus.STOPPED, timedelta(seconds=1)),
        (JobStatus.CANCELED, None),
    ],
)
def test_resend_after_the_job_ended_replaces_it_with_a_fresh_one(status, ended_ago):
    before = existing_job(status, ended_ago)
    before.retries_left = 0  # as after its last attempt
    before.save()

    result = enqueue_email_verify(user_id=42, municipality=TOWN)

    assert result.created and result.status == "queued"
    after = email_queue().fetch_job("email-verify-42")
    assert after.created_at > before.created_at
    assert after.retries_left == 5  # the whole retry budget again
    assert email_queue().job_ids == ["email-verify-42"]


# --- cost: one queue per process -------------------------------------------------------------


def test_calls_reuse_one_redis_connection(redis_conn):
    enqueue_email_verify(user_id=1, municipality=TOWN)  # the process's first call may connect
    connections_before = redis_conn.info("stats")["total_connections_received"]

    for user_id in range(2, 22):
        enqueue_email_verify(user_id=user_id, municipality=TOWN)
    enqueue_email_verify_many(user_ids=range(100, 110), municipalities=in_town(range(100, 110)))

    assert redis_conn.info("stats")["total_connections_received"] == connections_before
    assert email_queue().count == 31


def test_the_policy_is_read_at_each_call(policy):
    enqueue_email_verify(user_id=1, municipality=TOWN)
    policy("email", retry_max=0, result_ttl=10, failure_ttl=20, timeout=5)
    enqueue_email_verify(user_id=2, municipality=TOWN)
    enqueue_email_verify_many(user_ids=[3], municipalities=in_town([3]))

    first, *changed = (email_queue().fetch_job(f"email-verify-{n}") for n in (1, 2, 3))
    assert first.retries_left == 5 and first.result_ttl == 3600 and first.timeout == 720
    for job in changed:
        assert job.retries_left is None and job.result_ttl == 10 and job.failure_ttl == 20 and job.timeout == 5


@pytest.mark.parametrize("intervals", [(1, 2), (1, 2, 3, 4), ()])
def test_a_retry_schedule_rq_would_read_otherwise_is_refused(intervals):
    """RQ reads the list from its end: (1, 2) for 3 retries would wait 1, 1, 2; (1, 2, 3, 4) would wait 2, 3, 4."""
    with pytest.raises(ValueError, match="give one interval per retry"):
        QueuePolicy(name="email", concurrency=1, timeout=1, retry_max=3, retry_intervals=intervals)


@pytest.mark.parametrize("intervals,waits", [((1, 2, 3), [1, 2, 3]), ((7,), [7, 7, 7])])
def test_a_retry_schedule_is_what_rq_follows(intervals, waits, policy):
    policy("email", retry_max=3, retry_intervals=intervals)
    enqueue_email_verify(user_id=42, municipality=TOWN)
    job = email_queue().fetch_job("email-verify-42")

    followed = []
    while job.retries_left:  # what RQ's Job.retry() waits before each retry
        followed.append(job.get_retry_interval())
        job.retries_left -= 1

    assert followed == waits


def test_a_changed_rq_queues_setting_is_followed(settings):
    """Tests point the queues at another Redis (test_failover: a Sentinel cluster)."""
    enqueue_email_verify(user_id=1, municipality=TOWN)
    config = settings.RQ_QUEUES["email"]
    url = urlsplit(config["URL"])
    other_db = urlunsplit(url._replace(path=f"/{int(url.path.strip('/') or 0) + 1}"))

    with override_settings(RQ_QUEUES={**settings.RQ_QUEUES, "email": {**config, "URL": other_db}}):
        try:
            enqueue_email_verify(user_id=2, municipality=TOWN)
            assert email_queue().job_ids == ["email-verify-2"]
        finally:
            email_queue().connection.flushdb()
    enqueue_email_verify(user_id=3, municipality=TOWN)

    assert email_queue().job_ids == ["email-verify-1", "email-verify-3"]


def stored_job(redis_conn, job_id: str) -> dict:
    """A job's hash in Redis, but for the values of the times that differ between two enqueues."""
    fields = redis_conn.hgetall(Job.key_for(job_id))
    return {name: "<time>" if name in (b"created_at", b"enqueued_at") else value for name, value in fields.items()}


def test_jobs_are_stored_as_rqs_own_unique_enqueue_stores_them(redis_conn):
    """Producers run rq's unique-enqueue script themselves (to pipeline it): what they store must
    not drift from what `queue.enqueue(..., unique=True)` stores, whatever rq version is installed."""
    email_queue().enqueue(
        "jobs.tasks.email.send_verify_email", kwargs={"user_id": 42, "municipality": TOWN}, job_id="email-verify-42", unique=True,
        job_timeout=720, result_ttl=3600, failure_ttl=86400, retry=Retry(max=5, interval=[1, 5, 15, 60, 300]),
        on_failure=Callback(on_job_failure),
    )  # fmt: skip
    by_rq = stored_job(redis_conn, "email-verify-42"), redis_conn.ttl(Job.key_for("email-verify-42"))
    queue_keys = redis_conn.smembers(email_queue().redis_queues_keys)

    for enqueue in (
        lambda: enqueue_email_verify(user_id=42, municipality=TOWN),
        lambda: enqueue_email_verify_many(user_ids=[42], municipalities=in_town([42])),
    ):
        redis_conn.flushdb()
        enqueue()
        assert (stored_job(redis_conn, "email-verify-42"), redis_conn.ttl(Job.key_for("email-verify-42"))) == by_rq
        assert redis_conn.smembers(email_queue().redis_queues_keys) == queue_keys
        assert email_queue().job_ids == ["email-verify-42"]


# --- many users at once ----------------------------------------------------------------------


def test_bulk_makes_one_job_per_user_with_the_policy(monkeypatch, redis_conn):
    monkeypatch.setattr(unique, "BULK_BATCH", 128)  # three pipelines
    user_ids = list(range(1000, 1300))

    results = enqueue_email_verify_many(user_ids=user_ids, municipalities=in_town(user_ids))

    job_ids = [f"email-verify-{user_id}" for user_id in user_ids]
    assert [r.job_id for r in results] == job_ids
    assert all(r.created and r.status == "queued" for r in results)
    assert email_queue().job_ids == job_ids
    jobs = Job.fetch_many(job_ids, connection=redis_conn, serializer=email_queue().serializer)
    for user_id, job in zip(user_ids, jobs):
        assert job.func_name == "jobs.tasks.email.send_verify_email"
        assert job.args == [] and job.kwargs == {"user_id": user_id, "municipality": TOWN}
        assert job.retries_left == 5 and job.retry_intervals == [1, 5, 15, 60, 300]
        assert job.result_ttl == 3600 and job.failure_ttl == 86400 and job.timeout == 720
    data = json.loads(zlib.decompress(redis_conn.hget(Job.key_for("email-verify-1299"), "data")))
    assert data[3] == {"user_id": 1299, "municipality": TOWN}


def test_bulk_keeps_pending_and_recent_jobs_and_replaces_ended_ones():
    pending = existing_job(JobStatus.QUEUED, user_id=1)
    existing_job(JobStatus.FINISHED, ended_ago=timedelta(seconds=5), user_id=2)
    ended = existing_job(JobStatus.FINISHED, ended_ago=timedelta(minutes=10), user_id=3)
    existing_job(JobStatus.FAILED, ended_ago=timedelta(seconds=1), user_id=4)

    results = enqueue_email_verify_many(user_ids=[1, 2, 3, 4, 5], municipalities=in_town([1, 2, 3, 4, 5]))

    assert [(r.job_id, r.created, r.status) for r in results] == [
        ("email-verify-1", False, "queued"),
        ("email-verify-2", False, "finished"),
        ("email-verify-3", True, "queued"),
        ("email-verify-4", True, "queued"),
        ("email-verify-5", True, "queued"),
    ]
    assert email_queue().fetch_job("email-verify-1").created_at == pending.created_at
    assert email_queue().fetch_job("email-verify-3").created_at > ended.created_at
    assert email_queue().fetch_job("email-verify-4").retries_left == 5
    assert sorted(email_queue().job_ids) == ["email-verify-1", "email-verify-3", "email-verify-4", "email-verify-5"]


def test_bulk_takes_a_repeated_user_once():
    results = enqueue_email_verify_many(user_ids=[5, 5, 6, 5], municipalities=in_town([5, 5, 6, 5]))

    assert [(r.job_id, r.created) for r in results] == [("email-verify-5", True), ("email-verify-6", True)]
    assert email_queue().job_ids == ["email-verify-5", "email-verify-6"]


def test_bulk_of_no_users_does_nothing():
    assert enqueue_email_verify_many(user_ids=[], municipalities=in_town([])) == []
    assert email_queue().job_ids == []


@pytest.mark.django_db(transaction=True)
def test_bulk_enqueue_waits_for_commit():
    with transaction.atomic():
        assert (
            enqueue_email_verify_many(user_ids=(n for n in (1, 2)), municipalities=in_town([1, 2])) is None
        )  # a generator is read at once
        assert email_queue().job_ids == []
    assert email_queue().job_ids == ["email-verify-1", "email-verify-2"]


# --- an id held by what is not a job ---------------------------------------------------------


def test_a_job_hash_without_its_job_does_not_block_the_id(redis_conn):
    """What a running job's own writes leave once it was deleted under it: a status, no job."""
    key = Job.key_for("email-verify-42")
    redis_conn.hset(key, mapping={"status": "finished", "ended_at": "2026-01-01T00:00:00.000000Z"})
    redis_conn.expire(key, 3600)

    result = enqueue_email_verify(user_id=42, municipality=TOWN)

    assert result.created and result.status == "queued"
    assert email_queue().fetch_job("email-verify-42").kwargs == {"user_id": 42, "municipality": TOWN}


def test_an_id_that_stays_taken_is_an_error_not_a_loop(redis_conn, monkeypatch):
    redis_conn.hset(Job.key_for("email-verify-42"), "status", "finished")
    # Every look says the id is free now, as a state no producer knows could: the producer gives up.
    monkeypatch.setattr(unique, "_delete_if_done", lambda *args: True)

    with pytest.raises(unique.JobIdTaken, match="email-verify-42"):
        enqueue_email_verify(user_id=42, municipality=TOWN)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_running_job_deleted_from_the_dashboard_leaves_its_id_free(live_worker, redis_conn, tmp_path):
    live_worker("email")
    release = tmp_path / "release"
    email_queue().enqueue("tests.tasks.wait_until", str(release), job_id="email-verify-42")
    wait_for(lambda: email_queue().started_job_registry.get_job_ids() == ["email-verify-42"], timeout=30)
    assert jobs_delete(queue_name="email", job_ids=["email-verify-42"]) == ["email-verify-42"]

    release.touch()  # the slot goes on with the job it was running, and ends it
    wait_for(lambda: "email-verify-42 finished" in (tmp_path / "worker-0.log").read_text(), timeout=30)
    assert not redis_conn.exists(Job.key_for("email-verify-42"))  # nothing of it written back
    result = enqueue_email_verify(user_id=42, municipality=TOWN)  # the person asks for the email again
    assert result.created and result.status == "queued"

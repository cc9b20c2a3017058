"""Producers: deterministic ids, atomic uniqueness, policy on the job, enqueue after commit, resends."""

import json
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import django_rq
import pytest
from django.db import transaction
from rq.job import Job, JobStatus

from jobs.producers import enqueue_email_verify, enqueue_email_welcome

# Producers take ids only: most tests need no database (and so run outside any transaction).


def email_queue():
    return django_rq.get_queue("email")


def test_verify_job_has_deterministic_id_policy_and_ttls():
    result = enqueue_email_verify(user_id=42)

    assert result.job_id == "email-verify-42" and result.created and result.status == "queued"
    job = email_queue().fetch_job("email-verify-42")
    assert job.func_name == "jobs.tasks.email.send_verify_email"
    assert job.args == [] and job.kwargs == {"user_id": 42}
    assert job.retries_left == 5 and job.retry_intervals == [1, 5, 15, 60, 300]
    assert job.result_ttl == 3600 and job.failure_ttl == 86400 and job.timeout == 60
    assert email_queue().job_ids == ["email-verify-42"]


def test_welcome_job_id():
    assert enqueue_email_welcome(user_id=7).job_id == "email-welcome-7"
    assert email_queue().job_ids == ["email-welcome-7"]


def test_second_call_reports_the_pending_job_and_adds_nothing():
    first = enqueue_email_verify(user_id=42)
    second = enqueue_email_verify(user_id=42)

    assert first.created and not second.created
    assert second.job_id == first.job_id and second.status == "queued"
    assert email_queue().job_ids == ["email-verify-42"]


def test_fifty_concurrent_calls_make_one_job():
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: enqueue_email_verify(user_id=42), range(50)))

    assert sum(r.created for r in results) == 1
    assert {r.job_id for r in results} == {"email-verify-42"}
    assert email_queue().job_ids == ["email-verify-42"]


def test_jobs_are_stored_as_json(redis_conn):
    enqueue_email_verify(user_id=42)

    data = json.loads(zlib.decompress(redis_conn.hget(Job.key_for("email-verify-42"), "data")))
    assert data[0] == "jobs.tasks.email.send_verify_email" and data[3] == {"user_id": 42}
    assert email_queue().serializer.__name__ == "JSONSerializer"


@pytest.mark.django_db(transaction=True)
def test_enqueue_waits_for_commit():
    with transaction.atomic():
        assert enqueue_email_verify(user_id=42) is None
        assert email_queue().job_ids == []
    assert email_queue().job_ids == ["email-verify-42"]


@pytest.mark.django_db(transaction=True)
def test_rollback_enqueues_nothing():
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            enqueue_email_verify(user_id=42)
            raise RuntimeError("rolled back")
    assert email_queue().job_ids == []
    assert email_queue().fetch_job("email-verify-42") is None


# --- a resend in every state of the existing job ---------------------------------------------


def existing_job(status: JobStatus, ended_ago: timedelta | None = None) -> Job:
    enqueue_email_verify(user_id=42)
    queue = email_queue()
    job = queue.fetch_job("email-verify-42")
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


@pytest.mark.parametrize(
    "status", [JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED]
)
def test_resend_while_pending_is_a_no_op(status):
    before = existing_job(status)

    result = enqueue_email_verify(user_id=42)

    assert not result.created and result.status == status.value
    after = email_queue().fetch_job("email-verify-42")
    assert after.created_at == before.created_at


def test_resend_right_after_a_send_is_a_no_op():
    existing_job(JobStatus.FINISHED, ended_ago=timedelta(seconds=5))

    result = enqueue_email_verify(user_id=42)

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

    result = enqueue_email_verify(user_id=42)

    assert result.created and result.status == "queued"
    after = email_queue().fetch_job("email-verify-42")
    assert after.created_at > before.created_at
    assert after.retries_left == 5  # the whole retry budget again
    assert email_queue().job_ids == ["email-verify-42"]

"""A job that cannot be read (an id RQ refuses, a hash it cannot restore) breaks nothing: readers
skip it, the worker that dequeues it sets it aside as a dead letter and goes on."""

import django_rq
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from rq.job import Job

from jobs import health
from jobs.models import DeadLetter
from jobs.producers import enqueue_stored_call

pytestmark = pytest.mark.django_db(transaction=True)


def push_unreadable(queue_name: str, job_id: str, **changes) -> None:
    """A copy of a real job's hash under `job_id`, with `changes`, pushed onto the queue by hand."""
    queue = django_rq.get_queue(queue_name)
    model = enqueue_stored_call(queue_name=queue_name, func="tests.tasks.sleep", job_id=f"{queue_name}-model-1",
                                kwargs={"seconds": 0})  # fmt: skip
    connection = queue.connection
    fields = connection.hgetall(Job.key_for(model.job_id))
    connection.lrem(queue.key, 0, model.job_id)
    connection.delete(Job.key_for(model.job_id))
    connection.hset(Job.key_for(job_id), mapping={**fields, **changes})
    connection.rpush(queue.key, job_id)


CASES = [
    ("email", "bad:id", {}),  # an id RQ refuses
    ("email", "email-garbled-1", {"created_at": "yesterday"}),  # a hash RQ cannot restore
    ("files", "bad id\x00", {}),  # the forking worker
]


@pytest.mark.parametrize("queue_name,job_id,changes", CASES)
def test_readers_answer_and_the_worker_sets_it_aside_and_goes_on(queue_name, job_id, changes, work, admin_client,
                                                                 settings, client):  # fmt: skip
    push_unreadable(queue_name, job_id, **changes)
    enqueue_stored_call(queue_name=queue_name, func="tests.tasks.sleep", job_id=f"{queue_name}-fine-1", kwargs={"seconds": 0})
    settings.METRICS_TOKEN = "scrape-me"

    assert health.health_report()["checks"]
    assert client.get("/health").status_code in (200, 503)
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200
    for page in (reverse("admin:jobs_dashboard_overview"), reverse("admin:jobs_dashboard_list", args=[queue_name, "queued"])):
        assert admin_client.get(page).status_code == 200
    with pytest.raises(CommandError, match="unhealthy"):  # no worker runs: a clear answer, not a traceback
        call_command("queues_health", stdout=open("/dev/null", "w"))

    work(queue_name)

    queue = django_rq.get_queue(queue_name)
    assert queue.fetch_job(f"{queue_name}-fine-1").get_status() == "finished"
    assert queue.connection.llen(queue.key) == queue.connection.llen(queue.intermediate_queue_key) == 0
    [dead] = DeadLetter.objects.filter(exc_type="UnreadableJob")
    assert dead.queue == queue_name and dead.alert == DeadLetter.Alert.PENDING
    assert dead.job_id == job_id.encode("unicode_escape").decode()
    assert not queue.connection.exists(Job.key_for(job_id))  # renamed aside, named in the dead letter
    assert "set aside in Redis as ceres:queue:unreadable:" in dead.exc_message

"""A job that cannot be read (an id RQ refuses, a hash it cannot restore) breaks nothing: readers
skip it, the worker that dequeues it sets it aside as a dead letter and goes on."""

import django_rq
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from rq.job import Job

from jobs.enqueue.producers import enqueue_stored_call
from jobs.models import DeadLetter
from jobs.observability import health, reads
from jobs.runtime import unreadable
from tests.conftest import wait_for

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
    enqueue_stored_call(
        queue_name=queue_name, func="tests.tasks.sleep", job_id=f"{queue_name}-fine-1", kwargs={"seconds": 0}
    )
    settings.METRICS_TOKEN = "scrape-me"

    assert health.health_report()["checks"]
    assert client.get("/health").status_code == 200  # the database and Redis answer: this node serves
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200
    assert admin_client.get(reverse("admin:jobs_dashboard_overview")).status_code == 200
    listed = admin_client.get(reverse("admin:jobs_dashboard_list", args=[queue_name, "queued"])).content.decode()
    assert f"<code>{reads.printable(job_id)}</code> · ilegible: no lo va a ejecutar ningún worker" in listed
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


@pytest.mark.parametrize("state", ["started", "scheduled", "ready", "deferred", "failed", "finished", "canceled"])
@pytest.mark.parametrize("queue_name", [pytest.param("email", marks=pytest.mark.slow), "files"])  # email: ~6 s each
def test_an_unreadable_id_in_a_registry_breaks_no_reader_and_no_worker(
    queue_name, state, live_worker, admin_client, client
):
    """The entry is due (or expired) in its registry, so RQ's clean-up and scheduler would read it;
    it has a hash, so RQ would not just drop it as gone."""
    queue = django_rq.get_queue(queue_name)
    registry = getattr(queue, f"{state}_job_registry")
    entry = "bad id!:exec-1" if state == "started" else "bad id!"  # started entries are `<job id>:<execution>`
    queue.connection.hset(Job.key_for("bad id!"), mapping={"status": state, "origin": queue_name})
    queue.connection.zadd(registry.key, {entry: 1})  # 1970
    list_page = reverse("admin:jobs_dashboard_list", args=[queue_name, state if state != "ready" else "queued"])

    assert client.get("/health").status_code == 200  # the database and Redis answer: this node serves
    assert admin_client.get(reverse("admin:jobs_dashboard_overview")).status_code == 200
    listed = admin_client.get(list_page)
    assert listed.status_code == 200
    if state != "ready":  # a registry the lists do not show
        assert "<code>bad id!</code> · ilegible: no lo va a ejecutar ningún worker" in listed.content.decode()

    enqueue_stored_call(
        queue_name=queue_name, func="tests.tasks.sleep", job_id=f"{queue_name}-fine-1", kwargs={"seconds": 0}
    )
    worker = live_worker(queue_name)

    wait_for(lambda: queue.fetch_job(f"{queue_name}-fine-1").get_status() == "finished", timeout=60)
    assert worker.poll() is None  # still working
    if state in unreadable.READ_WHEN_DUE:  # set aside before RQ read it
        wait_for(lambda: DeadLetter.objects.filter(exc_type="UnreadableJob").exists(), timeout=30)
        assert queue.connection.zscore(registry.key, entry) is None
        [dead] = DeadLetter.objects.filter(exc_type="UnreadableJob")
        assert dead.queue == queue_name and f"unreadable in the {state} registry" in dead.exc_message
    assert admin_client.get(list_page).status_code == 200


@pytest.mark.parametrize("job_id,changes", [CASES[0][1:], CASES[1][1:]], ids=["an-id-rq-refuses", "unrestorable"])
def test_an_unreadable_job_taken_with_the_end_of_the_one_before_is_set_aside_too(job_id, changes, work, policy):
    """A job's end takes and starts the next job (`SlotRunner.handle_job_success`): one RQ cannot
    read, or whose id the start cannot name, is set aside all the same."""
    policy("email", concurrency=1)
    fine = {"queue_name": "email", "func": "tests.tasks.sleep", "kwargs": {"seconds": 0}}
    enqueue_stored_call(job_id="email-before-1", **fine)
    push_unreadable("email", job_id, **changes)
    enqueue_stored_call(job_id="email-after-1", **fine)

    work("email")

    queue = django_rq.get_queue("email")
    assert [queue.fetch_job(f"email-{when}-1").get_status() for when in ("before", "after")] == ["finished"] * 2
    assert queue.connection.llen(queue.key) == queue.connection.llen(queue.intermediate_queue_key) == 0
    [dead] = DeadLetter.objects.filter(exc_type="UnreadableJob")
    assert dead.job_id == job_id and not queue.connection.exists(Job.key_for(job_id))

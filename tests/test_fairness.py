"""Fairness between municipalities (issue 23): a burst of one municipality's emails waits aside beyond
its cap, so another municipality's verification email is queued behind that many jobs at most."""

import re
import time

import django_rq
import pytest
from django.urls import reverse
from rq.job import Job

from ceres_site.accounts.models import User
from ceres_site.municipalities.models import Municipality
from jobs import rq_compat
from jobs.config import tenancy
from jobs.config.policies import EMAIL
from jobs.enqueue.producers import enqueue_email_verify, enqueue_email_verify_many
from jobs.observability import health, reads

pytestmark = pytest.mark.django_db(transaction=True)  # producers enqueue on commit

BURST = 2000


def citizens(municipality: Municipality, count: int) -> list[int]:
    prefix = f"{municipality.slug}-vecino"
    User.objects.bulk_create(
        User(username=f"{prefix}{n}@{municipality.slug}", email=f"{prefix}{n}@example.com", municipality=municipality)
        for n in range(count)
    )  # fmt: skip
    return list(User.objects.filter(username__startswith=prefix).order_by("pk").values_list("pk", flat=True))


def waiting(municipality: Municipality) -> int:
    key = rq_compat.rate_limited_key(tenancy.cap_key("email", municipality.pk))
    return django_rq.get_queue("email").connection.zcard(key)


@pytest.fixture
def towns():
    return (
        Municipality.objects.create(name="Villa Norte", slug="norte", hosts="norte.example.test"),
        Municipality.objects.create(name="Villa Sur", slug="sur", hosts="sur.example.test"),
    )


def test_a_burst_of_one_municipality_leaves_another_s_email_behind_its_cap_at_most(towns, smtp, work):
    norte, sur = towns
    burst = citizens(norte, BURST)
    (alone,) = citizens(sur, 1)

    results = enqueue_email_verify_many(user_ids=burst, municipalities=dict.fromkeys(burst, norte.pk))
    assert all(result.created for result in results)
    assert [result.status for result in results].count("queued") == EMAIL.tenant_cap
    assert waiting(norte) == BURST - EMAIL.tenant_cap
    assert enqueue_email_verify(user_id=alone, municipality=sur.pk).status == "queued"  # Sur has room
    assert django_rq.get_queue("email").count == EMAIL.tenant_cap + 1

    work("email")

    recipients = [message["To"] for message in smtp.messages]
    assert len(recipients) == len(set(recipients)) == BURST + 1  # every one sent, once
    # Sur's job started after Norte's jobs queued before it (the cap), and those the other slots took
    # at the same moment, at most: without the cap, after the whole burst.
    queue, ids = django_rq.get_queue("email"), [f"email-verify-{pk}" for pk in [*burst, alone]]
    jobs = Job.fetch_many(ids, connection=queue.connection, serializer=queue.serializer)
    started = {job.id: job.started_at for job in jobs}
    sur_started = started.pop(f"email-verify-{alone}")
    assert sum(moment < sur_started for moment in started.values()) < EMAIL.tenant_cap + EMAIL.concurrency
    assert waiting(norte) == 0


def test_alone_a_municipality_s_jobs_wait_for_no_cap(smtp, work):
    default = Municipality.objects.get(is_default=True)
    burst = citizens(default, EMAIL.tenant_cap + 5)

    results = enqueue_email_verify_many(user_ids=burst, municipalities=dict.fromkeys(burst, default.pk))

    assert {result.status for result in results} == {"queued"}
    assert waiting(default) == 0


def test_staff_see_and_cancel_the_jobs_waiting_their_turn(towns, admin_client):
    norte, sur = towns
    burst = citizens(norte, EMAIL.tenant_cap + 3)
    enqueue_email_verify_many(user_ids=burst, municipalities=dict.fromkeys(burst, norte.pk))
    waiting_ids = [f"email-verify-{user_id}" for user_id in burst[-3:]]

    listed = admin_client.get(reverse("admin:jobs_dashboard_list", args=["email", "rate_limited"])).content.decode()
    overview = admin_client.get(reverse("admin:jobs_dashboard_overview")).content.decode()
    job_page = admin_client.get(reverse("admin:jobs_dashboard_job", args=["email", waiting_ids[0]])).content.decode()

    rows = list(dict.fromkeys(re.findall(r"email-verify-\d+", listed.split("<tbody>")[1])))
    assert rows == waiting_ids[::-1]  # newest first
    assert f'href="{reverse("admin:jobs_dashboard_list", args=["email", "rate_limited"])}">3</a>' in overview
    assert "esperando turno" in job_page
    act = "admin:jobs_dashboard_action"
    admin_client.post(reverse(act, args=["email", "cancel"]), {"job_ids": waiting_ids[:1], "confirm": "yes"})
    assert django_rq.get_queue("email").fetch_job(waiting_ids[0]).get_status() == "canceled"
    assert waiting(norte) == 2

    answer = admin_client.post(reverse(act, args=["email", "empty"]), {"confirm": "yes"}, follow=True)
    assert "Se vació la cola: se borraron 12 jobs." in answer.content.decode()  # the queued ones and the ones aside
    assert waiting(norte) == 0 and django_rq.get_queue("email").count == 0


def test_the_jobs_waiting_their_turn_count_in_the_queue_s_backlog(towns):
    norte, _sur = towns
    burst = citizens(norte, EMAIL.tenant_cap + 2)
    enqueue_email_verify_many(user_ids=burst, municipalities=dict.fromkeys(burst, norte.pk))
    key = rq_compat.rate_limited_key(tenancy.cap_key("email", norte.pk))
    connection = django_rq.get_queue("email").connection
    connection.zadd(key, dict.fromkeys(connection.zrange(key, 0, -1), time.time() - 600))  # aside for 10 min

    [backlog] = [check for check in health.queue_checks(reads.queue_stats("email")) if check.name == "email.backlog"]

    assert backlog.status == "warn"  # over the email queue's 300 s, though the queue's head is fresh
    assert int(re.search(r"(\d+) s", backlog.detail)[1]) >= 600 and f"{EMAIL.tenant_cap + 2} " in backlog.detail

"""Staff limited to one municipality (issue 23): they reach their municipality's jobs one by one and its
rows in admin, nothing of another's (a crafted POST is refused and audited), and no page over every
municipality's jobs; superusers and the default municipality's staff see everything."""

import re

import django_rq
import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from ceres_site.accounts.models import User
from ceres_site.municipalities.models import Municipality
from jobs.config.policies import QUEUES
from jobs.enqueue.producers import enqueue_email_verify
from jobs.models import JobAction
from jobs.staff.operations import jobs_delete, jobs_retry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_towns(smtp, work):
    """A verification email that failed for good in each of two municipalities."""
    norte = Municipality.objects.create(name="Villa Norte", slug="norte")
    sur = Municipality.objects.create(name="Villa Sur", slug="sur")
    smtp.rcpt_reply = "550 5.1.1 No such user here"
    users = {}
    for municipality in (norte, sur):
        email = f"vecina-{municipality.slug}@example.com"
        users[municipality.slug] = User.objects.create_user(username=email, email=email, municipality=municipality)
        enqueue_email_verify(user_id=users[municipality.slug].pk, municipality=municipality.pk)
    work()
    return norte, sur, users


def operator_of(municipality) -> Client:
    user = User.objects.create_user(username=f"operadora-{municipality.slug}", is_staff=True, municipality=municipality)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label__in=["jobs", "accounts"]))
    client = Client()
    client.force_login(user)
    return client


def dashboard(name, *args):
    return reverse(f"admin:jobs_dashboard_{name}", args=args)


def test_staff_of_one_municipality_act_on_its_jobs_alone(two_towns):
    norte, _sur, users = two_towns
    ours, theirs = f"email-verify-{users['norte'].pk}", f"email-verify-{users['sur'].pk}"
    client = operator_of(norte)
    queue = django_rq.get_queue("email")
    assert queue.fetch_job(ours).get_status() == queue.fetch_job(theirs).get_status() == "failed"

    assert client.get(dashboard("job", "email", ours)).status_code == 200
    assert client.get(dashboard("job", "email", theirs)).status_code == 404
    listed = client.get(dashboard("list", "email", "failed")).content.decode()
    assert ours in listed and theirs not in listed
    assert "Reintentar todos los fallidos" not in listed and "fallidos (1)" in listed  # theirs counted, of two
    overview = client.get(dashboard("overview")).content.decode()
    assert f'href="{dashboard("list", "email", "failed")}">1</a>' in overview
    assert "<td>0 / 0 / 1</td>" in overview  # the last hour: their one final failure
    assert overview.count('<svg class="dash-chart"') == len(QUEUES)  # their jobs' charts, per queue
    assert "Workers" not in overview and "Crons" not in overview and dashboard("health") not in overview
    everything = Client()
    everything.force_login(User.objects.create_superuser(username="raiz", password="x"))
    assert (
        f'href="{dashboard("list", "email", "failed")}">2</a>' in everything.get(dashboard("overview")).content.decode()
    )
    chosen = {"municipality": norte.pk}  # a superuser's municipality filter
    filtered = everything.get(dashboard("overview"), chosen).content.decode()
    assert f'href="{dashboard("list", "email", "failed")}?municipality={norte.pk}">1</a>' in filtered
    listed = everything.get(dashboard("list", "email", "failed"), chosen).content.decode()
    assert ours in listed and theirs not in listed and f'<option value="{norte.pk}" selected>norte</option>' in listed
    assert client.get(dashboard("health")).status_code == 403
    found = client.get(dashboard("search"), {"q": "email-verify"}).content.decode()
    assert ours in found and theirs not in found  # in Redis and in the archive, theirs alone
    triage = client.get(dashboard("triage", "email")).content.decode()
    assert "PermanentJobError" in triage and re.search(r"<td>1</td>", triage)  # their one dead letter, of two
    assert client.post(dashboard("queue_action", "email", "pause"), {"confirm": "yes"}).status_code == 403
    retry = dashboard("action", "email", "retry")
    assert client.post(retry, {"scope": "all", "state": "failed", "confirm": "yes"}).status_code == 403

    crafted = client.post(retry, {"job_ids": [ours, theirs], "confirm": "yes"})
    assert crafted.status_code == 403 and queue.fetch_job(theirs).get_status() == "failed"
    [refusal] = JobAction.objects.filter(kind=JobAction.Kind.REFUSED)
    assert [target.job_id for target in refusal.targets.all()] == [
        theirs
    ] and refusal.user.username == "operadora-norte"

    assert client.post(retry, {"job_ids": [ours], "confirm": "yes"}).status_code == 302
    assert queue.fetch_job(ours).get_status() == "queued"  # retried: its own municipality's
    assert JobAction.objects.filter(kind=JobAction.Kind.RETRY, targets__job_id=ours).exists()


def test_staff_of_one_municipality_see_its_rows_in_admin_and_superusers_every_row(two_towns, admin_client):
    norte, sur, users = two_towns
    client = operator_of(norte)

    people = client.get(reverse("admin:accounts_user_changelist")).content.decode()
    assert "vecina-norte@example.com" in people and "vecina-sur@example.com" not in people
    assert client.get(reverse("admin:accounts_user_change", args=[users["sur"].pk])).status_code == 302  # not found
    letters = client.get(reverse("admin:jobs_deadletter_changelist")).content.decode()
    assert f"email-verify-{users['norte'].pk}" in letters and f"email-verify-{users['sur'].pk}" not in letters
    root = User.objects.get(username="admin")  # admin_client's
    for slug in ("norte", "sur"):
        jobs_retry(queue_name="email", job_ids=[f"email-verify-{users[slug].pk}"], user=root, reason=f"para-{slug}")
    ours, theirs = (f"email-verify-{users[slug].pk}" for slug in ("norte", "sur"))
    jobs_delete(queue_name="email", job_ids=[theirs, ours], user=root, reason="para-ambas")
    audit = client.get(reverse("admin:jobs_jobaction_changelist")).content.decode()
    assert "para-norte" in audit and "para-sur" not in audit  # the actions on their jobs alone
    assert "para-ambas" in audit and theirs not in audit  # an action on both names their job

    everyone = admin_client.get(reverse("admin:accounts_user_changelist")).content.decode()
    assert "vecina-norte@example.com" in everyone and "vecina-sur@example.com" in everyone
    letters = admin_client.get(reverse("admin:jobs_deadletter_changelist")).content.decode()
    assert f"email-verify-{users['sur'].pk}" in letters

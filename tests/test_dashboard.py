"""The queue dashboard in admin, against real Redis with real jobs in every state."""

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import django_rq
import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rq.job import Job

from ceres_site.accounts.models import User
from ceres_site.municipalities.models import Municipality
from jobs.config.policies import QUEUES
from jobs.enqueue.producers import enqueue_stored_call
from jobs.models import DeadLetter, JobAction
from jobs.observability import health
from jobs.staff import operations
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'
DASHBOARD_PERMS = ("view_dashboard", "operate_jobs", "destroy_jobs", "view_payloads")


def call(func, job_id, queue="email", **kwargs):
    return enqueue_stored_call(queue_name=queue, func=f"tests.tasks.{func}", job_id=job_id, kwargs=kwargs)


def fetch(job_id, queue="email") -> Job | None:
    return django_rq.get_queue(queue).fetch_job(job_id)


@pytest.fixture
def jobs(policy, work):
    """Real jobs in every state a worker can leave them in (started needs a live worker: see below)."""
    policy("email", retry_max=0, alert_window=600)
    call("always_fail", "email-failed-1", message=XSS)
    call("fail_times", "email-done-1", counter="done", times=0)
    work("email")
    policy("email", retry_max=2, retry_intervals=(300,), alert_window=600)
    call("always_fail", "email-retrying-1", message="later")
    work("email")
    call("sleep", "email-waiting-1", seconds=0)
    queue = django_rq.get_queue("email")
    queue.enqueue_in(timedelta(hours=1), "tests.tasks.sleep", 0, job_id="email-later-1")
    queue.enqueue("tests.tasks.sleep", 0, job_id="email-deferred-1", depends_on="email-waiting-1")
    call("sleep", "email-canceled-1", seconds=0)
    fetch("email-canceled-1").cancel()
    return {
        "failed": "email-failed-1", "finished": "email-done-1", "retrying": "email-retrying-1", "scheduled": "email-later-1",
        "queued": "email-waiting-1", "deferred": "email-deferred-1", "canceled": "email-canceled-1",
    }  # fmt: skip


def staff(username="operator", perms=DASHBOARD_PERMS, **extra):
    user = User.objects.create_user(username=username, password="x", is_staff=True, **extra)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="jobs", codename__in=perms))
    return user


def logged_in(user, **options) -> Client:
    client = Client(**options)
    if user is not None:
        client.force_login(user)
    return client


def url(name, *args):
    return reverse(f"admin:jobs_dashboard_{name}", args=args)


# --- pages ----------------------------------------------------------------------------------


def test_overview_counts_every_state_and_warns_about_missing_workers(jobs, admin_client):
    page = admin_client.get(url("overview")).content.decode()

    for state in jobs:
        assert re.search(rf'href="{url("list", "email", state)}"[^>]*>1</a>', page), state
    assert "Ningún worker vivo atiende la cola email." in page
    assert "El scheduler de crons (rqscheduler) no está corriendo." in page
    assert "clean-verification-tokens" in page and url("health") in page


def test_the_health_checks_have_a_page_for_people_in_spanish_and_stay_english_for_monitors(admin_client):
    page = admin_client.get(url("health")).content.decode()
    report = admin_client.get("/health/jobs").json()

    assert "Chequeos de salud" in page and "ningún proceso rqscheduler dio señales de vida" in page
    assert page.index("falla") < page.index("bien")  # the worst first
    assert 'href="/health/jobs"' in page
    details = {check["name"]: check["detail"] for check in report["checks"]}
    assert details["scheduler"] == "no rqscheduler process has beaten its heart recently"
    assert details["email.workers"].endswith("in 0 processes, 0 busy")


def test_failures_stay_counted_in_their_hour_after_a_retry(admin_client, policy, work):
    policy("email", retry_max=0, alert_window=600)
    for n in range(3):
        call("always_fail", f"email-boom-{n}")
    call("sleep", "email-fine-1", seconds=0)
    work("email")

    admin_client.post(url("action", "email", "retry"), {"scope": "all", "state": "failed", "confirm": "yes"})

    assert django_rq.get_queue("email").failed_job_registry.count == 0  # retried: the registry forgot them
    assert "<td>1 / 0 / 3</td>" in admin_client.get(url("overview")).content.decode()
    checks = {check["name"]: check for check in health.health_report()["checks"]}
    assert checks["email.failures"]["detail"].startswith("3 failed, 1 finished in the last hour")


def test_charts_draw_what_the_workers_counted(admin_client, policy, work):
    policy("email", retry_max=0, alert_window=600)
    call("always_fail", "email-boom-1")
    for n in range(4):
        call("sleep", f"email-fine-{n}", seconds=0)
    work("email")

    overview = admin_client.get(url("overview")).content.decode()
    queue_page = admin_client.get(url("list", "email", "finished")).content.decode()

    assert overview.count('<svg class="dash-chart"') == len(QUEUES)  # one per queue, the last hour
    assert queue_page.count('<svg class="dash-chart"') == 2  # the last hour, the last 7 days
    minutes_chart = queue_page.split('<svg class="dash-chart"')[1]
    tooltips = re.findall(r"<title>([^<]*)</title>", minutes_chart)
    assert len(tooltips) == 60 and all(re.match(r"\d\d:\d\d · ", tooltip) for tooltip in tooltips)
    assert sum(int(n) for n in re.findall(r"(\d+) completados?", minutes_chart)) == 4
    assert sum(int(n) for n in re.findall(r"(\d+) fallidos?", minutes_chart)) == 1
    assert "espera p50 ≤ " in minutes_chart
    assert "http" not in queue_page.split('<svg class="dash-chart"')[1].split("</svg>")[0]  # nothing external


def test_every_state_lists_its_jobs(jobs, admin_client, live_worker, tmp_path):
    call("wait_until", "files-running-1", queue="files", path=str(tmp_path / "go"))
    live_worker("files")
    wait_for(lambda: fetch("files-running-1", "files").get_status() == "started", timeout=20)

    for state, job_id in {**jobs, "started": None}.items():
        queue, job_id = ("files", "files-running-1") if state == "started" else ("email", job_id)
        page = admin_client.get(url("list", queue, state)).content.decode()
        assert f'href="{url("job", queue, job_id)}"' in page, state
    overview = admin_client.get(url("overview")).content.decode()
    assert "Ningún worker vivo atiende la cola files." not in overview
    assert re.search(r'class="dash-dot on" title="[^"]+ · ocupado"', overview)  # the worker's state, in Spanish
    (tmp_path / "go").touch()  # the job ends, and the worker stops without waiting
    wait_for(lambda: fetch("files-running-1", "files").get_status() == "finished", timeout=30)


def test_lists_are_paginated_newest_first(admin_client):
    for n in range(120):
        call("sleep", f"email-bulk-{n:03d}", seconds=0)

    first = admin_client.get(url("list", "email", "queued")).content.decode()
    last = admin_client.get(url("list", "email", "queued") + "?page=3").content.decode()

    assert "Página 1 de 3 · 120 jobs" in first
    assert first.index("email-bulk-119") < first.index("email-bulk-070") and "email-bulk-069" not in first
    assert "email-bulk-019" in last and "email-bulk-000" in last and "email-bulk-020" not in last


def test_search_by_id_and_filter_by_job_name(jobs, admin_client):
    found = admin_client.get(url("list", "email", "failed") + "?q=email-failed-1").content.decode()
    by_name = admin_client.get(url("list", "email", "queued") + "?func=tests.tasks.sleep").content.decode()
    none = admin_client.get(url("list", "email", "queued") + "?func=tests.tasks.nothing").content.decode()

    assert "email-failed-1" in found
    assert "email-waiting-1" in by_name and "No hay jobs acá." in none


def test_search_finds_parts_of_ids_and_the_related_user_s_email(admin_client):
    ana = User.objects.create_user(username="ana@example.com", email="ana@example.com")
    beto = User.objects.create_user(username="beto@example.com", email="beto@example.com")
    for user in (ana, beto):
        enqueue_stored_call(queue_name="email", func="jobs.tasks.email.send_welcome_email", job_id=f"email-welcome-{user.pk}",
                            kwargs={"user_id": user.pk})  # fmt: skip
    call("sleep", "email-other-1", seconds=0)

    def found(query):
        page = admin_client.get(url("list", "email", "queued"), {"q": query}).content.decode()
        return set(
            re.findall(r'name="job_ids" value="([^"]+)"', page)
        )  # the pks depend on earlier tests: 9 and 10, say

    assert found("welcome") == {f"email-welcome-{ana.pk}", f"email-welcome-{beto.pk}"}
    assert found("ana@exam") == {f"email-welcome-{ana.pk}"}
    assert found("WELCOME-" + str(beto.pk)) == {f"email-welcome-{beto.pk}"}
    assert found("nada") == set()
    masked = logged_in(staff("no-payloads", perms=("view_dashboard",)))  # a user's email is a payload
    assert "email-welcome-" not in masked.get(url("list", "email", "queued"), {"q": "ana@exam"}).content.decode()


def test_retrying_jobs_show_their_next_attempt_and_last_error_apart_from_scheduled_ones(jobs, admin_client):
    retrying = admin_client.get(url("list", "email", "retrying")).content.decode()
    scheduled = admin_client.get(url("list", "email", "scheduled")).content.decode()

    registry = django_rq.get_queue("email").scheduled_job_registry
    when = registry.get_scheduled_time("email-retrying-1").astimezone(ZoneInfo("America/Argentina/Cordoba"))
    assert f"{when:%d/%m/%Y %H:%M:%S}</time>" in retrying
    assert "Próximo intento" in retrying and "RuntimeError" in retrying and "later" in retrying
    assert "email-retrying-1" in retrying and "email-later-1" not in retrying
    assert "email-later-1" in scheduled and "email-retrying-1" not in scheduled  # enqueued for later, not a retry
    assert "Corre el" in scheduled


def test_the_overview_warns_about_retrying_jobs_with_the_next_attempt_and_the_last_error(jobs, admin_client):
    page = admin_client.get(url("overview")).content.decode()

    registry = django_rq.get_queue("email").scheduled_job_registry
    when = registry.get_scheduled_time("email-retrying-1").astimezone(ZoneInfo("America/Argentina/Cordoba"))
    warning = f"1 job de email falló y espera otro intento; el próximo a las {when:%H:%M:%S}, último error: RuntimeError: later."
    assert warning in page
    assert 'class="dash-retrying">1</a>' in page  # the count, marked
    assert "<td>1 / 1 / 1</td>" in page  # done / retried / failed in the last hour


def test_the_job_page_of_a_retrying_job_says_when_it_runs_again(jobs, admin_client):
    page = admin_client.get(url("job", "email", "email-retrying-1")).content.decode()

    registry = django_rq.get_queue("email").scheduled_job_registry
    when = registry.get_scheduled_time("email-retrying-1").astimezone(ZoneInfo("America/Argentina/Cordoba"))
    assert "<strong>reintentando</strong>" in page
    assert re.search(rf"Próximo intento</th><td><strong><time[^>]*>{when:%d/%m/%Y %H:%M:%S}</time></strong>", page)
    assert "último error: RuntimeError: later" in page and re.search(r"</strong> \(en \d+", page)


def test_retrying_is_a_metric_and_a_chart_series(jobs, admin_client):
    metrics = admin_client.get("/metrics").content.decode()

    assert 'ceres_jobs{queue="email",state="retrying"} 1.0' in metrics
    assert 'ceres_jobs{queue="email",state="scheduled"} 1.0' in metrics  # the retry is not counted twice
    assert 'ceres_job_retries_total{queue="email"} 1.0' in metrics
    chart = admin_client.get(url("list", "email", "retrying")).content.decode().split('<svg class="dash-chart"')[1]
    assert sum(int(n) for n in re.findall(r"(\d+) reintentados?", chart)) == 1
    assert "1 min</text>" in chart and "1 ms</text>" in chart  # the wait lines' scale

    operations.jobs_promote(queue_name="email", job_ids=["email-retrying-1"], user=None, reason="")
    assert 'ceres_jobs{queue="email",state="retrying"} 0.0' in admin_client.get("/metrics").content.decode()


def test_list_actions_need_a_selection_and_the_list_has_a_select_all_box(jobs, admin_client):
    page = admin_client.get(url("list", "email", "queued")).content.decode()
    assert 'id="select-all"' in page
    assert "Vaciar la cola seleccionados" not in page and "Vaciar la cola</button>" in page

    answer = admin_client.post(url("action", "email", "cancel"), {"next": url("list", "email", "queued")}, follow=True)

    assert (
        "Primero elegí al menos un job." in answer.content.decode() and "van a cambiar 0" not in answer.content.decode()
    )
    assert fetch("email-waiting-1").get_status() == "queued"


def test_job_detail_shows_why_it_failed_and_the_related_user(admin_client, policy, work):
    policy("email", retry_max=0)
    user = User.objects.create_user(username="ana@example.com", email="bad address")
    from jobs.enqueue.producers import enqueue_email_verify

    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    work("email")

    page = admin_client.get(url("job", "email", f"email-verify-{user.pk}")).content.decode()

    assert "PermanentJobError" in page and f"el usuario {user.pk} tiene una dirección de email inválida" in page
    assert reverse("admin:accounts_user_change", args=[user.pk]) in page
    assert reverse("admin:jobs_deadletter_change", args=[DeadLetter.objects.get().pk]) in page
    assert f"user_id={user.pk}" in page


def test_payloads_and_error_details_are_masked_without_the_permission(jobs):
    viewer = logged_in(staff(perms=("view_dashboard",)))
    reader = logged_in(staff("reader", perms=("view_dashboard", "view_payloads")))

    masked = viewer.get(url("job", "email", "email-failed-1")).content.decode()
    shown = reader.get(url("job", "email", "email-failed-1")).content.decode()

    assert "message=•••" in masked and "alert(" not in masked and "Traceback" not in masked
    assert "message=&lt;script&gt;" in shown and "Traceback (most recent call last)" in shown


def test_the_dead_letter_archive_masks_payloads_and_the_related_id_too(smtp, work):
    user = User.objects.create_user(username="bad", email="not-an-address", first_name="Ana")
    enqueue_stored_call(queue_name="email", func="jobs.tasks.email.send_verify_email", job_id=f"email-verify-{user.pk}",
                        kwargs={"user_id": user.pk})  # fmt: skip
    work("email")
    dead = DeadLetter.objects.get()
    perms = ("view_dashboard", "view_deadletter")
    viewer, reader = logged_in(staff(perms=perms)), logged_in(staff("reader", perms=(*perms, "view_payloads")))
    archive = reverse("admin:jobs_deadletter_change", args=[dead.pk])

    masked, shown = viewer.get(archive).content.decode(), reader.get(archive).content.decode()
    job_masked = viewer.get(url("job", "email", dead.job_id)).content.decode()

    assert "dirección de email inválida" in shown and f"{user.pk}" in shown
    assert "dirección de email inválida" not in masked and "user_id" not in masked and "Traceback" not in masked
    assert reverse("admin:accounts_user_change", args=[user.pk]) not in masked + job_masked


def test_everything_from_redis_is_escaped(jobs, admin_client):
    for page in (url("list", "email", "failed"), url("job", "email", "email-failed-1"), url("triage", "email")):
        body = admin_client.get(page).content.decode()
        assert "<script>alert" not in body and "<img src=x" not in body, page
    body = admin_client.get(url("job", "email", "email-failed-1")).content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body


def test_user_names_are_escaped_on_the_user_page(admin_client):
    user = User.objects.create_user(username="x@example.com", email="x@example.com", first_name=XSS[:100])

    body = admin_client.get(reverse("admin:accounts_user_change", args=[user.pk])).content.decode()

    assert "<script>alert" not in body


def test_the_user_page_lists_the_user_s_jobs(admin_client):
    user = User.objects.create_user(username="x@example.com", email="x@example.com")
    from jobs.enqueue.producers import enqueue_email_verify

    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)

    body = admin_client.get(reverse("admin:accounts_user_change", args=[user.pk])).content.decode()

    assert f'<a href="{url("job", "email", f"email-verify-{user.pk}")}">email-verify-{user.pk}</a></td>' in body
    assert "<td>en cola</td>" in body  # its state's label
    assert f"email-welcome-{user.pk}</a>: no está en Redis" in body


def test_pages_are_not_cached_nor_framed(admin_client):
    response = admin_client.get(url("overview"))

    assert response["X-Frame-Options"] == "DENY"
    assert "no-cache" in response["Cache-Control"] and "no-store" in response["Cache-Control"]


# --- actions --------------------------------------------------------------------------------


def confirm(client, action, queue="email", **data):
    """The two steps of every action: the confirmation page, then `confirm=yes`."""
    back = url("list", queue, "failed")
    first = client.post(url("action", queue, action), {"next": back, **data})
    assert first.status_code == 200 and "Sí, estoy seguro" in first.content.decode()
    second = client.post(url("action", queue, action), {"next": back, "confirm": "yes", "reason": "SMTP fixed", **data})
    assert second.status_code == 302 and second["Location"] == back
    return first


def test_retry_selected_asks_first_then_gives_a_full_retry_budget_and_is_audited(jobs, admin_client):
    page = confirm(admin_client, "retry", job_ids=["email-failed-1"]).content.decode()

    assert "email-failed-1" in page
    retried = fetch("email-failed-1")
    assert retried.get_status() == "queued" and retried.retries_left == 2
    action = JobAction.objects.get()
    assert (action.kind, action.count, action.reason, action.user.username) == ("retry", 1, "SMTP fixed", "admin")
    detail = admin_client.get(url("job", "email", "email-failed-1")).content.decode()
    assert "SMTP fixed" in detail and "reintentar" in detail
    assert DeadLetter.objects.get(job_id="email-failed-1").retried_at is not None


def test_the_audit_trail_names_the_job_it_acted_on_and_no_count_for_queue_actions(jobs, admin_client):
    confirm(admin_client, "retry", job_ids=["email-failed-1"])
    confirm(admin_client, "delete", job_ids=["email-done-1", "email-later-1", "email-canceled-1"])
    operations.queue_pause(queue_name="email", by="admin")

    rows = admin_client.get(reverse("admin:jobs_jobaction_changelist")).content.decode()

    assert f'<a href="{url("job", "email", "email-failed-1")}">email-failed-1</a>' in rows
    assert re.search(r'">email-(done|later|canceled)-1</a> y 2 más<', rows)  # the first, and how many more
    assert re.search(r'<td class="field-jobs">—</td>', rows)  # a pause acts on the queue, not on jobs


def test_a_crafted_post_cannot_act_on_another_queue_s_job(jobs, admin_client):
    admin_client.post(url("action", "files", "retry"), {"job_ids": ["email-failed-1"], "confirm": "yes", "reason": "x"})
    admin_client.post(
        url("action", "files", "promote"), {"job_ids": ["email-retrying-1"], "confirm": "yes", "reason": "x"}
    )

    assert fetch("email-failed-1").get_status() == "failed"
    assert fetch("email-retrying-1").get_status() == "scheduled"
    assert django_rq.get_queue("files").job_ids == []


def test_the_confirmation_page_changes_nothing(jobs, admin_client):
    admin_client.post(url("action", "email", "delete"), {"job_ids": list(jobs.values())})

    assert all(fetch(job_id) for job_id in jobs.values())
    assert JobAction.objects.count() == 0


def test_delete_promote_cancel_empty_and_retry_all(jobs, admin_client, policy, work):
    confirm(admin_client, "promote", job_ids=["email-retrying-1"])
    assert fetch("email-retrying-1").get_status() == "queued"

    confirm(admin_client, "cancel", job_ids=["email-waiting-1"])
    assert fetch("email-waiting-1").get_status() == "canceled"

    confirm(admin_client, "delete", job_ids=["email-done-1"])
    assert fetch("email-done-1") is None

    confirm(admin_client, "empty", scope="all", state="queued")
    assert django_rq.get_queue("email").count == 0

    policy("email", retry_max=0)
    for n in range(3):
        call("always_fail", f"email-more-{n}")
    work("email")
    confirm(admin_client, "retry", scope="all", state="failed")
    assert sorted(django_rq.get_queue("email").job_ids) == [
        "email-failed-1",
        "email-more-0",
        "email-more-1",
        "email-more-2",
    ]
    assert list(JobAction.objects.order_by("at").values_list("kind", "count")) == [
        ("promote", 1), ("cancel", 1), ("delete", 1), ("empty", 1), ("retry", 4)
    ]  # fmt: skip


def test_triage_groups_by_error_and_retries_a_filtered_set_after_a_dry_run(admin_client, policy, work):
    policy("email", retry_max=0, alert_window=600)
    for n in range(3):
        call("always_fail", f"email-boom-{n}")
    call("exhaust_memory", "email-oom-1")
    work("email")

    page = admin_client.get(url("triage", "email")).content.decode()
    dry = admin_client.post(url("triage", "email"), {"exc_type": "RuntimeError", "since": "2000-01-01 00:00"})
    done = admin_client.post(
        url("triage", "email"), {"exc_type": "RuntimeError", "since": "2000-01-01", "confirm": "yes"}
    )

    assert "RuntimeError" in page and "MemoryError" in page
    assert "Coinciden 3 jobs." in dry.content.decode()
    assert done.status_code == 302
    assert sorted(django_rq.get_queue("email").job_ids) == ["email-boom-0", "email-boom-1", "email-boom-2"]
    assert JobAction.objects.get().detail == "fallas por error: RuntimeError desde 01/01/2000 00:00"


def test_triage_retries_what_can_run_again_and_names_what_cannot(admin_client, policy, work):
    policy("email", retry_max=0, alert_window=600)
    enqueue_stored_call(queue_name="email", func="tests.tasks.always_fail", job_id="email-args-1", kwargs={},
                        args=["with a positional argument"])  # fmt: skip
    enqueue_stored_call(queue_name="email", func="tests.tasks.always_fail", job_id="email-secret-1",
                        kwargs={"api_token": "s3cr3t"})  # fmt: skip
    DeadLetter.objects.create(
        job_id="bad:id",
        job_created_at=timezone.now(),
        queue="email",
        exc_type="RuntimeError",
        failed_at=timezone.now(),
        alert=DeadLetter.Alert.SKIPPED,
    )  # an unreadable job's row
    work("email")

    done = admin_client.post(url("triage", "email"), {"confirm": "yes"}, follow=True)  # every open failure

    assert done.status_code == 200
    page = done.content.decode()
    assert (
        "No se puede volver a encolar email-secret-1 porque sus argumentos se ocultaron al archivarlo." in page
        and "No se puede volver a encolar bad:id porque el job no se pudo leer" in page
    )
    assert django_rq.get_queue("email").job_ids == ["email-args-1"]
    assert fetch("email-args-1").args == ["with a positional argument"]  # kept by the archive, given back
    action = JobAction.objects.get()  # the audit names what was retried
    assert action.count == 1 and [target.job_id for target in action.targets.all()] == ["email-args-1"]


# --- permissions ------------------------------------------------------------------------------


def dashboard_routes() -> list[str]:
    """Every URL of the dashboard, found by walking the URL resolver (not a hand-written list)."""
    found = []

    def walk(patterns, prefix):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern) and (entry.name or "").startswith("jobs_dashboard_"):
                found.append(prefix + str(entry.pattern))

    walk(get_resolver().url_patterns, "/")
    return list(dict.fromkeys(found))  # the overview has two names (admin's index links "changelist")


SAMPLE = {"<str:queue_name>": "email", "<str:state>": "failed", "<str:job_id>": "email-failed-1", "<str:name>": "retry"}


def concrete(route: str) -> str:
    route = route.replace("/queue/<str:name>/", "/queue/pause/")  # queue actions: pause, resume, clean
    for placeholder, value in SAMPLE.items():
        route = route.replace(placeholder, value)
    return route


def redis_state(connection) -> dict:
    return {key: (connection.type(key), connection.hget(key, "status") if connection.type(key) == b"hash" else None)
            for key in connection.keys("*")}  # fmt: skip


def test_the_resolver_finds_every_dashboard_page():
    assert len(dashboard_routes()) == 8


@pytest.mark.parametrize(
    "who",
    ["anonymous", "not staff", "staff without permission", "staff with permission", "staff of one municipality",
     "superuser"],
)  # fmt: skip
def test_permission_matrix(jobs, redis_conn, who):
    user = {
        "anonymous": lambda: None,
        "not staff": lambda: User.objects.create_user(username="citizen", password="x"),
        "staff without permission": lambda: staff(perms=()),
        "staff with permission": lambda: staff(),
        # Every permission, but of a municipality other than the default: these jobs name none.
        "staff of one municipality": lambda: staff(
            municipality=Municipality.objects.create(name="Norte", slug="norte")
        ),
        "superuser": lambda: User.objects.create_superuser(username="root", password="x"),
    }[who]()
    client = logged_in(user)
    allowed = who in ("staff with permission", "superuser")
    before, actions_before = redis_state(redis_conn), JobAction.objects.count()

    for route in dashboard_routes():
        path, post_only = concrete(route), "/action/" in route or "/queue/" in route
        get, post = client.get(path), client.post(path, {"job_ids": ["email-failed-1"]})
        if who in ("anonymous", "not staff"):
            assert get.status_code == post.status_code == 302 and "/admin/login/" in get["Location"], path
        elif who == "staff of one municipality":  # their jobs' overview and lists; another's job: not found
            detail, listing = "/job/" in route, route.endswith("<str:queue_name>/<str:state>/")
            theirs = listing or route.endswith(("/dashboard/", "/search/"))  # among their municipality's jobs
            triage = "/triage/" in route  # their dead letters
            assert get.status_code == (404 if detail else 200 if theirs or triage else 302 if "/action/" in route
                                       else 403), path  # fmt: skip
            assert post.status_code == (405 if detail or theirs else 200 if triage else 403), path
        elif not allowed:
            assert get.status_code == post.status_code == 403, path
        else:
            assert get.status_code == (302 if post_only else 200), path
            if post_only:  # a change's address opened directly: the queue's page, not a bare 405
                assert get["Location"] == url("list", "email", "queued"), path
            assert post.status_code == (200 if post_only or "/triage/" in route else 405), path

    assert redis_state(redis_conn) == before  # nothing changed: GETs never do, POSTs stop at a confirmation
    refused = JobAction.objects.filter(kind=JobAction.Kind.REFUSED)
    if who == "staff of one municipality":  # the crafted POST is audited, with the job it named
        assert [target.job_id for action in refused for target in action.targets.all()] == ["email-failed-1"]
    assert JobAction.objects.count() - refused.count() == actions_before


def test_staff_without_operate_permission_gets_403_on_the_action_itself(jobs):
    viewer = logged_in(staff(perms=("view_dashboard",)))

    response = viewer.post(url("action", "email", "retry"), {"job_ids": ["email-failed-1"], "confirm": "yes"})
    triage = viewer.post(url("triage", "email"), {"exc_type": "RuntimeError", "confirm": "yes"})

    assert response.status_code == triage.status_code == 403
    assert fetch("email-failed-1").get_status() == "failed"


def test_operators_cannot_destroy(jobs):
    operator = logged_in(staff(perms=("view_dashboard", "operate_jobs")))

    response = operator.post(url("action", "email", "delete"), {"job_ids": ["email-failed-1"], "confirm": "yes"})

    assert response.status_code == 403 and fetch("email-failed-1") is not None


def test_csrf_is_enforced_on_every_post(jobs):
    client = logged_in(User.objects.create_superuser(username="root", password="x"), enforce_csrf_checks=True)

    for route in dashboard_routes():
        response = client.post(concrete(route), {"job_ids": ["email-failed-1"], "confirm": "yes"})
        assert response.status_code == 403, route
    assert fetch("email-failed-1").get_status() == "failed"


def test_an_outside_next_url_is_not_followed(jobs, admin_client):
    response = admin_client.post(
        url("action", "email", "retry"),
        {"job_ids": ["email-failed-1"], "confirm": "yes", "next": "https://evil.example/"},
    )

    assert response["Location"] == url("overview")


def test_overview_knows_when_the_scheduler_runs(admin_client):
    scheduler = django_rq.get_scheduler("maintenance")
    scheduler.heartbeat()

    page = admin_client.get(url("overview")).content.decode()

    assert "scheduler corriendo" in page and "rqscheduler) no está corriendo" not in page
    scheduler.register_death()
    assert "scheduler caído" in admin_client.get(url("overview")).content.decode()


def test_the_dashboard_is_in_english_when_asked(admin_client):
    page = admin_client.get(url("overview"), headers={"accept-language": "en"}).content.decode()

    assert "No live worker listens on email." in page and "Ningún worker" not in page


def test_the_dashboard_is_a_link_on_the_admin_index_the_app_page_and_the_sidebar(admin_client):
    link = f'<a href="{url("overview")}"'
    for page in (
        reverse("admin:index"),
        reverse("admin:app_list", args=["jobs"]),
        reverse("admin:jobs_deadletter_changelist"),
    ):
        html = admin_client.get(page).content.decode()
        assert link in html and "Panel de colas</a>" in html, page
    staff_without = logged_in(staff("reader", perms=()))
    assert link not in staff_without.get(reverse("admin:index")).content.decode()


def test_staff_read_spanish_states_plurals_dates_and_results(jobs, admin_client, policy, smtp, work):
    policy("email", retry_max=1, retry_intervals=(1,))
    policy("slack", retry_max=2)
    overview = admin_client.get(url("overview")).content.decode()
    for label in ("en cola", "en curso", "programados", "completados", "fallidos", "cancelados"):
        assert f"<th>{label}</th>" in overview, label
    assert "1 reintento<" in overview and "2 reintentos<" in overview and "1 reintentos" not in overview

    one = admin_client.post(url("action", "email", "cancel"), {"job_ids": ["email-waiting-1"]}).content.decode()
    two = admin_client.post(
        url("action", "email", "delete"), {"job_ids": ["email-waiting-1", "email-done-1"]}
    ).content.decode()
    assert "va a cambiar 1 job de la cola email." in one and "van a cambiar 2 jobs de la cola email." in two

    detail = admin_client.get(url("job", "email", "email-failed-1")).content.decode()
    assert "<strong>fallido</strong>" in detail
    assert re.search(r'<time datetime="[^"]+" title="[^"]+ UTC">\d\d/\d\d/\d{4} \d\d:\d\d:\d\d</time>', detail)

    archive = admin_client.get(reverse("admin:jobs_deadletter_changelist")).content.decode()
    for column in ("Error", "Fecha de la falla", "Alerta"):  # "Error": type and message, for who may see them
        assert f">{column}</a>" in archive, column
    assert "Exc type" not in archive and "Job id" not in archive
    assert re.search(r' UTC">\d\d/\d\d/\d{4} \d\d:\d\d:\d\d</time>', archive)  # as in the dashboard, UTC on hover

    user = User.objects.create_user(username="ana@example.com", email="ana@example.com", first_name="Ana")
    enqueue_stored_call(queue_name="email", func="jobs.tasks.email.send_verify_email", job_id=f"email-verify-{user.pk}",
                        kwargs={"user_id": user.pk})  # fmt: skip
    work("email")
    sent = admin_client.get(url("job", "email", f"email-verify-{user.pk}")).content.decode()
    assert f"enviado: email de verificación al usuario {user.pk}" in sent and "<strong>completado</strong>" in sent


def pause_from_the_dashboard(client, queue_name, action="pause"):
    confirm = client.post(url("queue_action", queue_name, action))
    assert confirm.status_code == 200 and 'name="confirm" value="yes"' in confirm.content.decode()
    return client.post(url("queue_action", queue_name, action), {"confirm": "yes", "reason": "probando"})


@pytest.mark.slow
@pytest.mark.parametrize("paused_queue,other_queue", [("email", "slack"), ("files", "maintenance")])
def test_a_paused_queue_keeps_its_jobs_waiting_until_resumed(paused_queue, other_queue, live_worker, tmp_path):
    """In-process (email) and forking (files) workers; the pause outlives a worker start."""
    operator = staff(perms=("view_dashboard", "operate_jobs"))
    client = logged_in(operator)
    pause_from_the_dashboard(client, paused_queue)
    call("mark", f"{paused_queue}-waits-1", queue=paused_queue, n=1, path=str(tmp_path / "paused"))
    call("mark", f"{other_queue}-runs-1", queue=other_queue, n=2, path=str(tmp_path / "other"))

    live_worker(paused_queue, other_queue)

    wait_for(lambda: fetch(f"{other_queue}-runs-1", other_queue).get_status() == "finished", timeout=60)
    assert (
        fetch(f"{paused_queue}-waits-1", paused_queue).get_status() == "queued" and not (tmp_path / "paused").exists()
    )
    overview = client.get(url("overview")).content.decode()
    assert (
        f"La cola {paused_queue} está pausada (por operator, desde el" in overview and "Reanudar</button>" in overview
    )
    checks = {check["name"]: check for check in health.health_report()["checks"]}
    assert (
        checks[f"{paused_queue}.paused"]["status"] == "warn"
        and "by operator" in checks[f"{paused_queue}.paused"]["detail"]
    )

    pause_from_the_dashboard(client, paused_queue, "resume")

    wait_for(lambda: fetch(f"{paused_queue}-waits-1", paused_queue).get_status() == "finished", timeout=60)
    kinds = list(
        JobAction.objects.filter(queue=paused_queue).order_by("at").values_list("kind", "user__username", "reason")
    )
    assert kinds == [("pause", "operator", "probando"), ("resume", "operator", "probando")]


def test_the_queues_command_pauses_and_resumes(capsys, work, tmp_path):
    call_command("queues", "pause", "email", "--reason", "mantenimiento del SMTP")
    call("mark", "email-waits-1", n=1, path=str(tmp_path / "ran"))
    work("email")
    assert fetch("email-waits-1").get_status() == "queued"
    call_command("queues", "status")
    call_command("queues", "pause", "email")
    call_command("queues", "resume", "email")
    work("email")

    assert fetch("email-waits-1").get_status() == "finished"
    out = capsys.readouterr().out
    assert (
        "email: paused\n" in out
        and "email: paused since" in out
        and "email: already paused" in out
        and "email: resumed" in out
    )
    with pytest.raises(CommandError, match="name the queue to pause"):
        call_command("queues", "pause")


def test_cleaning_deletes_old_ended_jobs_after_showing_how_many(jobs, redis_conn):
    old = (timezone.now() - timezone.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    redis_conn.hset(Job.key_for("email-done-1"), "ended_at", old)
    destroyer = logged_in(staff(perms=("view_dashboard", "destroy_jobs")))
    page = destroyer.get(url("list", "email", "finished")).content.decode()
    ages = re.findall(r'<option value="(\w+)"[^>]*>([^<]+)</option>', page[page.index('name="age"') :])
    assert [key for key, _ in ages[:5]] == ["10m", "30m", "1h", "6h", "12h"]  # all shorter than what is kept
    assert "Los jobs completados quedan 1\xa0hora y los fallidos 1\xa0día: los más viejos ya no están." in page
    bulk = destroyer.get(url("list", "bulk", "finished")).content.decode()
    assert "Los jobs completados no se guardan; los fallidos quedan 1\xa0día." in bulk
    form = {"states": ["finished", "failed"], "age": "12h"}

    confirm = destroyer.post(url("queue_action", "email", "clean"), form).content.decode()
    assert "1 job de email (completados, fallidos) terminó antes del" in confirm
    assert fetch("email-done-1") is not None  # only counted so far
    operator = logged_in(staff("operator2", perms=("view_dashboard", "operate_jobs")))
    assert operator.post(url("queue_action", "email", "clean"), {**form, "confirm": "yes"}).status_code == 403

    done = destroyer.post(
        url("queue_action", "email", "clean"), {**form, "confirm": "yes"}, follow=True
    ).content.decode()

    assert "Se borró 1 job viejo." in done
    assert fetch("email-done-1") is None and fetch("email-failed-1").get_status() == "failed"
    action = JobAction.objects.get(kind="clean")
    assert [target.job_id for target in action.targets.all()] == ["email-done-1"] and action.count == 1


@pytest.mark.slow
@pytest.mark.parametrize("queue_name", ["email", "files"])  # a thread of the in-process worker, a work-horse
def test_a_running_job_shows_its_progress_and_its_last_log_lines(queue_name, live_worker, admin_client, tmp_path):
    call("report_progress", f"{queue_name}-long-1", queue=queue_name, lines=250, path=str(tmp_path / "go"))
    live_worker(queue_name)
    wait_for(
        lambda: (fetch(f"{queue_name}-long-1", queue_name).meta.get("progress") or {}).get("percent") == 50, timeout=60
    )

    page = admin_client.get(url("job", queue_name, f"{queue_name}-long-1")).content.decode()
    masked = logged_in(staff("no-payloads", perms=("view_dashboard",))).get(
        url("job", queue_name, f"{queue_name}-long-1")
    )

    assert '<progress max="100" value="50"></progress> 50 % mitad del camino' in page
    assert "Registro (las últimas 200 líneas)" in page and "  line 249\n" in page and "  line 49\n" not in page
    assert "mitad del camino" in masked.content.decode() and "line 249" not in masked.content.decode()
    (tmp_path / "go").touch()
    wait_for(lambda: fetch(f"{queue_name}-long-1", queue_name).get_status() == "finished", timeout=60)
    assert fetch(f"{queue_name}-long-1", queue_name).meta["progress"]["percent"] == 100


def test_a_paused_queue_is_marked_with_a_drawn_sign_not_a_glyph_fonts_lack(admin_client, admin_user):
    operations.queue_pause(queue_name="files", user=admin_user, by="admin", reason="")

    for page in (url("overview"), url("list", "files", "queued")):
        shown = admin_client.get(page).content.decode()
        assert 'class="dash-pause-mark"' in shown and "⏸" not in shown, page

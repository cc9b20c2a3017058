"""The archive's retry asks as the dashboard's does and then tells how it ended; one search finds a
job or a person's story in every queue, every state and the archive (issue 21, items 2 and 3)."""

import django_rq
import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from ceres_site.accounts.models import Upload, User
from jobs.enqueue.producers import enqueue_email_cv_rejected, enqueue_stored_call, enqueue_validate_cv
from jobs.models import DeadLetter, JobAction
from jobs.observability import search

pytestmark = pytest.mark.django_db(transaction=True)


def call(func, job_id, queue="email", **kwargs):
    return enqueue_stored_call(queue_name=queue, func=f"tests.tasks.{func}", job_id=job_id, kwargs=kwargs)


def fetch(job_id, queue="email"):
    return django_rq.get_queue(queue).fetch_job(job_id)


def staff(username, *perms):
    user = User.objects.create_user(username=username, password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="jobs", codename__in=perms))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def dead(policy, work):
    """A job that failed for good once and succeeds when run again."""
    policy("email", retry_max=0, alert_window=600)
    call("fail_times", "email-late-1", counter="late", times=1)
    work("email")
    return DeadLetter.objects.get(job_id="email-late-1")


def archive_page(client, row=None) -> str:
    path = (
        reverse("admin:jobs_deadletter_change", args=[row.pk]) if row else reverse("admin:jobs_deadletter_changelist")
    )
    return client.get(path).content.decode()


# --- the archive's retry ---------------------------------------------------------------------------


def test_the_row_s_retry_asks_for_a_reason_first_then_retries_audited(dead, admin_client, work):
    retry, change = (
        reverse("admin:jobs_deadletter_retry", args=[dead.pk]),
        reverse("admin:jobs_deadletter_change", args=[dead.pk]),
    )

    asked = admin_client.post(retry).content.decode()
    unexplained = admin_client.post(retry, {"confirm": "yes", "reason": "  "}).content.decode()

    assert "Sí, estoy seguro" in asked and "<code>email-late-1</code>" in asked
    assert 'name="reason" size="60" maxlength="300" required' in asked and "Motivo (opcional)" not in asked
    assert 'id="live-toggle"' not in asked  # a live refresh would GET this address and swap the question away
    assert "Decí por qué reintentás" in unexplained and "Sí, estoy seguro" in unexplained
    assert fetch("email-late-1").get_status() == "failed" and not JobAction.objects.exists()  # nothing yet
    assert admin_client.get(retry)["Location"] == change  # a reload of the address: back to the row

    done = admin_client.post(retry, {"confirm": "yes", "reason": "SMTP fixed"})

    assert done.status_code == 302 and done["Location"] == change
    assert fetch("email-late-1").get_status() == "queued"
    action = JobAction.objects.get()
    assert (action.kind, action.queue, action.reason, action.user.username) == ("retry", "email", "SMTP fixed", "admin")
    assert f"#{dead.pk}" in action.detail and [t.job_id for t in action.targets.all()] == ["email-late-1"]
    job_page = reverse("admin:jobs_dashboard_job", args=["email", "email-late-1"])
    assert f'<a href="{job_page}" class="dash-outcome-waiting">esperando</a>' in archive_page(admin_client)

    work("email")

    sent = f'<a href="{job_page}" class="dash-outcome-sent">enviado</a>'
    assert sent in archive_page(admin_client) and sent in archive_page(admin_client, dead)


def test_the_list_action_asks_first_and_names_every_queue_in_the_audit(policy, work, admin_client):
    policy("email", retry_max=0, alert_window=600)
    policy("files", retry_max=0, alert_window=600)
    call("always_fail", "email-a-1")
    call("always_fail", "files-b-1", queue="files")
    work("email")
    work("files")
    rows = list(DeadLetter.objects.order_by("queue"))
    changelist = reverse("admin:jobs_deadletter_changelist")
    selection = {"action": "retry", "_selected_action": [row.pk for row in rows]}

    asked = admin_client.post(changelist, selection).content.decode()

    assert "Sí, estoy seguro" in asked and "email, files" in asked and "files-b-1" in asked
    assert not JobAction.objects.exists() and fetch("email-a-1").get_status() == "failed"

    done = admin_client.post(changelist, {**selection, "confirm": "yes", "reason": "deploy fixed it"}, follow=True)

    assert "Se volvió a encolar email-a-1." in done.content.decode()
    assert fetch("email-a-1").get_status() == fetch("files-b-1", "files").get_status() == "queued"
    audit = {action.queue: action for action in JobAction.objects.all()}
    assert set(audit) == {"email", "files"} and {a.reason for a in audit.values()} == {"deploy fixed it"}
    assert f"#{rows[1].pk}" in audit["files"].detail and audit["files"].targets.get().job_id == "files-b-1"


def test_a_retry_that_fails_again_says_so_and_links_the_new_failure(policy, work, admin_client):
    policy("email", retry_max=0, alert_window=600)
    call("always_fail", "email-again-1")
    work("email")
    first = DeadLetter.objects.get()
    admin_client.post(reverse("admin:jobs_deadletter_retry", args=[first.pk]), {"confirm": "yes", "reason": "try"})

    work("email")

    second = DeadLetter.objects.exclude(pk=first.pk).get()
    page = archive_page(admin_client, first)
    assert "dash-outcome-failed" in page and ">falló de nuevo</a>" in page
    assert reverse("admin:jobs_deadletter_change", args=[second.pk]) in page


def test_a_retry_redis_forgot_still_tells_the_truth(dead, admin_client, work):
    admin_client.post(reverse("admin:jobs_deadletter_retry", args=[dead.pk]), {"confirm": "yes", "reason": "go"})
    work("email")
    fetch("email-late-1").delete()  # what result_ttl does after an hour

    assert "no volvió a fallar (Redis ya no lo tiene)" in archive_page(admin_client)

    call("sleep", "email-late-1", seconds=0)  # a later run of the same id is not the retry's
    assert "no volvió a fallar" in archive_page(admin_client) and "esperando" not in archive_page(admin_client)


def test_a_retry_from_the_dashboard_shows_its_outcome_in_the_archive_too(dead, admin_client, work):
    action = reverse("admin:jobs_dashboard_action", args=["email", "retry"])
    admin_client.post(action, {"job_ids": ["email-late-1"], "confirm": "yes", "reason": "from the job page"})

    assert "dash-outcome-waiting" in archive_page(admin_client)
    work("email")
    assert "dash-outcome-sent" in archive_page(admin_client)


def test_the_archive_s_retry_needs_its_permission_and_csrf(dead):
    viewer = staff("viewer", "view_deadletter", "view_dashboard", "operate_jobs")
    retry = reverse("admin:jobs_deadletter_retry", args=[dead.pk])

    assert viewer.post(retry).status_code == 403
    assert viewer.post(retry, {"confirm": "yes", "reason": "x"}).status_code == 403
    viewer.post(reverse("admin:jobs_deadletter_changelist"),
                {"action": "retry", "_selected_action": [dead.pk], "confirm": "yes", "reason": "x"})  # fmt: skip
    root = Client(enforce_csrf_checks=True)
    root.force_login(User.objects.create_superuser(username="root", password="x"))
    assert root.post(retry, {"confirm": "yes", "reason": "x"}).status_code == 403

    assert fetch("email-late-1").get_status() == "failed" and not JobAction.objects.exists()


# --- one search across everything --------------------------------------------------------------


@pytest.fixture
def story(policy, work, settings):
    """Ana's CV was rejected and the email telling her failed for good (her address is bad); her next
    CV waits to be checked. Another person's job fails with the same error, in another queue."""
    policy("email", retry_max=0, alert_window=600)
    policy("files", retry_max=2, retry_intervals=(300,), alert_window=600)
    ana = User.objects.create_user(username="ana", email="ana@example")
    rejected = Upload.objects.create(user=ana, kind="cv", file="cv/a.pdf", state="rejected", reason="not a PDF")
    enqueue_email_cv_rejected(upload_id=rejected.pk, municipality=rejected.user.municipality_id)
    work("email")
    call("always_fail", "files-other-1", queue="files", message="disk full")
    work("files")  # fails once, waits 300 s for its retry: scheduled
    waiting = Upload.objects.create(user=ana, kind="cv", file="cv/b.pdf")
    enqueue_validate_cv(upload_id=waiting.pk, municipality=waiting.user.municipality_id)
    call("fail_times", "email-fine-1", counter="fine", times=0)
    work("email")
    return {"user": ana, "cv_email": f"email-cv-{rejected.pk}", "check": f"files-cv-{waiting.pk}"}


def found_ids(client, text) -> str:
    return client.get(reverse("admin:jobs_dashboard_search"), {"q": text}).content.decode()


def test_search_finds_a_person_s_story_by_their_email_in_every_queue_and_the_archive(story, admin_client):
    page = found_ids(admin_client, "ana@exa")

    assert story["cv_email"] in page and story["check"] in page  # the upload's jobs: no user_id in them
    assert "solo en el archivo" not in page  # the CV email's run is still in Redis, with its dead letter
    dead = DeadLetter.objects.get(job_id=story["cv_email"])
    assert reverse("admin:jobs_deadletter_change", args=[dead.pk]) in page
    assert "email-fine-1" not in page and "files-other-1" not in page
    assert "2 jobs encontrados" in page

    django_rq.get_queue("email").fetch_job(story["cv_email"]).delete()  # a day later Redis forgot it
    assert "solo en el archivo" in found_ids(admin_client, "ana@exa")


def test_search_by_id_part_and_by_error_across_queues_and_states(story, admin_client):
    by_id = found_ids(admin_client, "-cv-")
    by_error = found_ids(admin_client, "disk full")
    by_type = found_ids(admin_client, "PermanentJobError")

    assert story["cv_email"] in by_id and story["check"] in by_id and "email-fine-1" not in by_id
    assert "files-other-1" in by_error and "reintentando" in by_error and story["cv_email"] not in by_error
    assert story["cv_email"] in by_type and "files-other-1" not in by_type


def test_without_the_payload_permission_search_sees_ids_and_error_types_only(story):
    viewer = staff("viewer", "view_dashboard")

    assert story["check"] not in found_ids(viewer, "ana@exa")
    assert "files-other-1" not in found_ids(viewer, "disk full")
    assert "files-other-1" in found_ids(viewer, "RuntimeError") and story["check"] in found_ids(viewer, "-cv-")
    assert staff("nobody").get(reverse("admin:jobs_dashboard_search"), {"q": "x"}).status_code == 403


def test_search_is_bounded_and_says_when_it_cut(admin_client, redis_conn):
    for n in range(search.SEARCH_LIMIT + 5):
        call("sleep", f"email-many-{n}", seconds=0)

    page = found_ids(admin_client, "many")

    assert page.count('href="/admin/jobs/dashboard/email/job/email-many-') == search.SEARCH_LIMIT
    assert "Hay más jobs que coinciden: se muestran solo los 200 más nuevos." in page


def test_the_overview_has_the_search_box(admin_client):
    page = admin_client.get(reverse("admin:jobs_dashboard_overview")).content.decode()

    assert f'action="{reverse("admin:jobs_dashboard_search")}"' in page and 'name="q"' in page


def test_the_user_page_lists_every_job_and_dead_letter_that_concerned_them(story, admin_client):
    ana = story["user"]
    page = admin_client.get(reverse("admin:accounts_user_change", args=[ana.pk])).content.decode()

    for job_id, queue in ((story["cv_email"], "email"), (story["check"], "files")):
        assert reverse("admin:jobs_dashboard_job", args=[queue, job_id]) in page
    dead = DeadLetter.objects.get(job_id=story["cv_email"])
    assert reverse("admin:jobs_deadletter_change", args=[dead.pk]) in page
    assert "PermanentJobError" in page and "en cola" in page and "files-other-1" not in page
    assert f"email-welcome-{ana.pk}</a>: no está en Redis" in page

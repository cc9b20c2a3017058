"""Staff in a real browser follow one person's failed email: they find it by her address, retry it
from the dead-letter archive through the confirmation, and see how the retry ended (issue 21)."""

import time

import pytest
from django.urls import reverse

from ceres_site.accounts.models import Upload, User
from jobs.enqueue.producers import enqueue_email_cv_rejected, enqueue_stored_call
from jobs.models import DeadLetter, JobAction
from tests.browser import ARTIFACTS, log_in, screenshots

pytestmark = pytest.mark.django_db(transaction=True)


def both_themes(page, name: str) -> None:
    """The page as it is now (one reached by a POST), in the light and the dark theme."""
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.screenshot(path=ARTIFACTS / f"{name}-{scheme}.png", full_page=True)
    page.emulate_media(color_scheme="light")


@pytest.mark.slow
def test_staff_find_a_person_s_failed_email_retry_it_from_the_archive_and_see_it_sent(
    page, live_server, live_worker, work, smtp
):
    User.objects.create_superuser(username="admin", password="clave-del-panel")
    ana = User.objects.create_user(username="ana", email="ana@example", first_name="Ana")  # a typo: no domain
    rejected = Upload.objects.create(user=ana, kind="cv", file="cv/a.pdf", state="rejected", reason="no es un PDF")
    enqueue_email_cv_rejected(upload_id=rejected.pk, municipality=rejected.user.municipality_id)
    work("email")  # fails for good: her address is not valid
    enqueue_stored_call(queue_name="files", func="jobs.tasks.files.validate_cv", job_id="files-cv-999999",
                        kwargs={"upload_id": Upload.objects.create(user=ana, kind="cv", file="cv/b.pdf").pk})  # fmt: skip
    dead = DeadLetter.objects.get()
    job_id = f"email-cv-{rejected.pk}"

    # Found by her address: the CV email names only the upload, not her.
    log_in(page, live_server.url + reverse("admin:jobs_dashboard_overview"), "admin", "clave-del-panel")
    page.fill(".dash-search input[name=q]", "ana@exa")
    page.click(".dash-search input[type=submit]")
    page.wait_for_selector(f"text={job_id}")
    assert page.locator("#result_list tbody tr").count() == 2  # the email and her new CV's check

    ana.email = "ana@example.com"  # support fixed the address
    ana.save()
    page.click(f"a:has-text('{dead.exc_type}')")  # to the archive's row
    page.click("button:has-text('Reintentar')")
    page.wait_for_selector("text=Sí, estoy seguro")
    both_themes(page, "archive-retry-confirm")
    page.click("input[value='Sí, estoy seguro']")  # without a reason the browser does not send it
    assert page.locator("input[name=reason]:invalid").count() == 1 and not JobAction.objects.exists()
    page.fill("input[name=reason]", "corregimos el email de Ana")
    page.click("input[value='Sí, estoy seguro']")
    page.wait_for_selector(f"text=Se volvió a encolar {job_id}.")

    live_worker("email")
    archive = live_server.url + reverse("admin:jobs_deadletter_changelist")
    deadline = time.monotonic() + 90  # the worker starts, then sends
    while time.monotonic() < deadline and not page.locator("a.dash-outcome-sent").count():
        page.wait_for_timeout(200)
        page.goto(archive)
    sent = page.locator("a.dash-outcome-sent")
    assert sent.inner_text() == "enviado"
    assert sent.get_attribute("href") == reverse("admin:jobs_dashboard_job", args=["email", job_id])
    sent.click()
    page.wait_for_selector("strong:has-text('completado')")
    assert page.locator("text=corregimos el email de Ana").count() == 1  # the reason, in the job's audit trail
    assert [message["To"] for message in smtp.messages] == ["ana@example.com"]
    page.goto(live_server.url + reverse("admin:jobs_dashboard_search") + "?q=ana%40exa")
    assert page.locator("#result_list a.dash-outcome-sent").inner_text() == "enviado"  # the story, in one place

    screenshots(page, live_server.url, {
        "overview-search-box": reverse("admin:jobs_dashboard_overview"),
        "archive-list-outcome": reverse("admin:jobs_deadletter_changelist"),
        "archive-detail-outcome": reverse("admin:jobs_deadletter_change", args=[dead.pk]),
        "search": reverse("admin:jobs_dashboard_search") + "?q=ana%40exa",
        "user-jobs": reverse("admin:accounts_user_change", args=[ana.pk]),
    })  # fmt: skip

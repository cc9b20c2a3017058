"""A person in a real browser: Debian's Chromium, driven by Playwright, against a live server.

Screenshots of every dashboard page, in the light and the dark theme, go to test-artifacts/.
"""

import pytest
from django.urls import reverse

from ceres_site.accounts.models import User
from jobs.enqueue.producers import enqueue_stored_call
from tests.browser import ARTIFACTS, log_in, screenshots
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.slow
def test_staff_finds_a_failed_job_retries_it_and_sees_it_finish(page, live_server, live_worker, policy, work):
    policy("email", retry_max=0, alert_window=600)
    User.objects.create_superuser(username="admin", password="clave-del-panel")
    enqueue_stored_call(queue_name="email", func="tests.tasks.fail_times", job_id="email-flaky-7",
                        kwargs={"counter": "browser", "times": 1})  # fmt: skip
    work("email")

    log_in(page, live_server.url + reverse("admin:jobs_dashboard_overview"), "admin", "clave-del-panel")
    page.wait_for_selector("text=Colas")
    page.screenshot(path=ARTIFACTS / "overview.png", full_page=True)
    failed_link = page.locator(f'a[href="{reverse("admin:jobs_dashboard_list", args=["email", "failed"])}"]')
    assert failed_link.inner_text() == "1"

    failed_link.click()
    page.screenshot(path=ARTIFACTS / "failed-list.png", full_page=True)
    page.click("text=email-flaky-7")
    page.wait_for_selector("text=ConnectionError")
    page.screenshot(path=ARTIFACTS / "job-detail.png", full_page=True)
    page.click("button:has-text('Reintentar')")
    page.fill("input[name=reason]", "probando desde el navegador")
    page.click("input[value='Sí, estoy seguro']")
    page.wait_for_selector("text=Se volvió a encolar 1 job.")  # one job: the singular

    live_worker("email")
    job_page = live_server.url + reverse("admin:jobs_dashboard_job", args=["email", "email-flaky-7"])
    for _ in range(50):
        page.goto(job_page)
        if page.locator("text=completado").count():
            break
        page.wait_for_timeout(200)
    assert page.locator("strong", has_text="completado").count() == 1
    assert page.locator("text=probando desde el navegador").count() == 1
    page.screenshot(path=ARTIFACTS / "job-finished.png", full_page=True)


def test_a_person_confirms_the_account_from_the_email_link(page, live_server, smtp, work):
    from tests.test_email_tasks import LINK

    user = User.objects.create_user(username="ana@example.com", email="ana@example.com", first_name="Ana")
    enqueue_stored_call(queue_name="email", func="jobs.tasks.email.send_verify_email", job_id=f"email-verify-{user.pk}",
                        kwargs={"user_id": user.pk})  # fmt: skip
    work("email")
    link = LINK.search(smtp.messages[0].get_body(("plain",)).get_content()).group(0)

    page.goto(live_server.url + link[link.index("/accounts/") :])  # the site of the link is this server
    assert "#" not in page.url  # the token left the address bar (and the history)
    user.refresh_from_db()
    assert not user.is_verified  # opening the page changes nothing
    page.click("button:has-text('Confirmar mi cuenta')")

    page.wait_for_selector("text=¡Cuenta verificada!")
    user.refresh_from_db()
    assert user.is_verified


@pytest.mark.slow
def test_staff_click_to_the_dashboard_watch_it_live_pause_and_resume_a_queue(page, live_server, live_worker, tmp_path):
    User.objects.create_superuser(username="admin", password="clave-del-panel")
    log_in(page, live_server.url + reverse("admin:index"), "admin", "clave-del-panel")
    page.click("#content-main a:has-text('Panel de colas')")  # from the admin index, by clicking
    page.wait_for_selector("text=Última hora, por minuto")
    page.evaluate("window.notReloaded = true")
    count_link = f'.dash-grid a[href="{reverse("admin:jobs_dashboard_list", args=["email", "queued"])}"]'
    assert page.locator(count_link).inner_text() == "0"

    enqueue_stored_call(queue_name="email", func="tests.tasks.mark", job_id="email-waits-1",
                        kwargs={"n": 1, "path": str(tmp_path / "ran")})  # fmt: skip

    page.wait_for_function(f"document.querySelector('{count_link}').innerText === '1'", timeout=30_000)
    assert page.evaluate("window.notReloaded") is True  # the count changed in place

    page.locator("tr", has_text="hasta 5 jobs a la vez, en un proceso").locator("button:has-text('Pausar')").click()
    page.fill("input[name=reason]", "probando la pausa")
    page.click("input[value='Sí, estoy seguro']")
    page.wait_for_selector("text=La cola email está pausada (por admin")
    live_worker("email", "slack")
    enqueue_stored_call(
        queue_name="slack",
        func="tests.tasks.mark",
        job_id="slack-runs-1",
        kwargs={"n": 2, "path": str(tmp_path / "other")},
    )
    wait_for(lambda: (tmp_path / "other").exists(), timeout=60)
    assert not (tmp_path / "ran").exists()  # the worker runs, the paused queue's job waits
    page.screenshot(path=ARTIFACTS / "queue-paused.png", full_page=True)

    page.click("button:has-text('Reanudar la cola')")
    page.click("input[value='Sí, estoy seguro']")
    wait_for(lambda: (tmp_path / "ran").exists(), timeout=60)
    page.goto(live_server.url + reverse("admin:jobs_dashboard_list", args=["email", "finished"]))
    done_bars = page.locator("svg.dash-chart rect.done")
    assert any(float(done_bars.nth(n).get_attribute("height")) > 0 for n in range(done_bars.count()))  # drawn with data

    pages = {
        "overview": reverse("admin:jobs_dashboard_overview"),
        "list": reverse("admin:jobs_dashboard_list", args=["email", "finished"]),
        "job": reverse("admin:jobs_dashboard_job", args=["email", "email-waits-1"]),
        "triage": reverse("admin:jobs_dashboard_triage", args=["email"]),
        "dead-letters": reverse("admin:jobs_deadletter_changelist"),
        "audit": reverse("admin:jobs_jobaction_changelist"),
    }
    screenshots(page, live_server.url, pages)


@pytest.mark.slow
def test_a_person_uploads_a_cv_and_a_photo_and_sees_them_checked(page, live_server, live_worker, tmp_path, settings):
    from tests import files

    settings.MEDIA_ROOT = tmp_path / "media"  # the worker is told the same below
    User.objects.create_user(
        username="ana@example.com", email="ana@example.com", first_name="Ana", password="una-clave-bien-larga-42"
    )
    (tmp_path / "cv.pdf").write_bytes(files.pdf(pages=2))
    (tmp_path / "yo.jpg").write_bytes(files.phone_photo())
    live_worker("files", env={"MEDIA_ROOT": str(tmp_path / "media")})

    page.goto(live_server.url + reverse("home"))
    page.click("text=Tu perfil: CV y foto")
    page.fill("#id_username", "ana@example.com")
    page.fill("#id_password", "una-clave-bien-larga-42")
    page.click("button:has-text('Ingresar')")
    page.set_input_files("#id_cv", str(tmp_path / "cv.pdf"))
    page.set_input_files("#id_picture", str(tmp_path / "yo.jpg"))
    page.click("button:has-text('Subir')")

    page.wait_for_selector("img[alt='Tu foto de perfil']", timeout=60_000)  # the page reloads while checking
    assert page.locator("text=Aceptado.").count() == 2
    assert page.evaluate("document.querySelector(\"img[alt='Tu foto de perfil']\").naturalWidth") == 512
    page.screenshot(path=ARTIFACTS / "profile.png", full_page=True)


def test_staff_see_a_retrying_email_on_the_overview_then_its_next_attempt(page, live_server, settings, policy, work):
    from tests.conftest import free_port

    policy("email", retry_max=3, retry_intervals=(600,))
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # the SMTP server is down
    user = User.objects.create_user(username="ana@example.com", email="ana@example.com", first_name="Ana")
    enqueue_stored_call(queue_name="email", func="jobs.tasks.email.send_verify_email", job_id=f"email-verify-{user.pk}",
                        kwargs={"user_id": user.pk})  # fmt: skip
    work("email")
    User.objects.create_superuser(username="admin", password="clave-del-panel")

    log_in(page, live_server.url + reverse("admin:jobs_dashboard_overview"), "admin", "clave-del-panel")
    warning = page.locator(".dash-warn", has_text="falló y espera otro intento")
    assert "1 job de email falló y espera otro intento; el próximo a las" in warning.inner_text()
    assert "último error: ConnectionRefusedError" in warning.inner_text()
    page.click(f'a[href="{reverse("admin:jobs_dashboard_list", args=["email", "retrying"])}"]')
    page.click(f"text=email-verify-{user.pk}")
    assert page.locator("th", has_text="Próximo intento").count() == 1
    assert page.locator("strong", has_text="reintentando").count() == 1

    job = reverse("admin:jobs_dashboard_job", args=["email", f"email-verify-{user.pk}"])
    screenshots(page, live_server.url, {
        "retrying-overview": reverse("admin:jobs_dashboard_overview"),
        "retrying-list": reverse("admin:jobs_dashboard_list", args=["email", "retrying"]),
        "retrying-job": job,
        "health": reverse("admin:jobs_dashboard_health"),
    })  # fmt: skip

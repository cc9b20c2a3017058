"""Citizens belong to a municipality (issue 23): signup, sign-in, resend and password reset on a
municipality's site act on that municipality's account alone; one address, one account per municipality."""

import django_rq
import pytest
from aiosmtpd.controller import Controller
from django.urls import reverse
from werkzeug import Response

from ceres_site.accounts.models import User
from ceres_site.municipalities.models import Municipality
from jobs.enqueue.producers import enqueue_email_verify, enqueue_stored_call
from jobs.failures.attempts import PermanentJobError
from jobs.models import DeadLetter
from jobs.tasks.email import request_password_reset, resend_verify_email
from tests.conftest import SmtpSink, promote_scheduled

pytestmark = pytest.mark.django_db(transaction=True)  # producers enqueue on commit

NORTE, SUR = "norte.example.test", "sur.example.test"


@pytest.fixture
def towns(settings):
    settings.ALLOWED_HOSTS = [NORTE, SUR, "testserver"]
    norte = Municipality.objects.create(name="Villa Norte", slug="norte", hosts=NORTE)
    sur = Municipality.objects.create(name="Villa Sur", slug="sur", hosts=SUR)
    return norte, sur


def email_job_ids() -> set[str]:
    return set(django_rq.get_queue("email").job_ids)


def signup(client, host: str, password: str = "una-clave-bien-larga-42"):
    data = {"email": "Ana@Example.com", "first_name": "Ana", "password": password}
    return client.post(reverse("accounts:signup"), data, HTTP_HOST=host)


def sign_in(client, host: str, username: str, password: str) -> int | None:
    """The id of the account signed in, or None."""
    client.logout()
    client.post(reverse("accounts:login"), {"username": username, "password": password}, HTTP_HOST=host)
    user_id = client.session.get("_auth_user_id")
    return int(user_id) if user_id else None


def test_one_address_signs_up_in_two_municipalities_as_two_accounts(client, towns):
    norte, sur = towns
    assert signup(client, NORTE).status_code == 302
    assert signup(client, SUR).status_code == 302

    accounts = {user.municipality_id: user for user in User.objects.filter(email="ana@example.com")}
    assert set(accounts) == {norte.pk, sur.pk}
    assert accounts[norte.pk].username == "ana@example.com@norte" and accounts[sur.pk].username == "ana@example.com@sur"
    assert {f"email-verify-{accounts[norte.pk].pk}", f"email-verify-{accounts[sur.pk].pk}"} <= email_job_ids()

    before = email_job_ids()
    assert signup(client, NORTE, password="otra-clave-bien-larga-43").status_code == 302  # taken in Norte only
    assert email_job_ids() - before == {f"email-exists-{accounts[norte.pk].pk}"}
    assert User.objects.filter(email="ana@example.com").count() == 2


def test_each_account_signs_in_on_its_own_municipality_s_site_only(client, towns):
    norte, sur = towns
    signup(client, NORTE, password="clave-de-norte-bien-larga")
    signup(client, SUR, password="clave-de-sur-bien-larga")
    in_norte = User.objects.get(municipality=norte).pk
    in_sur = User.objects.get(municipality=sur).pk
    staff = User.objects.create_user(username="operadora", password="clave-del-panel-larga", is_staff=True)

    assert sign_in(client, NORTE, "ana@example.com", "clave-de-norte-bien-larga") == in_norte
    assert sign_in(client, SUR, "ana@example.com", "clave-de-sur-bien-larga") == in_sur
    assert sign_in(client, SUR, "ana@example.com", "clave-de-norte-bien-larga") is None
    assert sign_in(client, SUR, "ana@example.com@norte", "clave-de-norte-bien-larga") is None  # Norte's, typed whole
    assert sign_in(client, "testserver", "ana@example.com@norte", "clave-de-norte-bien-larga") is None
    assert sign_in(client, NORTE, "operadora", "clave-del-panel-larga") == staff.pk


def test_a_resend_and_a_password_reset_on_one_site_look_in_that_municipality_only(client, towns, work):
    norte, sur = towns
    signup(client, NORTE)
    signup(client, SUR)
    in_norte, in_sur = User.objects.get(municipality=norte), User.objects.get(municipality=sur)
    work()  # both verification emails go out

    before = email_job_ids()
    client.post(reverse("accounts:resend"), {"email": "ana@example.com"}, HTTP_HOST=SUR)
    client.post(reverse("accounts:password_reset"), {"email": "ana@example.com"}, HTTP_HOST=SUR)
    asked = [django_rq.get_queue("email").fetch_job(job_id) for job_id in email_job_ids() - before]
    assert sorted(job.kwargs["municipality"] for job in asked) == [sur.pk, sur.pk]
    work()
    in_norte.refresh_from_db()
    in_sur.refresh_from_db()
    assert in_sur.verify_requested_at > in_norte.verify_requested_at  # the resend found Sur's account
    queue = django_rq.get_queue("email")
    assert (
        queue.fetch_job(f"email-reset-{in_sur.pk}") is not None
        and queue.fetch_job(f"email-reset-{in_norte.pk}") is None
    )


@pytest.mark.parametrize("task", [resend_verify_email, request_password_reset])
def test_a_job_of_an_inactive_gone_or_malformed_municipality_fails_for_good(towns, task):
    norte, _sur = towns
    Municipality.objects.filter(pk=norte.pk).update(active=False)
    with pytest.raises(PermanentJobError, match="el municipio .* está inactivo o ya no existe"):
        task("ana@example.com", municipality=norte.pk)
    with pytest.raises(PermanentJobError, match="está inactivo o ya no existe"):
        task("ana@example.com", municipality=10**9)
    with pytest.raises(PermanentJobError, match="malformed payload"):
        task("ana@example.com", municipality="norte")


def bodies(message) -> tuple[str, str]:
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


def test_an_email_goes_out_under_its_recipient_s_municipality(client, towns, smtp, work, settings):
    norte, _sur = towns
    Municipality.objects.filter(pk=norte.pk).update(
        base_url="https://norte.example.test", sender_name="Municipalidad de Villa Norte",
        sender_email="avisos@norte.example.test", logo_url="https://norte.example.test/escudo.png", colour="#aa3300",
    )  # fmt: skip
    settings.DEFAULT_FROM_EMAIL = "Ceres <no-reply@ceres.example.test>"
    signup(client, NORTE)
    client.post(
        reverse("accounts:signup"),
        {"email": "beto@example.com", "first_name": "Beto", "password": "una-clave-bien-larga-42"},
        HTTP_HOST="testserver",  # a host no municipality names: the default one's site
    )
    assert User.objects.get(email="beto@example.com").municipality == Municipality.objects.default()
    work()

    sent = {message["To"]: message for message in smtp.messages}
    text, html = bodies(sent["ana@example.com"])
    assert sent["ana@example.com"]["From"] == "Municipalidad de Villa Norte <avisos@norte.example.test>"
    assert sent["ana@example.com"]["Subject"] == "Confirmá tu cuenta de Villa Norte"
    assert "Para activar tu cuenta de Villa Norte, confirmá" in text and "Ceres" not in text + html
    assert "https://norte.example.test/accounts/verify/#" in text and text.rstrip().endswith("— Villa Norte")
    assert '<img src="https://norte.example.test/escudo.png" alt="Villa Norte"' in html and "#aa3300" in html
    text, html = bodies(sent["beto@example.com"])
    assert sent["beto@example.com"]["From"] == "Ceres <no-reply@ceres.example.test>"
    assert sent["beto@example.com"]["Subject"] == "Confirmá tu cuenta de Ceres"  # the default one: as before
    assert f"{settings.SITE_URL}/accounts/verify/#" in text and "Villa Norte" not in text
    assert "<img" not in html and "#1d6fa5" in html


def test_a_municipality_with_its_own_mail_server_sends_through_it(client, towns, smtp, work):
    norte, _sur = towns
    own = SmtpSink()
    controller = Controller(own, hostname="127.0.0.1", port=own.port)
    controller.start()
    try:
        Municipality.objects.filter(pk=norte.pk).update(
            smtp_host="127.0.0.1", smtp_port=own.port, smtp_use_tls=False, sender_email="avisos@norte.example.test"
        )
        signup(client, NORTE)
        signup(client, SUR)
        work()
    finally:
        controller.stop()

    assert [message["From"] for message in own.messages] == ["Ceres <avisos@norte.example.test>"]  # Norte's
    assert len(smtp.messages) == 1 and "norte" not in smtp.messages[0]["From"]  # Sur's: the installation's server


def test_an_inactive_municipality_s_emails_fail_for_good_and_are_archived(client, towns, smtp, work):
    _norte, sur = towns
    signup(client, SUR)
    user = User.objects.get(municipality=sur)
    Municipality.objects.filter(pk=sur.pk).update(active=False)
    work()

    assert smtp.messages == []
    failed = django_rq.get_queue("email").fetch_job(f"email-verify-{user.pk}")
    assert failed.get_status() == "failed" and not user.verification_tokens.exists()  # no token issued either
    archived = DeadLetter.objects.get(job_id=f"email-verify-{user.pk}")
    assert "está inactivo o ya no existe" in archived.exc_message


def test_a_job_naming_another_municipality_than_its_recipient_s_sends_nothing(towns, smtp, work):
    norte, sur = towns
    user = User.objects.create_user(username="ana@example.com@norte", email="ana@example.com", municipality=norte)
    enqueue_email_verify(user_id=user.pk, municipality=sur.pk)
    work()
    assert smtp.messages == []
    assert "malformed payload: municipality=" in DeadLetter.objects.get(job_id=f"email-verify-{user.pk}").exc_message


def test_a_municipality_s_failures_alert_its_own_webhook_and_the_rest_the_platform_s(
    towns, slack, httpserver, smtp, policy, work, monkeypatch
):
    norte, _sur = towns
    norte_texts = []

    def norte_hook(request):
        norte_texts.append(request.get_json()["text"])
        return Response("ok")

    httpserver.expect_request("/norte-hook", method="POST").respond_with_handler(norte_hook)
    monkeypatch.setenv("NORTE_SLACK", httpserver.url_for("/norte-hook"))
    Municipality.objects.filter(pk=norte.pk).update(slack_webhook_env="NORTE_SLACK")
    policy("email", retry_max=0, alert_window=1)
    smtp.rcpt_reply = "550 5.1.1 No such user here"
    in_norte = User.objects.create_user(username="ana@example.com@norte", email="ana@example.com", municipality=norte)
    enqueue_email_verify(user_id=in_norte.pk, municipality=norte.pk)
    enqueue_stored_call(queue_name="email", func="tests.tasks.always_fail", job_id="email-platform-1", kwargs={})

    work("email")
    promote_scheduled("slack")  # the alert window, passed
    work("slack")

    assert len(norte_texts) == 1 and f"email-verify-{in_norte.pk}" in norte_texts[0]
    assert len(slack.texts) == 1 and "email-platform-1" in slack.texts[0]
    assert DeadLetter.objects.get(job_id=f"email-verify-{in_norte.pk}").municipality == norte.pk
    assert DeadLetter.objects.get(job_id="email-platform-1").municipality is None


def test_the_daily_report_goes_to_the_platform_and_each_municipality_gets_its_own(
    towns, slack, httpserver, monkeypatch, work
):
    from datetime import UTC, datetime

    from jobs.tasks.maintenance import daily_report

    norte, sur = towns
    norte_texts = []
    httpserver.expect_request("/norte-hook", method="POST").respond_with_handler(
        lambda request: norte_texts.append(request.get_json()["text"]) or Response("ok")
    )
    monkeypatch.setenv("NORTE_SLACK", httpserver.url_for("/norte-hook"))
    Municipality.objects.filter(pk=norte.pk).update(slack_webhook_env="NORTE_SLACK")
    at = datetime(2026, 11, 28, 15, tzinfo=UTC)  # noon of the 28th in Córdoba
    for n, municipality in enumerate([norte, norte, sur, Municipality.objects.default()]):
        User.objects.create_user(username=f"u{n}", email=f"u{n}@example.com", municipality=municipality, date_joined=at)

    daily_report(slot=datetime(2026, 11, 29, 12, tzinfo=UTC))
    work("slack")

    [own] = norte_texts
    assert own.startswith(":bar_chart: Reporte diario de Villa Norte — 28/11/2026 (Córdoba)")
    assert "• Usuarios registrados: 2 ·" in own and "Jobs completados/fallidos por cola: email 0/0" in own
    platform, of_sur = sorted(slack.texts, key=lambda text: "Villa Sur" in text)
    assert platform.startswith(":bar_chart: Reporte diario de Ceres") and "• Usuarios registrados: 4 ·" in platform
    assert of_sur.startswith(":bar_chart: Reporte diario de Villa Sur") and "• Usuarios registrados: 1 ·" in of_sur
    assert "Job en espera más antiguo" not in of_sur  # the queues' waits are the platform's


def test_a_newsletter_goes_to_its_municipality_s_subscribers_under_its_name(towns, smtp, work, settings):
    from django.utils import timezone

    from ceres_site.newsletters import campaigns
    from ceres_site.newsletters.models import Newsletter

    norte, sur = towns
    Municipality.objects.filter(pk=norte.pk).update(
        base_url="https://norte.example.test", sender_name="Villa Norte", sender_email="avisos@norte.example.test"
    )
    now = timezone.now()
    for municipality in (norte, sur):
        User.objects.create_user(username=f"vecina@example.com@{municipality.slug}", email="vecina@example.com",
                                 municipality=municipality, email_verified_at=now)  # fmt: skip
    editor = User.objects.create_user(username="editora", is_staff=True)
    newsletter = Newsletter.objects.create(subject="Novedades", body_text="Hola {{ name }}: {{ unsubscribe_url }}",
                                           municipality=norte)  # fmt: skip

    assert campaigns.send(newsletter, editor) == 1
    work("bulk")

    [message] = smtp.messages
    assert message["From"] == "Villa Norte <avisos@norte.example.test>"
    assert message["List-Unsubscribe"].strip().startswith("<https://norte.example.test/newsletters/unsubscribe/")
    assert Newsletter.objects.create(subject="Otra", body_text="Hola").municipality == Municipality.objects.default()


def test_a_newsletter_job_for_a_user_of_another_municipality_sends_nothing(towns, smtp, work):
    from django.utils import timezone

    from ceres_site.newsletters.models import Newsletter
    from jobs.enqueue.producers import enqueue_newsletter_many

    norte, sur = towns
    in_sur = User.objects.create_user(username="vecina@example.com@sur", email="vecina@example.com",
                                      municipality=sur, email_verified_at=timezone.now())  # fmt: skip
    newsletter = Newsletter.objects.create(subject="Novedades", body_text="Hola", municipality=norte,
                                           state=Newsletter.State.SENDING)  # fmt: skip
    enqueue_newsletter_many(newsletter_id=newsletter.pk, user_ids=[in_sur.pk], municipality=norte.pk)
    work("bulk")
    assert smtp.messages == []
    assert "is not of newsletter" in DeadLetter.objects.get(queue="bulk").exc_message


def test_metrics_count_each_configured_municipality_s_jobs_and_no_other_label(towns, smtp, work, admin_client):
    norte, _sur = towns
    ana = User.objects.create_user(username="ana@example.com@norte", email="ana@example.com", municipality=norte)
    beto = User.objects.create_user(username="beto@example.com@norte", email="beto@example.com", municipality=norte)
    enqueue_email_verify(user_id=ana.pk, municipality=norte.pk)
    enqueue_email_verify(user_id=beto.pk, municipality=10**9)  # fails for good: no such municipality's user
    work()

    exposed = admin_client.get("/metrics").content.decode()
    assert 'ceres_jobs_finished_by_municipality_total{municipality="norte",queue="email"} 1.0' in exposed
    assert 'ceres_jobs_failed_by_municipality_total{municipality="norte",queue="email"} 0.0' in exposed
    assert 'ceres_jobs_finished_by_municipality_total{municipality="sur",queue="email"} 0.0' in exposed
    assert str(10**9) not in exposed  # only configured municipalities are label values


def test_the_outbox_enqueues_a_lost_verification_email_with_its_user_s_municipality(towns, settings):
    from datetime import timedelta

    from django.utils import timezone

    from ceres_site.accounts.outbox import reconcile_verify_emails

    norte, _sur = towns
    asked = timezone.now() - timedelta(seconds=settings.VERIFY_OUTBOX_AFTER_SECONDS + 60)
    user = User.objects.create_user(username="ana@example.com@norte", email="ana@example.com", municipality=norte,
                                    verify_requested_at=asked)  # fmt: skip

    assert reconcile_verify_emails() == 1
    job = django_rq.get_queue("email").fetch_job(f"email-verify-{user.pk}")
    assert job.kwargs == {"user_id": user.pk, "municipality": norte.pk}

"""Email tasks through real workers and a real SMTP server."""

import re
from pathlib import Path

import django_rq
import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rq import Callback, Retry

from ceres_site.accounts.models import EmailDelivery, User, VerificationToken
from ceres_site.municipalities.models import default_pk
from jobs.enqueue.producers import enqueue_email_verify, enqueue_email_welcome
from jobs.failures.attempts import on_job_failure
from jobs.models import DeadLetter
from jobs.tasks import email as email_tasks
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LINK = re.compile(r"https?://[^/\s]+/accounts/verify/#([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")


def make_user(email="juan@example.com", first_name="Juan", **extra):
    return User.objects.create_user(username=email or "nobody", email=email, first_name=first_name, **extra)


def job(job_id):
    return django_rq.get_queue("email").fetch_job(job_id)


def error_of(job):
    return job.latest_result().exc_string


def press_confirm(link_match) -> HttpResponse:
    """What the page's button does with the token the link carries after "#"."""
    selector, verifier = link_match.groups()
    return Client().post(reverse("accounts:verify"), {"selector": selector, "verifier": verifier})


def text_body(message):
    return message.get_body(("plain",)).get_content()


def test_verify_link_verifies_the_user_and_the_welcome_email_follows(smtp, work):
    user = make_user()
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)

    work("email")

    [verify] = smtp.messages
    assert verify["To"] == "juan@example.com"
    assert verify["Subject"] == "Confirmá tu cuenta de Ceres"
    assert "Hola Juan" in text_body(verify)
    html = verify.get_body(("html",)).get_content()
    link = LINK.search(text_body(verify))
    assert link.group(0) in html
    assert job(f"email-verify-{user.pk}").get_status() == "finished"

    response = press_confirm(link)

    assert response.status_code == 200 and "verificada" in response.content.decode()
    user.refresh_from_db()
    assert user.is_verified
    work("email")
    assert [m["Subject"] for m in smtp.messages] == ["Confirmá tu cuenta de Ceres", "¡Te damos la bienvenida a Ceres!"]
    assert EmailDelivery.objects.filter(user=user).count() == 2
    assert f"{settings.SITE_URL}{reverse('home')}\r\n" in text_body(smtp.messages[1])  # the home page, no redirect


def test_verify_job_for_a_verified_user_sends_nothing(smtp, work):
    user = make_user(email_verified_at=timezone.now())
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)

    work("email")

    assert smtp.messages == []
    assert job(f"email-verify-{user.pk}").return_value() == f"omitido: el usuario {user.pk} ya está verificado"
    assert not VerificationToken.objects.filter(user=user).exists()  # a token only for an email that goes out


def test_a_job_delivered_twice_sends_once(smtp, work):
    """At-least-once delivery: the same job run again (e.g. after a crash) must not mail again."""
    user = make_user()
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    work("email")
    queue = django_rq.get_queue("email")
    queue.push_job_id(f"email-verify-{user.pk}")  # redeliver the very same job

    work("email")

    assert len(smtp.messages) == 1
    assert job(f"email-verify-{user.pk}").return_value().startswith("omitido: este job ya lo envió")
    assert VerificationToken.objects.filter(user=user).count() == 1


def test_a_job_run_again_after_the_email_went_out_sends_the_same_link(smtp, work):
    """A worker killed between the server's OK and the delivery row: the re-run mails again (delivery is
    at-least-once), with the same link and no second token."""
    user = make_user()
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    work("email")
    EmailDelivery.objects.filter(user=user).delete()  # what the killed worker never wrote
    django_rq.get_queue("email").push_job_id(f"email-verify-{user.pk}")

    work("email")

    first, second = (LINK.search(text_body(message)) for message in smtp.messages)
    assert first.group(0) == second.group(0)
    assert VerificationToken.objects.filter(user=user).count() == 1
    assert press_confirm(first).status_code == 200
    user.refresh_from_db()
    assert user.is_verified


@pytest.mark.parametrize("in_the_read", [True, False], ids=["token-in-the-read", "token-on-its-own"])
def test_a_token_only_for_an_email_that_goes_out_once_per_job_whichever_statement_issues_it(
    smtp, work, monkeypatch, in_the_read
):
    """PostgreSQL issues the token in the recipient's read; a database without an INSERT inside a read
    (SQLite) issues it in a statement of its own, before the send: the outcome is the same."""
    monkeypatch.setattr(email_tasks, "_issues_with_read", lambda: in_the_read)
    waiting, verified = make_user(), make_user(email="vera@example.com", email_verified_at=timezone.now())
    enqueue_email_verify(user_id=waiting.pk, municipality=waiting.municipality_id)
    enqueue_email_verify(user_id=verified.pk, municipality=verified.municipality_id)
    work("email")
    EmailDelivery.objects.filter(user=waiting).delete()  # as if the worker died before recording it
    django_rq.get_queue("email").push_job_id(f"email-verify-{waiting.pk}")

    work("email")

    assert [message["To"] for message in smtp.messages] == ["juan@example.com"] * 2
    first, second = (LINK.search(text_body(message)) for message in smtp.messages)
    assert first.group(0) == second.group(0)
    assert VerificationToken.objects.filter(user=waiting).count() == 1
    assert not VerificationToken.objects.filter(user=verified).exists()
    assert press_confirm(first).status_code == 200
    waiting.refresh_from_db()
    assert waiting.is_verified


def test_every_attempt_of_a_job_names_its_email_the_same_and_another_job_differently(smtp, work):
    """So a receiving server that has a copy can drop a repeat (RFC 5322 §3.6.4)."""
    user = make_user()
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    work("email")
    EmailDelivery.objects.filter(user=user).delete()  # as if the worker died before it recorded the delivery
    django_rq.get_queue("email").push_job_id(f"email-verify-{user.pk}")
    work("email")
    job(f"email-verify-{user.pk}").delete()
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)  # another job, asked later
    work("email")

    first, again, other = (message["Message-ID"] for message in smtp.messages)
    assert first == again != other
    assert first.endswith(f"@{settings.DEFAULT_FROM_EMAIL.rpartition('@')[2]}")  # "...@ceres.localhost>"


def test_welcome_is_sent_once_per_user(smtp, work):
    user = make_user(email_verified_at=timezone.now())
    enqueue_email_welcome(user_id=user.pk, municipality=user.municipality_id)
    work("email")
    job(f"email-welcome-{user.pk}").delete()
    enqueue_email_welcome(user_id=user.pk, municipality=user.municipality_id)

    work("email")

    assert [m["Subject"] for m in smtp.messages] == ["¡Te damos la bienvenida a Ceres!"]


def test_recipient_refused_for_good_fails_at_once(smtp, work):
    smtp.rcpt_reply = "550 5.1.1 No such user here"
    user = make_user()
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)

    work("email")

    failed = job(f"email-verify-{user.pk}")
    assert failed.get_status() == "failed"
    assert len(smtp.rcpt_times) == 1
    assert "PermanentJobError: el servidor de correo rechazó al destinatario: 550 5.1.1 No such user here" in error_of(
        failed
    )
    assert django_rq.get_queue("email").scheduled_job_registry.get_job_ids() == []


def test_smtp_down_schedules_a_retry(settings, smtp, work):
    settings.EMAIL_PORT = free_port()  # nothing listens there: connection refused
    user = make_user()
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)

    work("email")

    retrying = job(f"email-verify-{user.pk}")
    assert retrying.get_status() == "scheduled" and retrying.retries_left == 4
    assert django_rq.get_queue("email").scheduled_job_registry.get_job_ids() == [retrying.id]


@pytest.mark.slow
def test_temporary_refusal_retries_five_times_on_the_policy_schedule(smtp, live_worker, policy):
    """451 on every attempt: 6 attempts, gaps growing like the policy's (shrunk here to 1..5 s)."""
    intervals = (1, 2, 3, 4, 5)
    policy("email", retry_intervals=intervals)
    smtp.rcpt_reply = "451 4.3.0 Mailbox busy, try again later"
    user = make_user()
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)

    live_worker("email")

    wait_for(lambda: job(f"email-verify-{user.pk}").get_status() == "failed", timeout=60)
    assert len(smtp.rcpt_times) == 6
    gaps = [b - a for a, b in zip(smtp.rcpt_times, smtp.rcpt_times[1:], strict=False)]
    for gap, interval in zip(gaps, intervals, strict=True):
        assert interval - 1 <= gap, gaps  # RQ stores a retry's time in whole seconds, rounded down
    said = "MailServerBusy: el servidor de correo pidió reintentar más tarde: 451 4.3.0 Mailbox busy, try again later"
    assert said in error_of(job(f"email-verify-{user.pk}"))
    assert VerificationToken.objects.filter(user=user).count() == 1  # one job, one token, however many attempts


@pytest.mark.slow
def test_a_server_that_answers_the_end_of_a_message_after_13_s_gets_one_copy(smtp, work_until, policy, settings):
    """It has the message while the worker waits: giving up after EMAIL_TIMEOUT sent one copy per attempt."""
    settings.EMAIL_TIMEOUT = 10  # connecting and every other command
    policy("email", retry_intervals=(1,))  # were it to retry, it would retry at once
    smtp.data_delays = [13] * 6  # every attempt's answer would be as slow
    user = make_user()
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)

    work_until(lambda: job(f"email-verify-{user.pk}").get_status() in ("finished", "failed"), "email", timeout=150)

    finished = job(f"email-verify-{user.pk}")
    assert len(smtp.messages) == 1
    assert finished.get_status() == "finished"
    assert EmailDelivery.objects.filter(user=user, kind="verify").count() == 1
    print(f"\nslow SMTP: 1 copy; one attempt of {(finished.ended_at - finished.started_at).total_seconds():.1f} s")


# --- bad input ------------------------------------------------------------------------------


def test_unknown_user_is_skipped_with_a_clear_result(smtp, work):
    enqueue_email_verify(user_id=999_999, municipality=default_pk())

    work("email")

    finished = job("email-verify-999999")
    assert finished.get_status() == "finished"
    assert finished.return_value() == "omitido: el usuario 999999 no existe"
    assert smtp.rcpt_times == []


@pytest.mark.parametrize("email", ["not-an-address", "juan@example.com\r\nBcc: victim@example.com", ""])
def test_invalid_address_fails_once_without_retries(smtp, work, email):
    user = make_user(email=email)
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)

    work("email")

    failed = job(f"email-verify-{user.pk}")
    assert failed.get_status() == "failed"
    assert f"PermanentJobError: el usuario {user.pk} tiene una dirección de email inválida" in error_of(failed)
    assert smtp.rcpt_times == []
    assert django_rq.get_queue("email").scheduled_job_registry.get_job_ids() == []


def enqueue_by_hand(func: str, job_id: str, **kwargs):
    """A job no producer would make, with the email queue's retries and failure hook."""
    django_rq.get_queue("email").enqueue(
        func, kwargs=kwargs, job_id=job_id, retry=Retry(max=5, interval=1), on_failure=Callback(on_job_failure)
    )


@pytest.mark.parametrize(
    "func,kwargs,error",
    [
        ("send_verify_email", {"user_id": "42; DROP TABLE"}, "malformed payload: user_id='42; DROP TABLE' is not"),
        ("send_welcome_email", {"user_id": None}, "malformed payload: user_id=None is not an integer"),
        ("send_account_exists_email", {"user_id": [1]}, "malformed payload: user_id=[1] is not an integer"),
        ("resend_verify_email", {"email": {"$ne": ""}}, "malformed payload: email is a dict, not a string"),
    ],
)
def test_malformed_jobs_fail_once_with_a_clear_error(smtp, work, func, kwargs, error):
    enqueue_by_hand(f"jobs.tasks.email.{func}", "email-bad", **kwargs)

    work("email")

    failed = job("email-bad")
    assert failed.get_status() == "failed"
    assert f"PermanentJobError: {error}" in error_of(failed)
    assert django_rq.get_queue("email").scheduled_job_registry.get_job_ids() == []


@pytest.mark.parametrize("func", ["os.system", "jobs.tasks.email.display_name"])
def test_a_job_naming_any_other_function_fails_without_running_and_is_archived(smtp, work, tmp_path, func):
    marker = tmp_path / "ran"
    # Well-formed JSON, with retries and no failure hook: what someone with access to Redis could push.
    django_rq.get_queue("email").enqueue(func, f"touch {marker}", job_id="email-evil", retry=Retry(max=5, interval=1))

    work("email")

    failed = job("email-evil")
    assert not marker.exists() and failed.get_status() == "failed"
    assert f"UnregisteredTaskError: '{func}' is not a registered task" in error_of(failed)
    assert django_rq.get_queue("email").scheduled_job_registry.get_job_ids() == []  # no retry either
    assert DeadLetter.objects.get(job_id="email-evil").exc_type.endswith("UnregisteredTaskError")


def touch_marker(job, connection, *exc_info) -> None:
    Path(job.meta["marker"]).touch()


def test_a_callback_that_is_not_registered_is_skipped(smtp, work, tmp_path):
    marker = tmp_path / "called"
    django_rq.get_queue("email").enqueue(
        "tests.tasks.always_fail", job_id="email-callback", meta={"marker": str(marker)},
        on_failure=Callback("tests.test_email_tasks.touch_marker"),
    )  # fmt: skip

    work("email")

    assert job("email-callback").get_status() == "failed"
    assert not marker.exists()


def test_jobs_and_callbacks_named_before_the_layers_moved_still_run(smtp, work):
    # What Redis may still hold from a release that had `jobs/alerts.py` and `jobs/failures.py`.
    pending = DeadLetter.objects.create(job_id="email-x", job_created_at=timezone.now(), queue="email",
                                        exc_type="RuntimeError", failed_at=timezone.now(), alert=DeadLetter.Alert.PENDING)  # fmt: skip
    django_rq.get_queue("slack").enqueue("jobs.alerts.flush_alerts", "email", job_id="slack-old-flush")
    django_rq.get_queue("email").enqueue(
        "jobs.tasks.email.send_welcome_email", kwargs={"user_id": None}, job_id="email-old-callback",
        retry=Retry(max=5, interval=1), on_failure=Callback("jobs.failures.on_job_failure"),
    )  # fmt: skip

    work("slack", "email")

    pending.refresh_from_db()
    assert pending.alert == DeadLetter.Alert.SENT  # the old flush_alerts ran
    failed = job("email-old-callback")
    assert failed.get_status() == "failed"  # the old callback ran: a permanent error is not retried
    assert failed.meta["failures"][0]["error"].startswith("PermanentJobError: malformed payload")
    assert django_rq.get_queue("email").scheduled_job_registry.get_job_ids() == []


def test_first_name_with_line_breaks_cannot_inject_headers(smtp, work):
    user = make_user(first_name="Juan\r\nBcc: victim@example.com\r\n\r\n<b>hola</b>" + "x" * 80)
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)

    work("email")

    [message] = smtp.messages
    assert message["Bcc"] is None and message["To"] == "juan@example.com"
    first_line = text_body(message).splitlines()[0]
    assert first_line.startswith("Hola Juan Bcc: victim@example.com <b>hola</b>xxx")
    assert len(first_line) < 80
    html = message.get_body(("html",)).get_content()
    assert "&lt;b&gt;hola&lt;/b&gt;" in html and "<b>hola</b>" not in html

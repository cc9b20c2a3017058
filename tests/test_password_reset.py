"""The password reset: asked on the page, emailed by a real worker through the email queue, the link
opened, the new password chosen; and the ways it must fail."""

import json
import re

import django_rq
import pytest
from django.contrib.auth import SESSION_KEY
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from ceres_site.accounts.models import EmailDelivery, User
from jobs.enqueue.producers import enqueue_email_password_reset
from jobs.models import DeadLetter
from tests.conftest import free_port
from tests.test_email_tasks import enqueue_by_hand, error_of, job, text_body

pytestmark = pytest.mark.django_db(transaction=True)  # producers enqueue on commit

LINK = re.compile(r"https?://[^/\s]+/accounts/password/reset/link/#([A-Za-z0-9_-]+)\.([A-Za-z0-9-]+)")
OLD, NEW = "una-clave-bien-larga-42", "otra-clave-mas-larga-77"


def make_user(email="ana@example.com", password=OLD, **extra):
    return User.objects.create_user(username=email, email=email, first_name="Ana", password=password, **extra)


def email_jobs() -> dict[str, str]:
    queue = django_rq.get_queue("email")
    return {job_id: queue.fetch_job(job_id).func_name for job_id in queue.job_ids}


def ask(client, email):
    return client.post(reverse("accounts:password_reset"), {"email": email})


def open_link(client, link):
    """What the link's page does: its script POSTs what the link carries after "#"."""
    uidb64, token = link.groups()
    return client.post(reverse("accounts:password_reset_link"), {"uidb64": uidb64, "token": token})


def choose(client, response, password1=NEW, password2=NEW):
    return client.post(response["Location"], {"new_password1": password1, "new_password2": password2})


def reset_link(smtp, work, email="ana@example.com"):
    ask(Client(), email)
    work("email")
    [message] = [message for message in smtp.messages if message["To"] == email]
    return LINK.search(text_body(message))


def test_the_page_does_the_same_work_for_any_address_and_only_an_account_with_a_password_gets_mail(client, smtp, work):
    make_user()
    make_user(email="inactiva@example.com", is_active=False)
    make_user(email="sin-clave@example.com", password=None)  # an unusable password: no way in by password
    answers, queries, jobs = [], [], []
    for email in ("ANA@example.com", "nadie@example.com", "inactiva@example.com", "sin-clave@example.com"):
        before = set(email_jobs())
        with CaptureQueriesContext(connection) as captured:
            answers.append(ask(client, email))
        queries.append([query["sql"] for query in captured if "accounts_user" in query["sql"]])
        jobs.append(sorted(name for job_id, name in email_jobs().items() if job_id not in before))

    assert {(answer.status_code, answer["Location"]) for answer in answers} == {
        (302, reverse("accounts:password_reset_done"))
    }
    assert queries == [[], [], [], []]  # the page looks up no account (its municipality only): the worker does
    assert jobs == [["jobs.tasks.email.request_password_reset"]] * 4
    work("email")
    assert [message["To"] for message in smtp.messages] == ["ana@example.com"]
    assert smtp.messages[0]["Subject"] == "Cambiá tu contraseña de Ceres"
    done = client.get(reverse("accounts:password_reset_done")).content.decode()
    assert "Si hay una cuenta con ese email" in done and f'href="{reverse("accounts:login")}"' in done


def test_the_link_leads_to_the_new_password_and_works_once(smtp, work):
    user = make_user()
    link = reset_link(smtp, work)
    html = smtp.messages[0].get_body(("html",)).get_content()
    assert link.group(0) in html and "Hola Ana" in text_body(smtp.messages[0])
    assert "vence en 2 horas" in text_body(smtp.messages[0])
    browser = Client()

    opened = open_link(browser, link)

    assert opened.status_code == 302
    assert opened["Location"] == reverse("accounts:password_reset_confirm", args=[link.group(1)])
    assert link.group(2) not in opened["Location"]  # the token went into the session, not an address
    form = browser.get(opened["Location"]).content.decode()
    assert "Contraseña nueva" in form and "Repetí la contraseña nueva" in form
    done = choose(browser, opened)
    assert done.status_code == 302 and done["Location"] == reverse("accounts:password_reset_complete")
    complete = browser.get(done["Location"]).content.decode()
    assert "Ya podés ingresar con tu contraseña nueva" in complete
    user.refresh_from_db()
    assert user.check_password(NEW) and not user.check_password(OLD)
    assert EmailDelivery.objects.get(user=user).kind == EmailDelivery.Kind.PASSWORD_RESET

    again = open_link(Client(), link)  # the same link, later: the password it was made for is gone
    assert again.status_code == 400 and "Este enlace ya no sirve" in again.content.decode()
    assert f'href="{reverse("accounts:password_reset")}"' in again.content.decode()


def test_a_login_after_the_email_kills_its_link(smtp, work):
    make_user()
    link = reset_link(smtp, work)

    assert Client().login(username="ana@example.com", password=OLD)

    assert open_link(Client(), link).status_code == 400


def test_the_password_page_without_an_opened_link_says_the_link_no_longer_works(client, smtp, work):
    user = make_user()
    link = reset_link(smtp, work)
    page = client.get(reverse("accounts:password_reset_confirm", args=[link.group(1)]))  # no token in the session

    assert "Este enlace ya no sirve" in page.content.decode() and "new_password1" not in page.content.decode()
    client.post(page.request["PATH_INFO"], {"new_password1": NEW, "new_password2": NEW})
    user.refresh_from_db()
    assert user.check_password(OLD)


@pytest.mark.parametrize(
    "uidb64,token",
    [("MQ", "bad-token"), ("!!", "x"), ("", ""), ("OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5", "cdef-1234")],
)
def test_a_wrong_or_mangled_link_is_refused_clearly(client, uidb64, token):
    make_user()

    answer = client.post(reverse("accounts:password_reset_link"), {"uidb64": uidb64, "token": token})

    assert answer.status_code == 400 and "Este enlace ya no sirve" in answer.content.decode()


def test_opening_the_link_only_shows_the_page_that_reads_it(client):
    page = client.get(reverse("accounts:password_reset_link"))

    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="reset-form"' in html and "window.location.hash" in html
    assert client.head(reverse("accounts:password_reset_link")).status_code == 200


def test_two_different_passwords_are_refused_in_spanish(smtp, work):
    user = make_user()
    link = reset_link(smtp, work)
    browser = Client()
    opened = open_link(browser, link)

    answer = choose(browser, opened, NEW, NEW + "x")

    assert answer.status_code == 200 and "Las dos contraseñas no coinciden." in answer.content.decode()
    user.refresh_from_db()
    assert user.check_password(OLD)


def test_the_token_is_never_in_a_job_or_the_logs(smtp, work, worker_log):
    make_user()

    link = reset_link(smtp, work)

    queue = django_rq.get_queue("email")
    finished = [queue.fetch_job(job_id) for job_id in queue.finished_job_registry.get_job_ids()]
    assert sorted(job.func_name for job in finished) == [
        "jobs.tasks.email.request_password_reset", "jobs.tasks.email.send_password_reset_email"
    ]  # fmt: skip
    token = link.group(2)
    for done in finished:
        assert token not in json.dumps(done.kwargs) and token not in str(done.return_value())
    ours = [line for line in worker_log().splitlines() if " mail.log: " not in line]  # not the SMTP sink's own
    assert any("email-reset-" in line for line in ours) and not any(token in line for line in ours)


def test_an_email_asked_twice_in_a_row_goes_out_once(client, smtp, work):
    make_user()

    ask(client, "ana@example.com")
    work("email")
    ask(client, "ana@example.com")
    work("email")

    assert len(smtp.messages) == 1  # the second ask came within the cooldown of the first


def test_the_reset_email_retries_on_the_email_policy_when_smtp_is_down(settings, smtp, work):
    settings.EMAIL_PORT = free_port()  # nothing listens there: connection refused
    user = make_user()
    enqueue_email_password_reset(user_id=user.pk, municipality=user.municipality_id)

    work("email")

    retrying = job(f"email-reset-{user.pk}")
    assert retrying.get_status() == "scheduled" and retrying.retries_left == 4


def test_a_reset_email_refused_for_good_is_kept_as_a_dead_letter(smtp, work):
    smtp.rcpt_reply = "550 5.1.1 No such user here"
    user = make_user()
    enqueue_email_password_reset(user_id=user.pk, municipality=user.municipality_id)

    work("email")

    failed = job(f"email-reset-{user.pk}")
    assert failed.get_status() == "failed"
    assert "PermanentJobError: el servidor de correo rechazó al destinatario: 550 5.1.1 No such user here" in error_of(
        failed
    )
    letter = DeadLetter.objects.get(job_id=f"email-reset-{user.pk}")
    assert letter.func_name == "jobs.tasks.email.send_password_reset_email" and letter.kwargs == {
        "user_id": user.pk,
        "municipality": user.municipality_id,
    }


def test_a_reset_email_for_an_account_that_lost_its_password_sends_nothing(smtp, work):
    user = make_user()
    enqueue_email_password_reset(user_id=user.pk, municipality=user.municipality_id)
    user.set_unusable_password()
    user.save()

    work("email")

    assert smtp.messages == []
    assert job(f"email-reset-{user.pk}").return_value() == f"omitido: el usuario {user.pk} no ingresa con contraseña"


@pytest.mark.parametrize(
    "func,kwargs,error",
    [
        ("request_password_reset", {"email": ["ana@example.com"]}, "malformed payload: email is a list, not a string"),
        ("send_password_reset_email", {"user_id": "1 OR 1=1"}, "malformed payload: user_id='1 OR 1=1' is not"),
    ],
)
def test_malformed_reset_jobs_fail_once_with_a_clear_error(smtp, work, func, kwargs, error):
    enqueue_by_hand(f"jobs.tasks.email.{func}", "email-bad", **kwargs)

    work("email")

    failed = job("email-bad")
    assert failed.get_status() == "failed" and f"PermanentJobError: {error}" in error_of(failed)


# --- the links a person follows --------------------------------------------------------------


def test_logged_out_the_home_page_offers_to_log_in_and_sign_up(client):
    html = client.get(reverse("home")).content.decode()

    assert f'href="{reverse("accounts:login")}"' in html and "Ingresar" in html
    assert f'href="{reverse("accounts:signup")}"' in html
    assert reverse("accounts:logout") not in html


def test_logged_in_the_home_page_greets_and_offers_to_log_out_with_a_post(client):
    user = make_user()
    client.force_login(user)

    html = client.get(reverse("home")).content.decode()

    assert "Hola, Ana." in html and f'href="{reverse("accounts:profile")}"' in html
    assert f'<form method="post" action="{reverse("accounts:logout")}">' in html and "Salir" in html
    assert f'href="{reverse("accounts:login")}"' not in html
    assert client.post(reverse("accounts:logout"))["Location"] == reverse("home")
    assert SESSION_KEY not in client.session


def test_login_signup_and_done_pages_lead_somewhere(client):
    login = client.get(reverse("accounts:login")).content.decode()
    signup = client.get(reverse("accounts:signup")).content.decode()
    resend_done = client.post(reverse("accounts:resend"), {"email": "nadie@example.com"}).content.decode()

    assert f'href="{reverse("accounts:password_reset")}"' in login and "¿Olvidaste tu contraseña?" in login
    assert f'href="{reverse("accounts:login")}"' in signup and "¿Ya tenés cuenta?" in signup
    assert "Listo" in resend_done and f'href="{reverse("home")}"' in resend_done

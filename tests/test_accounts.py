"""The flow a person can try: signup, the verify link in all its outcomes, resend, admin, shell."""

from datetime import timedelta

import django_rq
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from ceres_site.accounts import tokens
from ceres_site.accounts.models import User, VerificationToken
from jobs.enqueue.producers import enqueue_email_verify

pytestmark = pytest.mark.django_db(transaction=True)  # producers enqueue on commit


def email_job_ids():
    return django_rq.get_queue("email").job_ids


def make_user(email="ana@example.com", **extra):
    return User.objects.create_user(username=email, email=email, first_name="Ana", **extra)


def signup(client, **fields):
    data = {"email": "Ana@Example.com", "first_name": "Ana", "password": "una-clave-bien-larga-42", **fields}
    return client.post(reverse("accounts:signup"), data)


def test_signup_creates_an_unverified_user_and_enqueues_the_verify_email(client):
    response = signup(client)

    assert response.status_code == 302 and response["Location"] == reverse("accounts:signup_done")
    user = User.objects.get()
    assert user.email == "ana@example.com" and not user.is_verified and user.check_password("una-clave-bien-larga-42")
    assert email_job_ids() == [f"email-verify-{user.pk}"]


def test_signup_with_a_taken_email_answers_as_for_a_new_one_and_tells_the_owner(client, smtp, work):
    owner = make_user()
    new_one = signup(client, email="beto@example.com")

    response = signup(client, password="otra-clave-bien-larga-43")

    assert (response.status_code, response["Location"]) == (new_one.status_code, new_one["Location"])
    assert User.objects.count() == 2 and not User.objects.get(pk=owner.pk).has_usable_password()  # untouched
    assert f"email-exists-{owner.pk}" in email_job_ids()
    work()
    told = [message for message in smtp.messages if message["To"] == "ana@example.com"]
    assert len(told) == 1 and told[0]["Subject"] == "Ya tenés una cuenta en Ceres"
    body = told[0].get_body(("plain",)).get_content()
    assert "ya tiene una" in body and f"{settings.SITE_URL}/accounts/verify/resend/" in body  # not verified yet


@pytest.mark.parametrize(
    "fields,error",
    [
        ({"email": "no-es-un-email"}, "Ingresá una dirección de email válida."),
        ({"first_name": "Ana\r\nBcc: x@example.com"}, "no puede contener saltos de línea"),
        ({"first_name": "A" * 10_000}, "como máximo 150 caracteres"),
        ({"password": "123"}, "contraseña"),
        ({"email": "a" * 140 + "@example.com"}, "como máximo 150 caracteres"),  # the username too
    ],
)
def test_signup_with_bad_input_shows_a_clear_error(client, fields, error):
    response = signup(client, **fields)

    assert response.status_code == 200 and error in response.content.decode()
    assert User.objects.count() == 0 and email_job_ids() == []


def test_one_mailbox_spelled_two_ways_holds_one_account(client):
    assert signup(client, email="ana@münchen.de").status_code == 302
    assert signup(client, email="ana@xn--mnchen-3ya.de").status_code == 302

    assert list(User.objects.values_list("email", flat=True)) == ["ana@xn--mnchen-3ya.de"]
    assert len([job_id for job_id in email_job_ids() if job_id.startswith("email-exists-")]) == 1


@pytest.mark.parametrize(
    "selector,verifier", [("ab\x00cd", "verifier"), ("selector", "ver\x00ifier"), ("ñandú", "x"), ("", "")]
)
def test_a_token_that_was_never_ours_is_invalid_not_an_error(client, selector, verifier):
    response = client.post(reverse("accounts:verify"), {"selector": selector, "verifier": verifier})
    assert response.status_code == 400


def test_signup_page_has_csrf_protection(client):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post(reverse("accounts:signup"), {"email": "a@example.com"})

    assert response.status_code == 403


def verify(client, token, selector=None, verifier=None):
    """What the page's button sends: the two parts of the token the link carries after "#"."""
    data = {"selector": selector or token.selector, "verifier": verifier or token.verifier}
    return client.post(reverse("accounts:verify"), data)


@pytest.mark.parametrize("method", ["get", "head"])
def test_opening_the_link_changes_nothing_until_the_button_is_pressed(client, method):
    user = make_user()
    tokens.token_issue(user=user)

    response = getattr(client, method)(reverse("accounts:verify"))  # what a link scanner or prefetcher does

    assert response.status_code == 200
    user.refresh_from_db()
    assert not user.is_verified and email_job_ids() == []
    assert VerificationToken.objects.get().used_at is None
    if method == "get":
        assert "Confirmar mi cuenta" in response.content.decode()


def test_the_link_keeps_the_token_where_no_log_sees_it(smtp, work):
    """After "#", which browsers never send: the path any server or proxy logs is /accounts/verify/."""
    from tests.test_email_tasks import LINK

    user = make_user()
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    work("email")

    [message] = smtp.messages
    text = message.get_body(("plain",)).get_content()
    link = LINK.search(text).group(0)
    path, _, fragment = link.partition("#")
    assert path.endswith(reverse("accounts:verify")) and "." in fragment
    selector, verifier = fragment.split(".")
    assert VerificationToken.objects.get(user=user).selector == selector and verifier not in path


def test_verify_link_marks_the_user_verified_once_and_enqueues_the_welcome(client):
    user = make_user()
    token = tokens.token_issue(user=user)

    first, second = verify(client, token), verify(client, token)

    assert first.status_code == 200 and "¡Cuenta verificada!" in first.content.decode()
    assert second.status_code == 200 and "ya estaba verificada" in second.content.decode()
    assert all(f'<a href="{reverse("home")}">Ir al inicio</a>' in r.content.decode() for r in (first, second))
    user.refresh_from_db()
    assert user.is_verified
    assert email_job_ids() == [f"email-welcome-{user.pk}"]


def test_tokens_are_stored_only_as_a_hash(client):
    token = tokens.token_issue(user=make_user())

    stored = VerificationToken.objects.get()
    assert stored.selector == token.selector and stored.verifier_hash != token.verifier
    assert token.verifier not in str(VerificationToken.objects.values_list())


def test_expired_link_is_rejected_with_a_way_to_ask_again(client, monkeypatch):
    user = make_user()
    token = tokens.token_issue(user=user)
    later = timezone.now() + timedelta(hours=24, seconds=1)
    monkeypatch.setattr(tokens, "_now", lambda: later)

    response = verify(client, token)

    assert response.status_code == 400 and "El enlace venció" in response.content.decode()
    assert reverse("accounts:resend") in response.content.decode()
    user.refresh_from_db()
    assert not user.is_verified and email_job_ids() == []


def test_wrong_or_unknown_token_is_rejected(client):
    user = make_user()
    token = tokens.token_issue(user=user)

    for selector, verifier in [(token.selector, token.verifier[:-1] + "x"), ("nope", token.verifier)]:
        response = verify(client, token, selector, verifier)
        assert response.status_code == 400 and "no es válido" in response.content.decode()
    user.refresh_from_db()
    assert not user.is_verified


def test_used_token_of_a_user_still_unverified_is_rejected(client):
    user = make_user()
    token = tokens.token_issue(user=user)
    VerificationToken.objects.update(used_at=timezone.now())

    response = verify(client, token)

    assert response.status_code == 400 and "ya fue usado" in response.content.decode()


def test_resend_does_the_same_work_for_any_address_and_mails_only_the_unverified(client, smtp, work):
    user = make_user()
    make_user(email="verificada@example.com", email_verified_at=timezone.now())
    answers, queries, jobs = [], [], []
    for email in ("ANA@example.com", "nadie@example.com", "verificada@example.com"):
        before = set(email_job_ids())
        with CaptureQueriesContext(connection) as captured:
            answers.append(client.post(reverse("accounts:resend"), {"email": email}).content)
        queries.append([query["sql"] for query in captured if "accounts_user" in query["sql"]])
        jobs.append(
            [django_rq.get_queue("email").fetch_job(job_id).func_name for job_id in set(email_job_ids()) - before]
        )

    assert answers[0] == answers[1] == answers[2]
    assert queries == [[], [], []]  # the page looks up no account (its municipality only): the worker does
    assert jobs == [["jobs.tasks.email.resend_verify_email"]] * 3
    work()
    assert [message["To"] for message in smtp.messages] == ["ana@example.com"]
    assert User.objects.get(pk=user.pk).verify_requested_at is not None  # the outbox's record


def test_admin_action_resends_through_the_producer(admin_client):
    pending, fresh = make_user(), make_user(email="beto@example.com")
    verified = make_user(email="caro@example.com", email_verified_at=timezone.now())
    call_command("enqueue_verify", str(pending.pk), stdout=open("/dev/null", "w"))

    response = admin_client.post(
        reverse("admin:accounts_user_changelist"),
        {"action": "resend_verification_email", "_selected_action": [pending.pk, fresh.pk, verified.pk]},
        follow=True,
    )

    assert "Encolados: 1. Ya pendientes o enviados hace instantes: 1. Ya verificados: 1." in response.content.decode()
    assert sorted(email_job_ids()) == sorted([f"email-verify-{pending.pk}", f"email-verify-{fresh.pk}"])


def test_enqueue_verify_command_reports_each_user(capsys):
    ana, beto = make_user(), make_user(email="beto@example.com", email_verified_at=timezone.now())

    call_command("enqueue_verify", "ana@example.com", str(ana.pk), str(beto.pk))

    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"ana@example.com: enqueued as email-verify-{ana.pk}",
        f"{ana.pk}: already pending (queued) as email-verify-{ana.pk}",
        f"{beto.pk}: already verified, nothing to send",
    ]


def test_enqueue_verify_command_fails_for_unknown_users(capsys):
    with pytest.raises(CommandError, match="1 of 1 users not found"):
        call_command("enqueue_verify", "nadie@example.com")
    assert "nadie@example.com: no such user" in capsys.readouterr().err


def test_ensure_admin_creates_the_staff_user_once(settings, client):
    settings.QUEUES_UI_PASS = "clave-del-panel"
    settings.QUEUES_UI_EMAIL = "panel@example.com"

    call_command("ensure_admin", stdout=open("/dev/null", "w"))
    call_command("ensure_admin", stdout=open("/dev/null", "w"))

    admin = User.objects.get(username="admin")
    assert admin.is_staff and admin.is_superuser
    assert admin.email == "panel@example.com"  # a newsletter's test copy reaches it
    assert client.login(username="admin", password="clave-del-panel")


def test_pages_speak_spanish_by_default_and_english_when_asked(client):
    spanish = client.get(reverse("accounts:signup")).content.decode()
    english = client.get(reverse("accounts:signup"), headers={"accept-language": "en"}).content.decode()

    assert "Crear tu cuenta" in spanish and 'lang="es-ar"' in spanish
    assert "Create your account" in english and 'lang="en"' in english


def test_the_home_page_leads_to_the_account_pages(client):
    page = client.get(reverse("home"))

    assert page.status_code == 200  # the welcome email's link lands here
    html = page.content.decode()
    assert "Tus trámites con la municipalidad" in html
    assert f'href="{reverse("accounts:signup")}"' in html and f'href="{reverse("accounts:resend")}"' in html


@pytest.mark.parametrize("path", ["/accounts/verify/abc.def/", "/accounts/verificar/", "/nada"])
def test_unknown_pages_answer_a_spanish_404_in_the_site_s_look(client, path):
    page = client.get(path)

    assert page.status_code == 404
    html = page.content.decode()
    assert "No encontramos esa página" in html and "Ir al inicio" in html and '<html lang="es-ar">' in html


def test_a_bad_request_answers_a_spanish_400(client):
    page = client.get(reverse("home"), HTTP_HOST="no-es-este-sitio.example")  # not in ALLOWED_HOSTS

    assert page.status_code == 400 and "Pedido no válido" in page.content.decode()

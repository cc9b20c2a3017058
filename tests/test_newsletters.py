"""Newsletters: composed and sent from admin, one job per recipient on the bulk queue, paced by the
shared SMTP rate limit, idempotent per person, with one-click unsubscribe (RFC 8058)."""

import os
import re
import signal
import time
from types import SimpleNamespace

import django_rq
import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ceres_site.accounts.models import User
from ceres_site.municipalities.models import Municipality
from ceres_site.newsletters import campaigns
from ceres_site.newsletters.models import Delivery, Newsletter
from ceres_site.newsletters.unsubscribe import unsubscribe_token
from jobs.enqueue.producers import (
    enqueue_email_verify,
    enqueue_newsletter_many,
    enqueue_newsletter_test,
    enqueue_stored_call,
)
from jobs.mail import throttle
from jobs.models import DeadLetter, JobAction
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BODY = "Hola {{ name }}: hay novedades en Ceres.\nPara no recibir más: {{ unsubscribe_url }}"


def subscribers(count: int, **extra) -> list[User]:
    now = timezone.now()
    User.objects.bulk_create(
        User(username=f"vecino{n}@example.com", email=f"vecino{n}@example.com", first_name=f"Vecino {n}", email_verified_at=now, **extra)
        for n in range(count)
    )  # fmt: skip
    return list(User.objects.filter(username__startswith="vecino").order_by("pk"))


def newsletter(subject="Novedades de noviembre") -> Newsletter:
    return Newsletter.objects.create(subject=subject, body_text=BODY, body_html="<p>Hola {{ name }}</p>")


def act(client, action: str, newsletter: Newsletter):
    return client.post(
        reverse("admin:newsletters_newsletter_changelist"),
        {"action": action, "_selected_action": [newsletter.pk]},
        follow=True,
    )


def staff_sender(username="editora", email="editora@example.com", send=True) -> Client:
    user = User.objects.create_user(username=username, email=email, password="x", is_staff=True)
    codenames = ["view_newsletter", "add_newsletter", "change_newsletter", *(["send_newsletter"] if send else [])]
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="newsletters", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def bodies_to(smtp, address: str) -> list:
    return [message for message in smtp.messages if message["To"] == address]


def test_staff_test_send_send_pause_and_resume_from_admin_and_everyone_gets_one_copy(smtp, work):
    people = subscribers(5)
    User.objects.create_user(username="sin-verificar@example.com", email="sin-verificar@example.com")
    draft = newsletter()
    editor = staff_sender()

    act(editor, "test_send", draft)
    work("email")
    [test_copy] = bodies_to(smtp, "editora@example.com")
    assert test_copy["Subject"] == "[Prueba] Novedades de noviembre" and Delivery.objects.count() == 0

    confirmation = act(editor, "send", draft)  # the list's action leads to the confirmation page
    assert confirmation.redirect_chain == [(reverse("admin:newsletters_newsletter_send", args=[draft.pk]), 302)]
    assert "Sí, enviarla a 5 personas" in confirmation.content.decode() and django_rq.get_queue("bulk").count == 0
    page = editor.post(reverse("admin:newsletters_newsletter_send", args=[draft.pk]), follow=True).content.decode()
    assert "enviando a 5 personas" in page
    assert len(django_rq.get_queue("bulk").job_ids) == 5
    act(editor, "pause", draft)
    work("bulk")  # the waiting jobs end without sending
    assert Delivery.objects.count() == 0 and len(smtp.messages) == 1

    assert "quedan 5 copias por enviar" in act(editor, "resume", draft).content.decode()
    work("bulk")
    work("bulk")  # a second pass sends nothing more

    assert sorted(m["To"] for m in smtp.messages[1:]) == sorted(person.email for person in people)
    draft.refresh_from_db()
    progress = editor.get(reverse("admin:newsletters_newsletter_change", args=[draft.pk])).content.decode()
    assert "enviadas 5 · pendientes 0 · fallidas 0 · dadas de baja 0" in progress
    assert '<div class="readonly">enviada</div>' in progress
    kinds = list(JobAction.objects.filter(queue="bulk").order_by("at").values_list("kind", "count", "user__username"))
    assert kinds == [("send", 5, "editora"), ("pause", 0, "editora"), ("resume", 5, "editora")]


def test_a_copy_sent_again_has_the_same_message_id_and_each_test_copy_its_own(smtp, work):
    [ana] = subscribers(1)
    draft = newsletter()
    campaigns.send(draft, None)
    work("bulk")
    Delivery.objects.all().delete()  # as if the worker died between the server's answer and the record
    enqueue_newsletter_many(newsletter_id=draft.pk, user_ids=[ana.pk], municipality=draft.municipality_id)
    work("bulk")
    for _ in range(2):
        enqueue_newsletter_test(newsletter_id=draft.pk, user_id=ana.pk, municipality=draft.municipality_id)
    work("email")

    first, again, *tests = (message["Message-ID"] for message in smtp.messages)
    assert first == again
    assert len({first, *tests}) == 3


def test_sending_needs_the_permission(smtp):
    draft = newsletter()
    reader = staff_sender("lectora", "lectora@example.com", send=False)

    act(reader, "send", draft)

    draft.refresh_from_db()
    assert draft.state == "draft" and django_rq.get_queue("bulk").count == 0


def test_one_click_unsubscribe_works_once_cannot_be_forged_and_stops_the_next_newsletter(smtp, work):
    ana, beto = subscribers(2)
    campaigns.send(newsletter(), None)
    work("bulk")
    message = bodies_to(smtp, ana.email)[0]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(r"<(.+)>", "".join(str(message["List-Unsubscribe"]).split())).group(1)  # unfolded
    assert url in message.get_body(("plain",)).get_content()
    path = url[url.index("/newsletters/") :]
    provider = Client(enforce_csrf_checks=True)  # a mail provider's one-click POST carries no CSRF token

    assert provider.get(path).status_code == 200 and User.objects.get(pk=ana.pk).newsletter_unsubscribed_at is None
    done = provider.post(path, {"List-Unsubscribe": "One-Click"})
    again = provider.post(path, {"List-Unsubscribe": "One-Click"})
    token = path.rstrip("/").rsplit("/", 1)[1]  # signed with its second: not what signing now gives
    forged = provider.post(path.replace(token, token[:-2] + "xx"))
    beto_payload = unsubscribe_token(beto.pk).split(":")[0]
    other = provider.post(path.replace(token, beto_payload + token[token.index(":") :]))  # Ana's signature on Beto

    assert done.status_code == 200 and "Listo: te diste de baja" in done.content.decode()
    assert "Ya te habías dado de baja" in again.content.decode()
    assert forged.status_code == other.status_code == 400
    assert User.objects.get(pk=beto.pk).newsletter_unsubscribed_at is None
    campaigns.send(newsletter(subject="Diciembre"), None)
    work("bulk")
    assert [m["Subject"] for m in bodies_to(smtp, ana.email)] == ["Novedades de noviembre"]
    assert [m["Subject"] for m in bodies_to(smtp, beto.email)] == ["Novedades de noviembre", "Diciembre"]


def test_a_slow_down_answer_halves_the_rate_for_a_while(smtp, work, settings, redis_conn, policy):
    policy("bulk", retry_max=1, retry_intervals=(600,))
    settings.SMTP_RATE_PER_MINUTE = 600
    subscribers(1)
    smtp.rcpt_reply = "451 4.7.1 Please slow down"

    campaigns.send(newsletter(), None)
    work("bulk")

    assert (
        redis_conn.get("ceres:queue:smtp:slowdown") == b"2" and 0 < redis_conn.ttl("ceres:queue:smtp:slowdown") <= 600
    )
    assert django_rq.get_queue("bulk").scheduled_job_registry.count == 1  # delayed, not failed
    assert throttle.slow_down() == 4  # another one halves it again


def test_the_hour_s_cap_counts_in_redis_s_hour_whatever_the_host_s_clock(settings, redis_conn, monkeypatch):
    """Two hosts, one of whose clocks has already passed into the next hour: they share one cap."""
    settings.SMTP_RATE_PER_MINUTE, settings.SMTP_RATE_PER_HOUR = 0, 5  # bulk: no pacing, 80 % of 5 → 4 an hour
    wait_for(lambda: redis_conn.time()[0] % 3600 < 3590, timeout=30)  # not at the very end of Redis's hour
    assert [throttle.take() for _ in range(2)] == [0, 0]

    next_hour = (redis_conn.time()[0] // 3600 + 1) * 3600
    monkeypatch.setattr(throttle, "time", SimpleNamespace(time=lambda: next_hour + 1, sleep=time.sleep))
    assert [throttle.take() for _ in range(2)] == [0, 0]

    assert throttle.take() > 0  # the fifth send of Redis's hour waits for the next one


@pytest.mark.slow
def test_the_limit_holds_across_three_worker_processes_and_verification_does_not_wait(smtp, live_worker):
    """2,000 recipients at 6,000/min (bulk: 80/s) over 3 processes; a verification email enqueued
    early in the campaign goes out while most of the campaign is still to send."""
    people = subscribers(2000)
    for _ in range(3):
        live_worker("email", "slack", "bulk", env={"SMTP_RATE_PER_MINUTE": "6000"})
    campaigns.send(newsletter(), None)
    wait_for(lambda: len(smtp.messages) >= 200, timeout=120)
    newcomer = User.objects.create_user(username="nueva@example.com", email="nueva@example.com", first_name="Nueva")
    enqueue_email_verify(user_id=newcomer.pk, municipality=newcomer.municipality_id)
    wait_for(lambda: bodies_to(smtp, "nueva@example.com"), timeout=60)
    sent_before_it = next(n for n, message in enumerate(smtp.messages) if message["To"] == "nueva@example.com")
    wait_for(lambda: Delivery.objects.count() == 2000, timeout=300, interval=0.5)

    assert sent_before_it < 1000, sent_before_it  # it did not wait behind the campaign: most of it was still queued
    received = sorted(m["To"] for m in smtp.messages if m["To"] != "nueva@example.com")
    assert received == sorted(person.email for person in people)  # one copy each
    times = sorted(t for t, to in zip(smtp.rcpt_times, smtp.rcpt_to) if to != "nueva@example.com")
    interval, window = 60 / (6000 * 0.8), 80
    tight = min(times[n + window] - times[n] for n in range(len(times) - window))
    assert tight >= window * interval - 0.25, tight  # 80 sends take a second, give or take the SMTP jitter
    assert times[-1] - times[0] >= (len(times) - 1) * interval - 0.25


@pytest.mark.slow
def test_workers_killed_mid_campaign_leave_each_person_one_copy_and_one_extra_at_most(smtp, live_worker):
    people = subscribers(200)
    env = {"SMTP_RATE_PER_MINUTE": "1200"}  # 16 per second: slow enough to kill mid-way
    doomed = live_worker("email", "slack", "bulk", env=env)
    campaigns.send(newsletter(), None)
    wait_for(lambda: len(smtp.messages) >= 40, timeout=120)
    os.killpg(doomed.pid, signal.SIGKILL)
    live_worker("email", "slack", "bulk", env=env)
    wait_for(lambda: Delivery.objects.count() == 200, timeout=300, interval=0.5)

    copies = {person.email: len(bodies_to(smtp, person.email)) for person in people}
    assert min(copies.values()) == 1
    extra = sum(count - 1 for count in copies.values())
    assert extra <= 4, copies  # one per job the killed process had mid-send (4 bulk slots)


@pytest.mark.parametrize("kwargs,error", [
    ({"newsletter_id": "x", "user_id": 1}, "malformed payload: newsletter_id='x', user_id=1"),
    ({"newsletter_id": 999, "user_id": 1}, "newsletter 999 does not exist"),
])  # fmt: skip
def test_a_malformed_newsletter_job_fails_once_with_a_clear_error(kwargs, error, work):
    enqueue_stored_call(
        queue_name="bulk", func="jobs.tasks.newsletters.send_newsletter", job_id="bulk-bad-1", kwargs=kwargs
    )

    work("bulk")

    failed = django_rq.get_queue("bulk").fetch_job("bulk-bad-1")
    assert failed.get_status() == "failed" and f"PermanentJobError: {error}" in failed.latest_result().exc_string


@pytest.mark.slow
def test_past_the_hour_s_cap_jobs_wait_unstarted_and_nothing_fails(smtp, live_worker):
    subscribers(6)
    live_worker("email", "slack", "bulk", env={"SMTP_RATE_PER_HOUR": "5"})  # bulk: 80 % of 5 → 4 an hour

    campaigns.send(newsletter(), None)

    queue = django_rq.get_queue("bulk")
    wait_for(
        lambda: Delivery.objects.count() == 4 and queue.count == 2 and not queue.started_job_registry.count, timeout=60
    )
    assert queue.failed_job_registry.count == queue.scheduled_job_registry.count == 0
    assert [queue.fetch_job(job_id).get_status() for job_id in queue.job_ids] == [
        "queued",
        "queued",
    ]  # until the next hour
    assert len(smtp.messages) == 4


def test_a_person_without_a_first_name_is_greeted_without_a_stray_space(smtp, work):
    nameless = User.objects.create(
        username="sin-nombre@example.com", email="sin-nombre@example.com", email_verified_at=timezone.now()
    )
    campaigns.send(newsletter(), None)

    work("bulk")

    [message] = bodies_to(smtp, nameless.email)
    assert message.get_body(("plain",)).get_content().startswith("Hola: hay novedades en Ceres.")
    assert "<p>Hola</p>" in message.get_body(("html",)).get_content()


# --- sending is confirmed on a page of its own; the newsletter's own page sends, pauses and resumes ---


def page_of(client, name: str, draft: Newsletter, **kwargs):
    return client.get(reverse(f"admin:newsletters_newsletter_{name}", args=[draft.pk]), **kwargs)


def csrf_client(username="editora", email="editora@example.com", send=True) -> Client:
    """A staff member's browser: the admin checks CSRF on every POST."""
    client = staff_sender(username, email, send)
    client.handler.enforce_csrf_checks = True
    return client


def post_form(client, url: str, data=None, **kwargs):
    """POST as the page's form does, with the CSRF token the page gave."""
    token = client.cookies["csrftoken"].value
    return client.post(url, {"csrfmiddlewaretoken": token, **(data or {})}, **kwargs)


def test_the_confirmation_page_says_who_how_fast_and_how_long_and_a_get_never_sends(settings):
    settings.SMTP_RATE_PER_MINUTE, settings.SMTP_RATE_PER_HOUR = 10, 0  # bulk: 80 % of it, 8 a minute
    subscribers(120)
    draft = newsletter()
    editor = csrf_client()

    for _ in range(2):
        page = page_of(editor, "send", draft).content.decode()

    assert "120 personas: verificadas, activas y suscriptas" in page
    assert "8 emails por minuto (el 80 % del límite de SMTP" in page
    assert "alrededor de 15 minutos" in page  # 120 ÷ 8 a minute
    assert "Sí, enviarla a 120 personas" in page
    draft.refresh_from_db()
    assert draft.state == "draft" and django_rq.get_queue("bulk").count == 0 and not JobAction.objects.exists()

    settings.SMTP_RATE_PER_HOUR = 100  # bulk: 80 an hour, slower than 8 a minute: the hour's cap sets the pace
    page = page_of(editor, "send", draft).content.decode()
    assert "8 emails por minuto, hasta 80 por hora" in page and "alrededor de 1 hora y 30 minutos" in page

    settings.SMTP_RATE_PER_MINUTE = settings.SMTP_RATE_PER_HOUR = 0
    page = page_of(editor, "send", draft).content.decode()
    assert "No hay un límite de SMTP configurado" in page and "Depende del servidor de correo" in page


def test_the_estimate_is_the_recipients_over_the_rate_the_limit_allows(settings):
    settings.SMTP_RATE_PER_MINUTE, settings.SMTP_RATE_PER_HOUR, settings.SMTP_TRANSACTIONAL_SHARE = 600, 0, 0.2
    interval_ms, _ = throttle.bulk_limits()
    pace = campaigns.pace(Municipality.objects.default())

    assert pace.per_minute == 60_000 / interval_ms == 480
    assert pace.seconds_for(48_000) == 6000  # 100 minutes
    assert campaigns.Pace(0, 0).seconds_for(10) is None


def test_confirming_sends_once_audited_and_needs_the_csrf_token():
    subscribers(3)
    draft = newsletter()
    editor = csrf_client()
    send_url = reverse("admin:newsletters_newsletter_send", args=[draft.pk])
    page_of(editor, "send", draft)

    assert editor.post(send_url).status_code == 403  # no token: a page elsewhere cannot send it
    assert django_rq.get_queue("bulk").count == 0

    done = post_form(editor, send_url, follow=True)
    again = post_form(editor, send_url, follow=True)  # a second click, or the form sent again

    assert done.redirect_chain[-1][0] == reverse("admin:newsletters_newsletter_change", args=[draft.pk])
    assert "Novedades de noviembre: enviando a 3 personas." in done.content.decode()
    assert "ya no es un borrador (está en estado «enviándose»)" in again.content.decode()
    assert len(django_rq.get_queue("bulk").job_ids) == 3
    assert list(JobAction.objects.values_list("kind", "count", "user__username")) == [("send", 3, "editora")]
    assert "ya se hizo" in page_of(editor, "send", draft).content.decode()  # the page offers no second send


def test_nobody_to_send_to_leaves_the_draft_a_draft():
    draft = newsletter()
    editor = csrf_client()

    assert "no hay a quién enviarla" in page_of(editor, "send", draft).content.decode()
    page_of(editor, "change", draft)
    said = post_form(editor, reverse("admin:newsletters_newsletter_send", args=[draft.pk]), follow=True)

    assert "no hay nadie suscripto" in said.content.decode()
    draft.refresh_from_db()
    assert draft.state == "draft" and not JobAction.objects.exists()


def test_without_the_send_permission_the_pages_refuse_and_show_no_buttons():
    subscribers(2)
    draft = newsletter()
    reader = csrf_client("lectora", "lectora@example.com", send=False)

    own_page = page_of(reader, "change", draft).content.decode()
    assert "Vista previa" in own_page and "Enviar a todos los suscriptos…" not in own_page
    assert page_of(reader, "send", draft).status_code == 403
    for name in ("send", "pause", "resume"):
        url = reverse(f"admin:newsletters_newsletter_{name}", args=[draft.pk])
        assert post_form(reader, url).status_code == 403
    assert act(reader, "send", draft).redirect_chain == []  # the list's action is not even offered

    draft.refresh_from_db()
    assert draft.state == "draft" and django_rq.get_queue("bulk").count == 0 and not JobAction.objects.exists()


LIVE = 'class="newsletter-panel" data-live'  # the page refreshes it while copies are pending


def test_the_newsletter_s_own_page_shows_its_progress_and_pauses_and_resumes_it(smtp, work):
    people = subscribers(4)
    draft = newsletter()
    editor = csrf_client()
    page_of(editor, "change", draft)
    post_form(editor, reverse("admin:newsletters_newsletter_send", args=[draft.pk]))
    Delivery.objects.create(newsletter=draft, user=people[0])  # one copy already out

    sending = page_of(editor, "change", draft).content.decode()
    assert '<progress max="4" value="1"' in sending and "1 de 4 copias resueltas (25 %)" in sending
    assert LIVE in sending and "Pausar el envío" in sending and "Reanudar el envío" not in sending

    paused = post_form(editor, reverse("admin:newsletters_newsletter_pause", args=[draft.pk]), follow=True)
    paused = paused.content.decode()
    assert "Novedades de noviembre: en pausa." in paused
    assert "Reanudar el envío" in paused and "Pausar el envío" not in paused and LIVE not in paused
    work("bulk")  # the waiting jobs end without sending
    assert Delivery.objects.count() == 1

    resumed = post_form(editor, reverse("admin:newsletters_newsletter_resume", args=[draft.pk]), follow=True)
    assert "quedan 3 copias por enviar" in resumed.content.decode()
    work("bulk")
    finished = page_of(editor, "change", draft).content.decode()

    assert '<progress max="4" value="4"' in finished and "4 de 4 copias resueltas (100 %)" in finished
    assert LIVE not in finished and "Pausar el envío" not in finished
    assert sorted(m["To"] for m in smtp.messages) == sorted(p.email for p in people[1:])
    kinds = list(JobAction.objects.order_by("at").values_list("kind", "count", "user__username"))
    assert kinds == [("send", 4, "editora"), ("pause", 0, "editora"), ("resume", 3, "editora")]


def test_a_get_on_pause_or_resume_changes_nothing():
    subscribers(1)
    draft = newsletter()
    campaigns.send(draft, None)
    editor = staff_sender()

    for name in ("pause", "resume", "test"):
        assert page_of(editor, name, draft, follow=True).redirect_chain[-1][0] == reverse(
            "admin:newsletters_newsletter_change", args=[draft.pk]
        )
    draft.refresh_from_db()
    assert draft.state == "sending" and JobAction.objects.count() == 1


# --- both bodies are checked when saved, previewed as they read, and a broken one fails for good --------

BROKEN_TEXT = "Hola {{ name }}:\n{% if name %}sin cerrar"
BROKEN_HTML = "<p>Hola</p>\n\n<p>{{ name|no_such_filter }}</p>"


@pytest.mark.parametrize("field,body,said", [
    ("body_text", BROKEN_TEXT, "Esta plantilla tiene un error en la línea 2. Detalle: Unclosed tag on line 2: &#x27;if&#x27;"),
    ("body_html", BROKEN_HTML, "Esta plantilla tiene un error en la línea 3. Detalle: Invalid filter: &#x27;no_such_filter&#x27;"),
    ("body_text", "{% url 'no-such-page' %}", "Esta plantilla tiene un error en la línea 1. Detalle: Reverse for"),
])  # fmt: skip
def test_a_broken_body_is_refused_when_saved_with_a_spanish_form_error(field, body, said):
    editor = staff_sender()
    data = {"subject": "Roto", "body_text": BODY, "body_html": "<p>Hola {{ name }}</p>", field: body}

    response = editor.post(reverse("admin:newsletters_newsletter_add"), data)

    assert response.status_code == 200 and said in response.content.decode()
    assert not Newsletter.objects.exists()
    draft = newsletter()
    response = editor.post(reverse("admin:newsletters_newsletter_change", args=[draft.pk]), {**data, "subject": "x"})
    assert said in response.content.decode()
    draft.refresh_from_db()
    assert draft.subject == "Novedades de noviembre"


def test_save_and_preview_shows_both_bodies_rendered_for_the_staff_member():
    editor = staff_sender()
    User.objects.filter(username="editora").update(first_name="Editora")
    data = {"subject": "Avisos", "body_text": BODY + "\n<script>alert(1)</script>",
            "body_html": '<p>Hola <b>{{ name }}</b> & <a href="{{ unsubscribe_url }}">baja</a></p>',
            "_preview": "Guardar y ver la vista previa"}  # fmt: skip

    response = editor.post(reverse("admin:newsletters_newsletter_add"), data, follow=True)

    draft = Newsletter.objects.get()
    assert response.redirect_chain[-1][0] == reverse("admin:newsletters_newsletter_preview", args=[draft.pk])
    page = response.content.decode()
    assert "Así la lee Editora" in page
    assert "Hola Editora: hay novedades en Ceres.\nPara no recibir más: http" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page  # text shown as text
    srcdoc = (
        '<iframe class="newsletter-html" sandbox srcdoc="&lt;p&gt;Hola &lt;b&gt;Editora&lt;/b&gt; &amp; &lt;a href='
    )
    assert srcdoc in page  # the HTML in a sandbox (no scripts), escaped into its attribute


def test_an_old_broken_draft_s_preview_and_test_copy_say_the_error_and_send_nothing(smtp, work):
    draft = Newsletter.objects.create(subject="Rota", body_text=BROKEN_TEXT)  # saved before bodies were checked
    editor = csrf_client()

    preview = page_of(editor, "preview", draft).content.decode()
    assert "Esta plantilla tiene un error en la línea 2" in preview
    test_url = reverse("admin:newsletters_newsletter_test", args=[draft.pk])
    said = post_form(editor, test_url, follow=True).content.decode()  # the button on its page
    said += act(staff_sender("otra", "otra@example.com"), "test_send", draft).content.decode()  # the list's action

    assert said.count("Rota: no se envió la copia de prueba. Esta plantilla tiene un error en la línea 2") == 2
    assert "va una copia de prueba" not in said
    assert django_rq.get_queue("email").count == 0

    subscribers(2)
    confirmation = page_of(editor, "send", draft).content.decode()
    assert "Esta plantilla tiene un error en la línea 2" in confirmation and "Sí, enviarla" not in confirmation
    refused = post_form(editor, reverse("admin:newsletters_newsletter_send", args=[draft.pk]), follow=True)
    assert "Rota no se envió. Esta plantilla tiene un error en la línea 2" in refused.content.decode()
    draft.refresh_from_db()
    assert draft.state == "draft" and django_rq.get_queue("bulk").count == 0


def test_a_template_error_at_send_time_is_a_final_failure_at_once_for_the_test_copy_and_the_sends(smtp, work):
    people = subscribers(2)
    draft = newsletter()
    campaigns.send(draft, None)
    Newsletter.objects.filter(pk=draft.pk).update(body_html=BROKEN_HTML)  # broken after it was checked
    editor = User.objects.get(username=people[0].username)
    test_job = enqueue_newsletter_test(newsletter_id=draft.pk, user_id=editor.pk, municipality=draft.municipality_id)

    work("email")
    work("bulk")

    assert smtp.messages == []
    for queue_name, count in (("email", 1), ("bulk", 2)):
        queue = django_rq.get_queue(queue_name)
        assert queue.failed_job_registry.count == count and queue.scheduled_job_registry.count == 0  # no retry
    letters = DeadLetter.objects.order_by("queue", "job_id")
    assert [(row.queue, row.exc_type, len(row.attempts)) for row in letters] == [
        ("bulk", "PermanentJobError", 1), ("bulk", "PermanentJobError", 1), ("email", "PermanentJobError", 1),
    ]  # fmt: skip
    assert f"newsletter {draft.pk} has a template error: line 3: Invalid filter" in letters[2].exc_message
    failed = django_rq.get_queue("email").fetch_job(test_job.job_id)
    assert failed.get_status() == "failed" and failed.return_value() is None  # the test copy never says "sent"
    assert campaigns.progress(draft).failed == 2


# --- the unsubscribe page asks before the click, says it is done after it, and never asks again ---------


def test_the_unsubscribe_page_asks_first_then_says_done_and_never_asks_again():
    [ana] = subscribers(1)
    path = reverse("newsletters:unsubscribe", args=[unsubscribe_token(ana.pk)])
    person = Client(enforce_csrf_checks=True)

    before = person.get(path).content.decode()
    assert "¿Dejar de recibir newsletters?" in before and "Si te das de baja, no vas a recibir" in before
    assert "Sí, darme de baja" in before and "Listo" not in before and "Te diste de baja" not in before
    assert User.objects.get(pk=ana.pk).newsletter_unsubscribed_at is None

    clicked = person.post(path, follow=True)  # the page's button
    assert clicked.redirect_chain == [(path + "?done", 302)]  # a reload shows this again, not "send the form again?"
    after = clicked.content.decode()
    assert "Listo: te diste de baja" in after and "<form" not in after and "Si te das de baja" not in after
    assert User.objects.get(pk=ana.pk).newsletter_unsubscribed_at is not None

    later = person.get(path).content.decode()  # the link opened again from the email
    assert "Ya te habías dado de baja" in later and "<form" not in later and "¿Dejar de recibir" not in later

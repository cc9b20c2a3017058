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
from jobs.models import JobAction
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

    page = act(editor, "send", draft).content.decode()
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
    enqueue_newsletter_many(newsletter_id=draft.pk, user_ids=[ana.pk])
    work("bulk")
    for _ in range(2):
        enqueue_newsletter_test(newsletter_id=draft.pk, user_id=ana.pk)
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

    assert done.status_code == 200 and "no vas a recibir más newsletters" in done.content.decode()
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
    enqueue_email_verify(user_id=newcomer.pk)
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

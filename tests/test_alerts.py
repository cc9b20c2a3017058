"""Final failures: one alert, one archive row, whatever way the job died; Slack's answers handled."""

import os
import signal
import time

import django_rq
import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from werkzeug import Response

from ceres_site.accounts.models import User
from jobs.enqueue import clients
from jobs.enqueue.producers import enqueue_email_verify, enqueue_slack_alert, enqueue_stored_call
from jobs.failures.dead_letters import MASKED, CannotRetry, dead_letter_retry
from jobs.failures.final import fingerprint, sweep_failures
from jobs.models import DeadLetter
from jobs.observability import metrics
from tests.conftest import promote_scheduled, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def run_call(func: str, job_id: str, queue: str = "email", **kwargs):
    return enqueue_stored_call(queue_name=queue, func=f"tests.tasks.{func}", job_id=job_id, kwargs=kwargs)


def fetch(job_id, queue="email"):
    return django_rq.get_queue(queue).fetch_job(job_id)


def flush_now(work):
    """Let the alert window pass: run the scheduled flush, then the Slack post it enqueues."""
    promote_scheduled("slack")
    work("slack")


def test_a_job_failing_every_attempt_alerts_once_after_the_last(slack, policy, work_until, work):
    policy("email", retry_intervals=(0,), retry_max=2, alert_window=1)
    run_call("always_fail", "email-doomed-1", message="SMTP is on fire")

    work("email")  # interval 0: the three attempts run back to back
    assert fetch("email-doomed-1").get_status() == "failed"
    assert slack.requests == []  # nothing before the alert window closes
    work_until(lambda: slack.requests, "slack", timeout=15)
    sweep_failures()  # the other path finds the failure archived...
    flush_now(work)  # ...and any flush still to come runs now: no second alert

    [text] = slack.texts
    row = DeadLetter.objects.get()
    assert "*email*" in text and "`email-doomed-1` (tests.tasks.always_fail)" in text
    assert "• intentos: 3" in text and "• error: RuntimeError: SMTP is on fire" in text
    assert "(Córdoba)" in text and f"/admin/jobs/deadletter/{row.pk}/change/|Ver en admin>" in text
    assert row.alert == "sent" and row.alerted_at and len(row.attempts) == 3
    assert row.exc_type == "RuntimeError" and row.kwargs == {"message": "SMTP is on fire"}


def test_a_job_that_fails_twice_then_succeeds_alerts_nothing(slack, policy, work):
    policy("email", retry_intervals=(0,), alert_window=1)
    run_call("fail_times", "email-flaky-1", counter="flaky", times=2)

    work("email")
    flush_now(work)  # any flush the attempts scheduled runs now

    assert fetch("email-flaky-1").get_status() == "finished"
    assert slack.requests == [] and DeadLetter.objects.count() == 0


def test_a_killed_work_horse_on_the_last_attempt_alerts_once(slack, policy, work):
    # A forking queue: in an in-process worker, a job that kills its process is a dead worker (test_slots).
    policy("files", retry_intervals=(0,), retry_max=1, alert_window=1)
    run_call("kill_self", "files-oom-1", queue="files")

    work("files")
    flush_now(work)
    sweep_failures()
    flush_now(work)

    assert fetch("files-oom-1", queue="files").get_status() == "failed"
    row = DeadLetter.objects.get()
    assert row.exc_type == "WorkHorseKilled" and "signal 9" in row.exc_message and len(row.attempts) == 2
    [text] = slack.texts
    assert "WorkHorseKilled" in text


HEARTBEAT_BOUND = 90  # s: a started job's heartbeat lasts min(timeout, 30) + 60 s after the worker dies


def test_a_dead_worker_s_job_is_swept_once_within_the_heartbeat_bound(slack, policy, live_worker, work):
    policy("email", retry_max=0, alert_window=1)
    run_call("sleep", "email-orphan-1", seconds=60)
    worker = live_worker("email")
    wait_for(lambda: fetch("email-orphan-1").get_status() == "started", timeout=30)

    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its work-horse die at once: no callback runs
    worker.wait()
    assert sweep_failures() == 0  # its heartbeat still vouches for it
    assert sweep_failures(now=time.time() + HEARTBEAT_BOUND) == 1
    assert sweep_failures(now=time.time() + HEARTBEAT_BOUND) == 0
    flush_now(work)

    assert fetch("email-orphan-1").get_status() == "failed"
    row = DeadLetter.objects.get()
    assert row.exc_type == "AbandonedJobError"
    [text] = slack.texts
    assert "email-orphan-1" in text and "AbandonedJobError" in text


def test_an_alert_storm_becomes_one_summary(slack, policy, work):
    policy("email", retry_max=0, alert_window=60)
    for n in range(200):
        run_call("always_fail", f"email-storm-{n}", message=f"SMTP down #{n}")

    work("email")
    flush_now(work)

    assert DeadLetter.objects.count() == 200
    [text] = slack.texts
    assert (
        "200 jobs fallaron definitivamente en *email* en los últimos 1 min: RuntimeError ×200 (p. ej.: SMTP down #"
        in text
    )
    assert set(DeadLetter.objects.values_list("alert", flat=True)) == {"summary"}


def test_a_summary_names_what_the_mail_server_answered_without_the_addresses(slack, smtp, policy, work, admin_client):
    policy("email", alert_window=60)
    smtp.rcpt_reply = "550 5.1.1 <ana@example.com>: Recipient address rejected"
    for n in range(2):
        user = User.objects.create_user(username=f"p{n}@example.com", email=f"p{n}@example.com")
        enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)

    work("email")
    flush_now(work)

    [text] = slack.texts
    said = "el servidor de correo rechazó al destinatario: 550 5.1.1 &lt;…&gt;: Recipient address rejected"
    assert f"PermanentJobError ×2 (p. ej.: {said})" in text
    assert "example.com" not in text
    archive = admin_client.get(reverse("admin:jobs_deadletter_changelist")).content.decode()
    assert archive.count(f"PermanentJobError — {said}") == 2  # the list says it too


def test_expected_errors_are_archived_without_an_alert(slack, policy, work):
    policy("email", retry_max=0, alert_window=1, expected_errors=("RuntimeError",))
    run_call("always_fail", "email-expected-1")

    work("email")
    flush_now(work)

    row = DeadLetter.objects.get()
    assert row.alert == "skipped" and row.alert_note == "error esperado (RuntimeError)"
    assert slack.requests == []


def test_without_a_webhook_the_archive_says_no_alert_went_out(settings, policy, work):
    settings.SLACK_WEBHOOK_URL = ""
    policy("email", retry_max=0, alert_window=1)
    run_call("always_fail", "email-unheard-1")

    work("email")

    row = DeadLetter.objects.get()
    assert row.alert == "skipped" and "no hay webhook de Slack" in row.alert_note
    assert django_rq.get_queue("slack").count == 0 and django_rq.get_queue("slack").scheduled_job_registry.count == 0


def test_positional_secrets_are_never_archived_in_clear_whatever_their_length(settings, policy, work, admin_client):
    settings.SLACK_WEBHOOK_URL = ""
    policy("email", retry_max=0)
    sign_in = {"queue_name": "email", "func": "tests.tasks.sign_in", "kwargs": {}}
    enqueue_stored_call(**sign_in, job_id="email-sign-in-1", args=["ana", "pw1"])
    enqueue_stored_call(**sign_in, job_id="email-sign-in-2", args=["ana", "pw2", "x" * 300])  # `*extra`: unnamed
    enqueue_stored_call(queue_name="email", func="os.system", job_id="email-stranger-1", kwargs={}, args=["pin 4321"])

    work("email")

    rows = {row.job_id: row for row in DeadLetter.objects.all()}
    assert rows["email-sign-in-1"].args == ["ana", MASKED]  # the password's parameter says it is a secret
    assert rows["email-sign-in-2"].args == ["ana", MASKED, MASKED]
    assert rows["email-stranger-1"].args == [MASKED]  # not a task: no name to go by, so nothing is kept
    archive = "".join(admin_client.get(reverse("admin:jobs_deadletter_change", args=[row.pk])).content.decode()
                      for row in rows.values())  # fmt: skip
    assert "pw1" not in archive and "pw2" not in archive and "4321" not in archive
    with pytest.raises(CannotRetry, match="se ocultaron al archivarlo"):
        dead_letter_retry(dead_letter=rows["email-sign-in-1"])


def test_user_text_is_escaped_for_slack(slack, policy, work):
    policy("email", retry_max=0, alert_window=1)
    run_call("always_fail", "email-xss-1", message="<!channel> hola <script>alert(1)</script> & <http://evil|clic>")

    work("email")
    flush_now(work)

    [text] = slack.texts
    assert "&lt;!channel&gt; hola &lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;http://evil|clic&gt;" in text
    assert "<!channel>" not in text and "<http://evil" not in text


# --- the slack queue against Slack's answers ------------------------------------------------


def test_slack_500_retries_three_times_then_fails_without_alerting_about_itself(slack, policy, smtp, work_until, work):
    policy("slack", retry_intervals=(0,))
    slack.answers = [Response("internal_error", status=500)] * 4
    enqueue_slack_alert(text="hola", dedupe_key="t500")

    work("slack")

    job = fetch("slack-t500", "slack")
    assert job.get_status() == "failed" and len(slack.requests) == 4
    row = DeadLetter.objects.get()
    assert row.queue == "slack" and row.alert == "skipped" and row.exc_type == "SlackUnavailable"
    sweep_failures()
    assert promote_scheduled("slack") == []  # no flush, so no alert about the slack queue
    # the email queue keeps working meanwhile
    user = User.objects.create_user(username="a@example.com", email="a@example.com")
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    work("email")
    assert len(smtp.messages) == 1


def test_slack_messages_sent_counts_the_posts_slack_accepted_and_a_failed_job_keeps_its_counts(slack, policy, work):
    """A slot holds a task's counts for the pipeline that ends its job; a job that fails after counting
    keeps them all the same."""
    policy("email", retry_max=0)
    slack.answers = [Response("ok"), Response("invalid_payload", status=400), Response("ok"), Response("ok")]
    for n in range(4):
        enqueue_slack_alert(text=f"hola {n}", dedupe_key=f"count{n}")
    run_call("count_then_fail", "counted", queue_name="email")

    work("slack", "email")

    counters = clients.redis().hgetall(metrics._key())
    assert len(slack.requests) == 4
    assert counters[b"slack_messages_sent:slack"] == b"3"
    assert counters[b"alerts:email"] == b"1"
    assert fetch("counted").get_status() == "failed"


@pytest.mark.slow
def test_slack_429_waits_for_retry_after_then_posts(slack, work_until):
    slack.answers = [Response("rate_limited", status=429, headers={"Retry-After": "3"})]
    enqueue_slack_alert(text="hola", dedupe_key="t429")

    work_until(lambda: len(slack.requests) == 2, "slack", timeout=20)

    (first, _), (second, _) = slack.requests
    job = fetch("slack-t429", "slack")
    assert 3 <= second - first  # Retry-After, not the policy's 2 s...
    assert job.retry_intervals[0] == 4  # ...and no longer: RQ rounds the retry time down to a second
    assert job.get_status() == "finished"


@pytest.mark.parametrize("error", ["invalid_payload", "no_service", "channel_not_found"])
def test_slack_4xx_is_permanent(slack, work, error):
    slack.answers = [Response(error, status=400 if error == "invalid_payload" else 404)]
    enqueue_slack_alert(text="hola", dedupe_key="t4xx")

    work("slack")

    job = fetch("slack-t4xx", "slack")
    assert job.get_status() == "failed" and len(slack.requests) == 1
    assert "PermanentJobError: Slack rechazó el mensaje" in job.latest_result().exc_string
    assert error in DeadLetter.objects.get().exc_message


def test_slack_timeout_is_retried(slack, settings, work):
    settings.SLACK_TIMEOUT = 0.3

    def slow():
        time.sleep(1)
        return Response("ok")

    slack.answers = [slow]
    enqueue_slack_alert(text="hola", dedupe_key="tslow")

    work("slack")

    job = fetch("slack-tslow", "slack")
    assert job.get_status() == "scheduled" and job.retries_left == 2
    assert "SlackUnavailable: Slack did not answer in time" in job.meta["failures"][0]["error"]


@pytest.mark.parametrize("bypassed", [False, True])
def test_slack_posts_follow_the_environments_proxy_settings(slack, settings, monkeypatch, work, bypassed):
    """Read once per session, still the environment's: HTTP_PROXY carries the post, NO_PROXY skips it."""
    proxied = settings.SLACK_WEBHOOK_URL.replace("localhost", "slack.example.invalid")
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", slack.server.url_for("/"))  # the sink, answering as a proxy would
    if bypassed:
        monkeypatch.setenv("NO_PROXY", "slack.example.invalid")  # straight to a host that does not exist
    settings.SLACK_WEBHOOK_URL = proxied
    enqueue_slack_alert(text="por el proxy", dedupe_key="tproxy")

    work("slack")

    job = fetch("slack-tproxy", "slack")
    if bypassed:
        assert slack.texts == [] and job.get_status() == "scheduled"
        assert "cannot reach Slack (ConnectionError)" in job.meta["failures"][0]["error"]
    else:
        assert slack.texts == ["por el proxy"] and job.get_status() == "finished"


def test_the_webhook_url_appears_in_no_log_line_nor_error(settings, work, worker_log, policy):
    policy("slack", retry_max=0)
    settings.SLACK_WEBHOOK_URL = "http://127.0.0.1:9/services/T0/B0/hush-hush-secret"  # nothing listens
    enqueue_slack_alert(text="hola", dedupe_key="tdown")

    work("slack")

    job = fetch("slack-tdown", "slack")
    assert job.get_status() == "failed"
    assert "cannot reach Slack (ConnectionError)" in job.latest_result().exc_string
    seen = worker_log() + job.latest_result().exc_string + DeadLetter.objects.get().traceback
    assert "jobs.failures.final: job slack-tdown failed for good in slack: SlackUnavailable" in seen  # the log was read
    assert "hush-hush-secret" not in seen and "127.0.0.1:9" not in seen


def test_no_webhook_logs_the_alert_at_error_and_never_crashes(settings, work, worker_log):
    settings.SLACK_WEBHOOK_URL = ""
    enqueue_slack_alert(text="se cayó el SMTP", dedupe_key="tnone")

    work("slack")

    assert (
        fetch("slack-tnone", "slack").return_value() == "omitido: no hay webhook configurado"
    )  # a result staff read, in es-AR
    assert (
        "ERROR jobs.tasks.slack: Slack webhook not configured (SLACK_WEBHOOK_URL); alert not sent: se cayó el SMTP"
        in worker_log()
    )


def test_a_missing_webhook_is_a_startup_warning(settings):
    from django.core import checks

    settings.SLACK_WEBHOOK_URL = ""
    assert "jobs.W001" in [message.id for message in checks.run_checks()]
    settings.SLACK_WEBHOOK_URL = "https://hooks.slack.com/services/T/B/x"
    assert "jobs.W001" not in [message.id for message in checks.run_checks()]


# --- the dead-letter archive ----------------------------------------------------------------


def test_retry_from_the_archive_after_redis_dropped_the_job(slack, policy, work, admin_client):
    policy("email", retry_max=0, alert_window=1)
    run_call("fail_times", "email-late-1", counter="late", times=1)
    work("email")
    row = DeadLetter.objects.get()
    fetch("email-late-1").delete()  # what failure_ttl does after 24 h

    selection = {"action": "retry", "_selected_action": [row.pk]}
    asked = admin_client.post(reverse("admin:jobs_deadletter_changelist"), selection)  # asks first
    assert "Sí, estoy seguro" in asked.content.decode() and fetch("email-late-1") is None
    response = admin_client.post(
        reverse("admin:jobs_deadletter_changelist"), {**selection, "confirm": "yes", "reason": "SMTP back"}, follow=True
    )
    work("email")

    assert "Se volvió a encolar email-late-1." in response.content.decode()
    assert fetch("email-late-1").get_status() == "finished"
    row.refresh_from_db()
    assert row.retried_at and row.retried_by.username == "admin"


def test_the_archive_s_detail_page_retries_and_reads_well(slack, policy, work, admin_client, client):
    policy("email", retry_max=1, retry_intervals=(0,), alert_window=1)
    run_call("fail_times", "email-twice-1", counter="twice", times=2)
    work("email")
    work("email")
    row = DeadLetter.objects.get()
    page = admin_client.get(reverse("admin:jobs_deadletter_change", args=[row.pk])).content.decode()

    assert 'action="{}"'.format(reverse("admin:jobs_deadletter_retry", args=[row.pk])) in page
    assert '<pre class="dash-tb">Traceback (most recent call last):\n  File ' in page  # indentation kept
    assert page.count("<tr><td><time") == 2 and "transient trouble #2" in page  # the attempts, in a table
    assert row.traceback.splitlines()[1].startswith("  ")
    listing = admin_client.get(reverse("admin:jobs_deadletter_changelist")).content.decode()
    assert ">abierta<" in listing and "Reintentado el" not in listing  # one state column: the list fits

    change = reverse("admin:jobs_deadletter_change", args=[row.pk])
    assert (
        admin_client.get(reverse("admin:jobs_deadletter_retry", args=[row.pk]))["Location"] == change
    )  # a GET changes nothing
    viewer = User.objects.create_user(username="viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(viewer)
    assert client.post(reverse("admin:jobs_deadletter_retry", args=[row.pk])).status_code == 403
    admin_client.post(reverse("admin:jobs_deadletter_retry", args=[row.pk]), {"confirm": "yes", "reason": "once more"})
    work("email")

    assert fetch("email-twice-1").get_status() == "finished"
    row.refresh_from_db()
    assert row.retried_by.username == "admin"
    assert ">reintentada el <time" in admin_client.get(reverse("admin:jobs_deadletter_changelist")).content.decode()


def test_retry_needs_the_permission(client, policy, work):
    policy("email", retry_max=0, alert_window=1)
    run_call("always_fail", "email-perm-1")
    work("email")
    row = DeadLetter.objects.get()
    staff = User.objects.create_user(username="staff", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(staff)

    client.post(
        reverse("admin:jobs_deadletter_changelist"),
        {"action": "retry", "_selected_action": [row.pk], "confirm": "yes", "reason": "x"},
    )

    assert fetch("email-perm-1").get_status() == "failed"  # not re-enqueued
    row.refresh_from_db()
    assert row.retried_at is None


def test_retry_respects_uniqueness(policy, work):
    policy("email", retry_max=0, alert_window=1)
    run_call("always_fail", "email-twice-1")
    work("email")
    row = DeadLetter.objects.get()

    first, second = dead_letter_retry(dead_letter=row), dead_letter_retry(dead_letter=row)

    assert first.created and not second.created
    assert django_rq.get_queue("email").job_ids == ["email-twice-1"]


def test_old_dead_letters_are_pruned_by_the_maintenance_queue(policy, work):
    from datetime import timedelta

    from django.utils import timezone

    from jobs.enqueue.producers import enqueue_cron_run

    policy("email", retry_max=0, alert_window=1)
    for n in range(3):
        run_call("always_fail", f"email-old-{n}")
    work("email")
    DeadLetter.objects.filter(job_id="email-old-0").update(failed_at=timezone.now() - timedelta(days=91))
    DeadLetter.objects.filter(job_id="email-old-1").update(failed_at=timezone.now() - timedelta(days=89))
    enqueue_cron_run(name="prune-dead-letters", slot=timezone.now(), queue_name="maintenance")

    work("maintenance")

    assert sorted(DeadLetter.objects.values_list("job_id", flat=True)) == ["email-old-1", "email-old-2"]


def test_fingerprint_reads_the_exception_type_and_first_line():
    traceback = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in f\n    raise X\n'
        "smtplib.SMTPServerDisconnected: Connection unexpectedly closed\n"
    )
    assert fingerprint(traceback) == ("SMTPServerDisconnected", "Connection unexpectedly closed")
    assert fingerprint("Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ")[0] == "WorkHorseKilled"
    assert fingerprint("Moved to FailedJobRegistry, due to AbandonedJobError, at 2026")[0] == "AbandonedJobError"

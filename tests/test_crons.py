"""Crons: Córdoba time whatever the server's TZ, one run per slot, no replay storm, a dead-man alarm."""

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import django_rq
import pytest
from django.core.management import call_command
from django.utils import timezone

from ceres_site.accounts.models import User, VerificationToken
from ceres_site.accounts.reports import report_daily
from ceres_site.accounts.tokens import tokens_clean
from jobs.config import crons
from jobs.enqueue.producers import enqueue_cron_run
from jobs.failures.alarms import check_crons
from jobs.models import CronRun
from jobs.observability import series
from tests.conftest import BASE_DIR, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def clock(monkeypatch):
    """Set the cron machinery's clock: `clock("2026-11-29 10:00")` (UTC)."""

    def set_to(moment: str):
        at = datetime.fromisoformat(moment).replace(tzinfo=UTC)
        monkeypatch.setattr(crons, "now", lambda: at)
        return at

    return set_to


def scheduler():
    return django_rq.get_scheduler("maintenance")


def runs(name: str) -> list[str]:
    return [
        f"{slot:%d %H:%M}" for slot in CronRun.objects.filter(name=name).order_by("slot").values_list("slot", flat=True)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("server_tz", ["UTC", "America/Argentina/Cordoba", "Asia/Tokyo"])
def test_nine_in_the_morning_is_twelve_utc_whatever_the_server_tz(server_tz, redis_conn):
    env = {**os.environ, "TZ": server_tz}
    code = (
        "import django, time; django.setup()\n"
        "from datetime import datetime, UTC\n"
        "from jobs.config.crons import SPECS\n"
        "print(time.strftime('%z'), SPECS['daily-report'].next_slot(datetime(2026, 11, 29, 1, 0, tzinfo=UTC)))"
    )
    shell = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env={**env, "DJANGO_SETTINGS_MODULE": "ceres_site.settings"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    offset, slot = shell.stdout.split(" ", 1)
    assert offset == "-0300"  # Django sets the process's TZ to TIME_ZONE, Córdoba's, whatever the server's is
    assert slot.strip() == "2026-11-29 12:00:00+00:00"

    registered = subprocess.run(
        [sys.executable, "manage.py", "register_crons"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert registered.returncode == 0, registered.stderr
    assert scheduler().next_run("daily-report").strftime("%H:%M") == "12:00"
    assert "added: daily-report — `0 9 * * *` America/Argentina/Cordoba, next" in registered.stdout


def test_register_crons_twice_keeps_one_entry_per_spec_and_cancels_removed_ones(capsys, monkeypatch, redis_conn):
    call_command("register_crons")
    call_command("register_crons")

    out = capsys.readouterr().out
    assert out.count("added: ") == len(crons.SPECS) == out.count("unchanged: ")
    assert redis_conn.zcard(scheduler().scheduled_jobs_key) == len(crons.SPECS)

    monkeypatch.delitem(crons.SPECS, "daily-report")
    call_command("register_crons")

    assert "removed: daily-report" in capsys.readouterr().out
    assert redis_conn.zcard(scheduler().scheduled_jobs_key) == len(crons.SPECS)
    assert scheduler().cron_entry("daily-report") is None
    assert scheduler().next_run("daily-report") is None


def test_a_changed_schedule_is_updated_in_place(capsys, monkeypatch, clock):
    clock("2026-11-29 10:30")
    call_command("register_crons")
    spec = crons.SPECS["daily-report"]
    monkeypatch.setitem(crons.SPECS, "daily-report", crons.CronSpec(spec.name, "0 8 * * *", spec.task, spec.grace))

    call_command("register_crons")

    assert "changed: daily-report — `0 8 * * *`" in capsys.readouterr().out
    assert scheduler().next_run("daily-report") == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)


def test_two_schedulers_over_three_hourly_slots_make_three_runs(clock, work):
    clock("2026-11-29 09:30")
    scheduler().sync_crons()
    first, second = scheduler(), scheduler()

    for hour in (10, 11, 12):
        clock(f"2026-11-29 {hour}:00:05")
        due_first, due_second = list(first.get_jobs_to_queue()), list(second.get_jobs_to_queue())  # both see it due
        for job in due_first:
            first.enqueue_job(job)
        for job in due_second:
            second.enqueue_job(job)
        work("maintenance")

    assert runs("clean-verification-tokens") == ["29 10:00", "29 11:00", "29 12:00"]
    assert runs("daily-report") == ["29 12:00"]  # 09:00 in Córdoba


def test_an_outage_gives_one_catch_up_run_and_one_report(clock, work, slack):
    clock("2026-11-27 08:00")
    scheduler().sync_crons()

    clock("2026-11-29 13:10")  # back after missing two daily reports and 53 hourly cleanups
    scheduler().enqueue_jobs()
    scheduler().enqueue_jobs()
    work("maintenance")
    enqueue_cron_run(name="daily-report", slot=datetime(2026, 11, 29, 12, tzinfo=UTC), queue_name="maintenance")
    work("maintenance")  # the same slot fired again much later: it has already run
    work("slack")

    assert runs("daily-report") == ["29 12:00"]
    assert runs("clean-verification-tokens") == ["29 13:00"]
    [report] = [text for text in slack.texts if "Reporte diario" in text]
    assert report.startswith(":bar_chart: Reporte diario de Ceres — 28/11/2026 (Córdoba)")
    assert scheduler().next_run("daily-report") == datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_the_report_counts_by_cordoba_day(work, smtp):
    at = datetime(2026, 11, 29, 2, 59, tzinfo=UTC)  # 23:59 of the 28th in Córdoba
    User.objects.create_user(username="a@example.com", email="a@example.com", date_joined=at, email_verified_at=at)
    User.objects.create_user(username="b@example.com", email="b@example.com", date_joined=at + timedelta(minutes=1))

    day_before, day = report_daily(day=date(2026, 11, 28)), report_daily(day=date(2026, 11, 29))

    assert (day_before.users_registered, day_before.users_verified) == (1, 1)
    assert (day.users_registered, day.users_verified) == (1, 0)


@pytest.mark.parametrize("zone,day,start,end", [
    ("Europe/Madrid", date(2026, 3, 29), "2026-03-28 23:00", "2026-03-29 22:00"),  # 23 h: 02:00 → 03:00
    ("Europe/Madrid", date(2026, 10, 25), "2026-10-24 22:00", "2026-10-25 23:00"),  # 25 h: 03:00 → 02:00
    ("America/Santiago", date(2026, 9, 6), "2026-09-06 04:00", "2026-09-07 03:00"),  # 23 h: no 00:00, from 01:00
    ("America/Santiago", date(2026, 4, 4), "2026-04-04 03:00", "2026-04-05 04:00"),  # 25 h: 24:00 → 23:00
])  # fmt: skip
def test_the_report_counts_a_day_from_midnight_to_midnight_where_clocks_change(zone, day, start, end, monkeypatch,
                                                                               redis_conn):  # fmt: skip
    monkeypatch.setattr(crons, "ZONE", zone)
    start, end = (datetime.fromisoformat(moment).replace(tzinfo=UTC) for moment in (start, end))  # in UTC
    inside, outside = (start, end - timedelta(minutes=1)), (start - timedelta(minutes=1), end)
    for n, at in enumerate(inside + outside):
        User.objects.create_user(username=f"u{n}@example.com", email=f"u{n}@example.com", date_joined=at)
        with redis_conn.pipeline() as pipe:
            series.job_done(pipe, "email", None, None, at)
            pipe.execute()

    report = report_daily(day=day)

    assert report.users_registered == 2 and report.jobs["email"] == (2, 0)
    assert crons.day_bounds(day) == (start, end)


def test_the_report_counts_jobs_emails_dead_letters_and_waiting(work, smtp, policy):
    from jobs.enqueue.producers import enqueue_email_verify, enqueue_stored_call

    policy("email", retry_max=0)
    user = User.objects.create_user(username="a@example.com", email="a@example.com")
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    enqueue_stored_call(queue_name="email", func="tests.tasks.always_fail", job_id="email-bad", kwargs={})
    work("email")
    enqueue_stored_call(queue_name="files", func="tests.tasks.sleep", job_id="files-wait", kwargs={"seconds": 0})

    report = report_daily(day=timezone.localdate())

    assert report.emails_sent == {"verify": 1, "welcome": 0, "exists": 0, "cv_rejected": 0, "password_reset": 0}
    assert report.jobs["email"] == (1, 1)
    assert report.dead_letters_open == 1
    assert report.oldest_waiting["files"] is not None and report.oldest_waiting["email"] is None


def test_daily_report_command_dry_run_prints_and_posts_nothing(capsys):
    call_command("daily_report", "--dry-run", "--date", "2026-11-28")

    assert "Reporte diario de Ceres — 28/11/2026" in capsys.readouterr().out
    assert django_rq.get_queue("slack").job_ids == []


def test_token_cleanup_deletes_exactly_the_expired_and_used_ones():
    user = User.objects.create_user(username="a@example.com", email="a@example.com")
    now, hour = timezone.now(), timedelta(hours=1)

    def token(label, expires_in, used_ago=None):
        return VerificationToken.objects.create(
            user=user, selector=label, verifier_hash="0" * 64, expires_at=now + expires_in,
            used_at=None if used_ago is None else now - used_ago,
        )  # fmt: skip

    token("valid", 20 * hour), token("expired-1h-ago", -hour), token("used-1h-ago", 20 * hour, used_ago=hour)
    token("expired-2d-ago", -48 * hour), token("used-2d-ago", -24 * hour, used_ago=47 * hour)

    assert tokens_clean() == 2
    assert tokens_clean() == 0
    assert sorted(VerificationToken.objects.values_list("selector", flat=True)) == [
        "expired-1h-ago", "used-1h-ago", "valid"
    ]  # fmt: skip
    call_command("clean_verification_tokens", stdout=open(os.devnull, "w"))


def test_the_dead_man_alarm_rings_once_and_once_more_on_recovery(clock, work, slack):
    clock("2026-11-29 09:30")
    scheduler().sync_crons()

    quiet = check_crons(at=datetime(2026, 11, 29, 10, 10, tzinfo=UTC))  # the 10:00 slot is within grace
    alarm = check_crons(at=datetime(2026, 11, 29, 10, 16, tzinfo=UTC))
    still = check_crons(at=datetime(2026, 11, 29, 11, 30, tzinfo=UTC))
    CronRun.objects.create(name="clean-verification-tokens", slot=datetime(2026, 11, 29, 12, tzinfo=UTC),
                           finished_at=timezone.now())  # fmt: skip
    recovered = check_crons(at=datetime(2026, 11, 29, 12, 20, tzinfo=UTC))
    again = check_crons(at=datetime(2026, 11, 29, 12, 21, tzinfo=UTC))
    work("slack")

    assert quiet == still == again == []
    assert len(alarm) == 1 and "*clean-verification-tokens*" in alarm[0] and "07:00" in alarm[0]
    assert len(recovered) == 1 and "volvió" in recovered[0]
    assert sorted(slack.texts) == sorted(alarm + recovered)  # ten slack slots post in any order


@pytest.mark.slow
def test_rqscheduler_process_fires_a_due_cron(redis_conn, tmp_path):
    scheduler().sync_crons()
    redis_conn.zadd(scheduler().scheduled_jobs_key, {"cron-clean-verification-tokens": 0})  # due now
    log = open(tmp_path / "scheduler.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "rqscheduler", "--queue", "maintenance", "--interval", "1"],
        cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        slot = crons.SPECS["clean-verification-tokens"].last_slot(crons.now())
        job_id = f"cron-clean-verification-tokens-{slot:%Y%m%dT%H%MZ}"
        wait_for(lambda: job_id in django_rq.get_queue("maintenance").job_ids, timeout=60)
        # The next run is written just after the enqueue: a stop between the two left it due (a
        # restarted scheduler enqueues that slot again, which `run_cron` runs once), so wait for it.
        wait_for(lambda: scheduler().next_run("clean-verification-tokens") > crons.now(), timeout=60)
    finally:
        process.terminate()
        process.wait(timeout=15)
        print((tmp_path / "scheduler.log").read_text()[-4000:])  # shown if the test failed
    keys = [key.decode() for key in redis_conn.keys("*")]
    assert all(key.startswith("ceres:queue:") for key in keys), keys


@pytest.mark.slow
def test_rqscheduler_as_the_docs_write_it_runs_the_project_s_scheduler(smtp, tmp_path):
    """`python manage.py rqscheduler`, no arguments: the maintenance queue, every 10 s, crons registered."""
    from tests.conftest import process_env

    log = open(tmp_path / "scheduler.log", "wb")
    scheduler = subprocess.Popen([sys.executable, "manage.py", "rqscheduler"], cwd=BASE_DIR, env=process_env(smtp),
                                 stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: django_rq.get_scheduler("maintenance").is_alive(), timeout=60)
        wait_for(
            lambda: all(django_rq.get_scheduler("maintenance").cron_entry(name) for name in crons.SPECS), timeout=60
        )
        assert scheduler.poll() is None
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)
    assert "KeyError" not in (tmp_path / "scheduler.log").read_text()


@pytest.mark.parametrize("argv,message", [(["rqworker"], "name the queues to work on: `rqworker email slack`"),
                                          (["rqscheduler", "--queue", "nope"], "unknown queue nope")])  # fmt: skip
def test_worker_and_scheduler_commands_without_a_usable_queue_say_so_in_one_line(argv, message):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message.replace("`", ".")):
        call_command(*argv)

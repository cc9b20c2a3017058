"""Configuration promises: key prefix and DB 5, JSON workers, required settings, checks, no unsafe routes."""

import os
import subprocess
import sys

import django_rq
import pytest
from django.core import checks
from django.urls import NoReverseMatch, reverse
from redis import Redis
from rq.serializers import DefaultSerializer, JSONSerializer

from ceres_site.accounts.models import User
from jobs import rq_compat
from jobs.config.checks import rq_versions_checked
from jobs.config.policies import QUEUES
from jobs.enqueue.producers import enqueue_email_verify
from tests.conftest import BASE_DIR, free_port


@pytest.mark.django_db(transaction=True)
def test_after_a_flow_every_key_is_under_the_prefix_in_db_5(redis_conn, smtp, work, settings, client):
    user = User.objects.create_user(username="a@example.com", email="a@example.com", first_name="Ana")
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    work("email")  # verify email sent
    enqueue_email_verify(user_id=999_999, municipality=user.municipality_id)  # unknown user: finished, skipped
    settings.EMAIL_PORT = free_port()
    other = User.objects.create_user(username="b@example.com", email="b@example.com")
    enqueue_email_verify(user_id=other.pk, municipality=other.municipality_id)
    work("email")  # one retry scheduled
    scheduler = django_rq.get_scheduler("maintenance")
    scheduler.run(burst=True)

    keys = sorted(key.decode() for key in redis_conn.keys("*"))

    assert redis_conn.connection_pool.connection_kwargs["db"] == 5
    assert set(redis_conn.info("keyspace")) == {"db5"}
    assert keys and all(key.startswith("ceres:queue:") for key in keys), keys
    assert "ceres:queue:queue:email" not in keys  # drained
    assert f"ceres:queue:job:email-verify-{user.pk}" in keys
    assert "ceres:queue:scheduled:email" in keys
    assert any(key.startswith("ceres:queue:scheduler_instance:") for key in keys)


def test_rq_scheduler_keys_carry_the_prefix():
    scheduler = django_rq.get_scheduler("maintenance")
    for key in (scheduler.scheduler_key, scheduler.scheduler_lock_key, scheduler.scheduled_jobs_key, scheduler.key):
        assert key.startswith("ceres:queue:scheduler")


@pytest.mark.parametrize("passed", [None, "rq.serializers.DefaultSerializer", DefaultSerializer])
def test_workers_speak_json_whatever_they_are_given(passed):
    worker = django_rq.get_worker("email", "slack", serializer=passed)

    assert type(worker).__name__ == "CeresWorker"
    assert worker.serializer is JSONSerializer
    assert {queue.serializer for queue in worker.queues} == {JSONSerializer}


def test_rq_queues_are_derived_from_the_policies(settings):
    assert set(settings.RQ_QUEUES) == set(QUEUES) == {"email", "slack", "bulk", "bulk-own", "maintenance", "files"}
    for name, policy in QUEUES.items():
        queue = django_rq.get_queue(name)
        assert queue.serializer is JSONSerializer and queue.create_job("tests.tasks.sleep").timeout == policy.timeout


def test_key_prefix_check_reports_a_mismatch(settings):
    assert not [e for e in checks.run_checks() if e.id.startswith("jobs.E")]

    settings.RQ_KEY_PREFIX = "other:queue"

    assert [e.id for e in checks.run_checks() if e.id.startswith("jobs.E")] == ["jobs.E001"]


@pytest.mark.slow
def test_the_installed_rq_packages_are_those_rq_compat_was_checked_against():
    assert rq_versions_checked(None) == []
    result = run_django({"DEBUG": "1"})  # `manage.py check` on this install
    assert result.returncode == 0 and "jobs.E010" not in result.stdout + result.stderr, result.stderr


def test_another_version_of_an_rq_package_is_an_error_naming_rq_compat():
    installed = {**rq_compat.CHECKED, "rq-scheduler": "0.15.0"}

    errors = rq_versions_checked(None, installed=installed)

    assert [error.id for error in errors] == ["jobs.E010"]
    assert (
        errors[0].msg == "rq-scheduler 0.15.0 is installed; jobs/rq_compat.py was checked against rq-scheduler 0.14.0."
    )
    assert "jobs/rq_compat.py" in errors[0].hint


def run_django(env_overrides: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SECRET_KEY", "DEBUG")}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_missing_secret_key_fails_at_start_naming_it():
    result = run_django({"DEBUG": "0"})

    assert result.returncode != 0
    assert "Set the DJANGO_SECRET_KEY environment variable" in result.stderr


@pytest.mark.slow
def test_debug_runs_without_a_secret_key():
    assert run_django({"DEBUG": "1"}).returncode == 0


def test_django_rq_dashboard_is_not_routed(admin_client):
    with pytest.raises(NoReverseMatch):
        reverse("admin:django_rq_dashboard_changelist")
    for path in (
        "/admin/django_rq/dashboard/",
        "/django-rq/",
        "/admin/django_rq/",
        "/admin/django_rq/dashboard/queues/0/empty/",
    ):
        assert admin_client.get(path).status_code == 404, path


@pytest.mark.slow
@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo"])
def test_people_see_cordoba_time_whatever_the_server_s_tz(tz):
    """What Slack alerts and reports print: Córdoba (UTC−3), not the process's TZ."""
    code = "from datetime import UTC, datetime; from jobs.failures.slack_texts import local_time; print(local_time(datetime(2026, 1, 1, 12, tzinfo=UTC)))"
    env = {**os.environ, "TZ": tz, "DEBUG": "1"}
    shown = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=BASE_DIR, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert shown.splitlines()[-1] == "01/01/2026 09:00:00"


@pytest.mark.slow
def test_the_suite_refuses_a_redis_database_that_holds_data(redis_conn):
    """Plain `pytest` pointed at the bin/run queues must not wipe them."""
    url = redis_conn.connection_pool.connection_kwargs
    other = f"redis://{url['host']}:{url['port']}/6"
    Redis(host=url["host"], port=url["port"], db=6).set("ceres:queue:someone-s-job", "keep me")
    try:
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_settings.py",
                              "-k", "cordoba"], cwd=BASE_DIR, env={**os.environ, "REDIS_URL": other},
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert run.returncode == 2 and "holds data (1 keys) the tests would delete" in run.stdout + run.stderr
        assert Redis(host=url["host"], port=url["port"], db=6).get("ceres:queue:someone-s-job") == b"keep me"
    finally:
        Redis(host=url["host"], port=url["port"], db=6).flushdb()


def test_browsers_get_an_icon_instead_of_a_404(client):
    icon = client.get("/favicon.ico")

    assert icon.status_code == 200 and icon["Content-Type"] == "image/svg+xml"
    assert icon.content.decode().startswith("<svg") and "max-age=86400" in icon["Cache-Control"]

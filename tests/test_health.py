"""Health, metrics and SLO alarms tell the truth about real workers, a real scheduler and real Redis."""

import signal
import subprocess
import sys
import time

import django_rq
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from ceres_site.accounts.models import User
from jobs.config import crons
from jobs.config.policies import QUEUES
from jobs.enqueue.producers import enqueue_stored_call
from jobs.failures.alarms import check_slos
from tests.conftest import BASE_DIR, process_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def health() -> tuple[int, dict]:
    """The job system's report, as a monitor with the token reads it."""
    response = Client().get("/health/jobs", headers={"Authorization": "Bearer monitor-token"})
    return response.status_code, {check["name"]: check for check in response.json()["checks"]}


@pytest.fixture(autouse=True)
def monitor_token(settings):
    settings.METRICS_TOKEN = "monitor-token"


def start_scheduler(smtp, tmp_path):
    log = open(tmp_path / "scheduler.log", "ab")
    command = [sys.executable, "manage.py", "rqscheduler", "--queue", "maintenance", "--interval", "1"]
    return subprocess.Popen(command, cwd=BASE_DIR, env=process_env(smtp), stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_health_follows_workers_and_scheduler_stopping_and_coming_back(smtp, tmp_path, live_worker, capsys):
    call_command("register_crons", stdout=open("/dev/null", "w"))
    workers = {name: live_worker(name) for name in QUEUES}
    scheduler = start_scheduler(smtp, tmp_path)
    try:
        wait_for(lambda: health()[0] == 200, timeout=30)
        call_command("queues_health")
        assert "✔ email.workers: 5 of 5 slots in 1 process, 0 busy" in capsys.readouterr().out

        workers["email"].send_signal(signal.SIGTERM)
        workers["email"].wait(timeout=20)
        status, checks = health()
        assert status == 503 and checks["email.workers"]["status"] == "fail"
        with pytest.raises(CommandError, match="unhealthy"):  # exit status 1 from the shell
            call_command("queues_health")
        assert "✘ email.workers: 0 of 5 slots in 0 processes, 0 busy" in capsys.readouterr().out

        live_worker("email")
        wait_for(lambda: health()[0] == 200, timeout=30)

        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(timeout=20)
        status, checks = health()
        assert status == 503 and checks["scheduler"]["status"] == "fail"

        scheduler = start_scheduler(smtp, tmp_path)
        wait_for(lambda: health()[0] == 200, timeout=30)
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=20)


def test_health_json_names_no_secret_and_warns_about_redis_durability(redis_conn, settings):
    settings.SLACK_WEBHOOK_URL = "https://hooks.slack.com/services/T/B/very-secret"
    status, checks = health()
    text = Client().get("/health/jobs", headers={"Authorization": "Bearer monitor-token"}).content.decode()

    assert status == 503  # no workers at all
    assert checks["redis"]["status"] == "ok" and "logical DB 5" in checks["redis"]["detail"]
    assert checks["redis.persistence"]["status"] == "warn"  # the test server keeps nothing on disk
    assert "very-secret" not in text and "redis://" not in text and "postgres://" not in text
    redis_conn.config_set("maxmemory-policy", "allkeys-lru")
    try:
        assert health()[1]["redis.eviction"]["status"] == "warn"
    finally:
        redis_conn.config_set("maxmemory-policy", "noeviction")


def test_the_load_balancer_s_probe_asks_only_whether_this_web_node_can_serve(client, settings):
    """No worker runs here, yet the web node serves: /health says 200 and names nothing."""
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"ok": True, "failing": []}
    assert client.get("/health/jobs").status_code == 503  # the job system's own health is another question...
    assert client.get("/health/jobs").json() == {"healthy": False}  # ...whose details need the token or a login

    settings.RQ_QUEUES = {
        name: {**config, "URL": "redis://127.0.0.1:1/5"} for name, config in settings.RQ_QUEUES.items()
    }
    down = client.get("/health")
    assert down.status_code == 503 and down.json() == {"ok": False, "failing": ["redis"]}


def redis_calls(redis) -> dict[str, int]:
    """Commands Redis has run so far, by name (INFO commandstats; INFO itself left out)."""
    calls = {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in redis.info("commandstats").items()}
    calls.pop("info", None)
    return calls


def redis_calls_during(redis, request) -> dict[str, int]:
    before = redis_calls(redis)
    request()
    after = redis_calls(redis)
    return {name: count - before.get(name, 0) for name, count in after.items() if count != before.get(name, 0)}


def test_a_stranger_gets_the_verdict_without_the_report_being_computed(client, redis_conn):
    """The report reads every queue, registry and setting: for a caller without the token, only the
    checks that can fail are read, at most once every VERDICT_TTL seconds; no database query."""
    token = {"Authorization": "Bearer monitor-token"}
    client.get("/health/jobs", headers=token)  # every connection open: the counts below are the requests' own
    detailed = redis_calls_during(redis_conn, lambda: client.get("/health/jobs", headers=token))
    with CaptureQueriesContext(connection) as queries:
        first = redis_calls_during(redis_conn, lambda: client.get("/health/jobs"))
        again = redis_calls_during(redis_conn, lambda: client.get("/health/jobs"))

    assert len(queries) == 0
    assert again == {"get": 1}  # the verdict, as the first request left it
    assert set(first) <= {"get", "ping", "exists", "hgetall", "smembers", "set"}, first  # no counts, no CONFIG
    # the verdict read and written, PING, the scheduler's heartbeat key, each cron's entry, each queue's workers
    assert sum(first.values()) == 2 + 1 + 1 + len(crons.SPECS) + len(QUEUES), first
    assert sum(detailed.values()) > 3 * sum(first.values()), detailed  # what a stranger no longer costs
    assert client.get("/health/jobs").json() == {"healthy": False}  # no worker runs here


def scrape(client: Client, **headers) -> tuple[int, dict[str, float]]:
    response = client.get("/metrics", headers=headers)
    if response.status_code != 200:
        return response.status_code, {}
    samples = {}
    for line in response.content.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return 200, samples


@pytest.mark.parametrize("header", ["scrape-me", "Bearer scrápe-me", "Token scrape-me", "Bearer", ""])
def test_metrics_refuse_anything_but_the_bearer_token(settings, client, header):
    settings.METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics", headers={"Authorization": header}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200


def test_a_stopped_job_is_not_counted_as_a_retry(settings, live_worker):
    from rq.command import send_stop_job_command

    settings.METRICS_TOKEN = "scrape-me"
    live_worker("maintenance", "files")
    enqueue_stored_call(queue_name="files", func="tests.tasks.sleep", job_id="files-long-1", kwargs={"seconds": 60})
    queue = django_rq.get_queue("files")
    wait_for(lambda: queue.fetch_job("files-long-1").get_status() == "started", timeout=60)

    send_stop_job_command(queue.connection, "files-long-1")

    wait_for(lambda: queue.fetch_job("files-long-1").get_status() == "stopped", timeout=60)
    samples = scrape(Client(), authorization="Bearer scrape-me")[1]
    assert samples.get('ceres_job_retries_total{queue="files"}', 0) == 0
    assert samples.get('ceres_jobs_failed_total{queue="files"}', 0) == 0


def test_metrics_match_the_registries_and_refuse_strangers(settings, policy, work):
    settings.METRICS_TOKEN = "scrape-me"
    policy("email", retry_max=1, retry_intervals=(0,))
    for n in range(2):
        enqueue_stored_call(queue_name="email", func="tests.tasks.sleep", job_id=f"email-ok-{n}", kwargs={"seconds": 0})
    enqueue_stored_call(queue_name="email", func="tests.tasks.always_fail", job_id="email-bad-1", kwargs={})
    work("email")
    waiting_since = time.time()
    for n in range(3):
        enqueue_stored_call(
            queue_name="email", func="tests.tasks.sleep", job_id=f"email-wait-{n}", kwargs={"seconds": 0}
        )

    status, samples = scrape(Client(), authorization="Bearer scrape-me")
    waited = time.time() - waiting_since

    assert status == 200
    assert samples['ceres_jobs{queue="email",state="queued"}'] == 3
    assert samples['ceres_jobs{queue="email",state="finished"}'] == 2
    assert samples['ceres_jobs{queue="email",state="failed"}'] == 1
    assert samples['ceres_jobs_finished_total{queue="email"}'] == 2
    assert samples['ceres_jobs_failed_total{queue="email"}'] == 1
    assert samples['ceres_job_retries_total{queue="email"}'] == 1
    assert samples['ceres_job_duration_seconds_count{queue="email"}'] == 2
    assert samples['ceres_job_duration_seconds_bucket{le="+Inf",queue="email"}'] == 2
    assert 0 < samples['ceres_oldest_waiting_seconds{queue="email"}'] <= waited + 0.001  # RQ keeps microseconds
    assert samples['ceres_workers_alive{queue="email"}'] == 0  # the burst worker is gone

    staff = User.objects.create_user(username="staff", password="x", is_staff=True)
    assert scrape(Client())[0] == 401
    assert scrape(Client(), authorization="Bearer wrong")[0] == 401
    client = Client()
    client.force_login(staff)
    assert scrape(client)[0] == 401  # staff, but without jobs.view_dashboard
    admin = Client()
    admin.force_login(User.objects.create_superuser(username="root", password="x"))
    assert scrape(admin)[0] == 200


@pytest.mark.slow
def test_slo_alarms_alert_once_per_breach_and_once_on_recovery(slack, live_worker, policy, work):
    assert check_slos() == []  # a breach must last SLO_GRACE before it alerts

    first = check_slos(grace=0)
    again = check_slos(grace=0)

    assert sorted(text.split("*")[1] for text in first) == sorted(f"{name}.workers" for name in QUEUES)
    assert again == []
    django_rq.get_connection("email").set("ceres:queue:sweep-due", 1, ex=600)  # the worker sends no alarm of its own
    live_worker("email")
    wait_for(lambda: django_rq.get_connection("email").scard("ceres:queue:workers:email"), timeout=60)
    recovered = check_slos(grace=0)
    assert [text.split("*")[1] for text in recovered] == ["email.workers"] and "volvió" in recovered[0]

    policy("files", max_wait=0)
    enqueue_stored_call(queue_name="files", func="tests.tasks.sleep", job_id="files-stuck-1", kwargs={"seconds": 0})
    wait_for(lambda: [t for t in check_slos(grace=0) if "files.backlog" in t], timeout=30)
    work("slack")
    assert len(slack.texts) == len(QUEUES) + 2

"""Redis restarted without persistence under a running process set: workers and crons come back."""

import signal
import subprocess
import sys
import threading

import pytest
from django.db import connections
from django.test import override_settings
from django.urls import reverse
from redis import Redis
from redis.exceptions import RedisError

from ceres_site.accounts.outbox import reconcile_verify_emails
from jobs.config.policies import QUEUES
from jobs.observability import health, reads
from tests.conftest import BASE_DIR, free_port, process_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


class OwnRedis:
    """A redis-server of the test's own, without persistence: `stop()` kills it (no shutdown save
    either, so everything in it is gone), `start()` starts it again, empty."""

    def __init__(self, workdir):
        self.port, self.workdir, self.process = free_port(), workdir, None
        self.url = f"redis://127.0.0.1:{self.port}/5"

    def start(self):
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(argv, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(lambda: _pings(self.port), timeout=20)

    def stop(self):
        self.process.kill()
        self.process.wait()

    def restart(self):
        self.stop()
        self.start()


@pytest.fixture
def own_redis(tmp_path, settings):
    server = OwnRedis(tmp_path)
    server.start()
    settings.RQ_QUEUES = {name: {**config, "URL": server.url} for name, config in settings.RQ_QUEUES.items()}
    yield server
    if server.process.poll() is None:
        server.stop()


def _pings(port: int) -> bool:
    try:
        return Redis(port=port, socket_connect_timeout=1).ping()
    except RedisError:
        return False


def checks() -> dict[str, str]:
    return {check.name: check.status for check in health.health_checks()}


def all_back(found: dict[str, str]) -> bool:
    """Every worker registered (the in-process one for its queues, one forking worker per unit of
    concurrency for the others), the scheduler beating, every cron registered."""
    workers = {name: reads.queue_stats(name).live_workers for name in QUEUES}
    wanted = {name: 1 if policy.in_process else policy.concurrency for name, policy in QUEUES.items()}
    return workers == wanted and found["scheduler"] == found["crons"] == "ok"


def test_workers_register_and_crons_sync_again_after_redis_lost_everything(own_redis, live_worker, smtp, tmp_path):
    url, restart = own_redis.url, own_redis.restart
    live_worker("email", "slack", "bulk", "bulk-own", env={"REDIS_URL": url})
    live_worker("maintenance", "files", env={"REDIS_URL": url})
    command = [sys.executable, "manage.py", "rqscheduler", "--queue", "maintenance", "--interval", "1"]
    log = open(tmp_path / "scheduler.log", "wb")
    scheduler = subprocess.Popen(command, cwd=BASE_DIR, env=process_env(smtp, REDIS_URL=url), stdout=log,
                                 stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: all_back(checks()), timeout=90)  # the scheduler registers the crons itself at start

        marker = Redis.from_url(url)
        marker.set("ceres:test:before-the-restart", 1)
        restart()
        # Everything is gone (the workers may well have registered again already: no race on that).
        assert not marker.exists("ceres:test:before-the-restart")
        # Within a heartbeat: the in-process worker's 5 s, a forking worker's dequeue timeout (30 s),
        # the scheduler's interval; the bound is loose for loaded machines.
        seen = {}

        def back() -> bool:
            seen.update(
                checks=checks(),
                workers={name: [(w.name, w.alive, w.state) for w in reads.workers(name)] for name in QUEUES},
            )
            return all_back(seen["checks"])

        try:
            wait_for(back, timeout=120, interval=0.5)
        except pytest.fail.Exception:
            pytest.fail(
                f"not all back after the restart: {seen}"
            )  # it failed once on a loaded machine: what was missing?
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)


def test_a_signup_while_redis_is_frozen_answers_and_its_email_is_sent_later(own_redis, live_worker, smtp, client):
    own_redis.process.send_signal(signal.SIGSTOP)  # alive, answering nothing: a frozen server or network
    try:
        done = []

        def sign_up():
            try:
                done.append(signup(client, "ana@example.com").status_code)
            finally:
                connections.close_all()  # this thread's: the test database is dropped at the end

        request = threading.Thread(target=sign_up)
        request.start()
        request.join(timeout=60)  # redis-py's socket timeouts (5 s by default) end the enqueue
        assert done == [302]
    finally:
        own_redis.process.send_signal(signal.SIGCONT)

    live_worker("email", "slack", env={"REDIS_URL": own_redis.url, "VERIFY_OUTBOX_AFTER_SECONDS": "0"})
    wait_for(lambda: [message["To"] for message in smtp.messages] == ["ana@example.com"], timeout=90)


def signup(client, email: str):
    form = {
        "email": email,
        "first_name": "Ana",
        "password": "una clave larga 123",
        "password_confirm": "una clave larga 123",
    }
    return client.post(reverse("accounts:signup"), form)


def test_verification_emails_redis_lost_are_sent_once_it_is_back(own_redis, live_worker, smtp, client, caplog):
    for n in range(3):
        assert signup(client, f"ana{n}@example.com").status_code == 302  # queued in Redis, no worker yet
    own_redis.restart()  # ...and lost with it
    own_redis.stop()
    response = signup(client, "beto@example.com")  # Redis down: the job cannot even be enqueued
    assert response.status_code == 302
    resend = client.post(reverse("accounts:resend"), {"email": "ana0@example.com"})
    assert resend.status_code == 200 and "Si hay una cuenta sin verificar" in resend.content.decode()
    own_redis.start()

    live_worker("email", "slack", env={"REDIS_URL": own_redis.url, "VERIFY_OUTBOX_AFTER_SECONDS": "0"})

    emails = sorted([f"ana{n}@example.com" for n in range(3)] + ["beto@example.com"])
    wait_for(lambda: sorted(message["To"] for message in smtp.messages) == emails, timeout=90)
    settings_after = {"VERIFY_OUTBOX_AFTER_SECONDS": 0}
    with override_settings(**settings_after):
        assert reconcile_verify_emails() == 0  # every one is held (finished) or delivered: nothing twice
    assert sorted(message["To"] for message in smtp.messages) == emails

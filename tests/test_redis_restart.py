"""Redis restarted without persistence under a running process set: workers and crons come back."""

import subprocess
import sys

import pytest
from redis import Redis
from redis.exceptions import RedisError

from jobs import health, reads
from jobs.queues import QUEUES
from tests.conftest import BASE_DIR, free_port, process_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def own_redis(tmp_path, settings):
    """A redis-server of the test's own, without persistence, that `restart()` kills and starts again."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = {}

    def start():
        server["process"] = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(lambda: _pings(port), timeout=20)

    def restart():
        server["process"].kill()  # no shutdown save either: everything in it is gone
        server["process"].wait()
        start()

    start()
    url = f"redis://127.0.0.1:{port}/5"
    settings.RQ_QUEUES = {name: {**config, "URL": url} for name, config in settings.RQ_QUEUES.items()}
    yield url, restart
    server["process"].kill()
    server["process"].wait()


def _pings(port: int) -> bool:
    try:
        return Redis(port=port, socket_connect_timeout=1).ping()
    except RedisError:
        return False


def checks() -> dict[str, str]:
    return {check.name: check.status for check in health.health_checks()}


def all_back(found: dict[str, str]) -> bool:
    """Every worker registered (the in-process one for email and slack, one forking worker per unit of
    concurrency for the others), the scheduler beating, every cron registered."""
    workers = {name: reads.queue_stats(name).live_workers for name in QUEUES}
    wanted = {name: 1 if policy.in_process else policy.concurrency for name, policy in QUEUES.items()}
    return workers == wanted and found["scheduler"] == found["crons"] == "ok"


def test_workers_register_and_crons_sync_again_after_redis_lost_everything(own_redis, live_worker, smtp, tmp_path):
    url, restart = own_redis
    live_worker("email", "slack", env={"REDIS_URL": url})
    live_worker("maintenance", "files", env={"REDIS_URL": url})
    command = [sys.executable, "manage.py", "rqscheduler", "--queue", "maintenance", "--interval", "1"]
    log = open(tmp_path / "scheduler.log", "wb")
    scheduler = subprocess.Popen(command, cwd=BASE_DIR, env=process_env(smtp, REDIS_URL=url), stdout=log,
                                 stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: all_back(checks()), timeout=90)  # the scheduler registers the crons itself at start

        restart()

        lost = checks()
        assert lost["email.workers"] == lost["crons"] == "fail"
        # Within a heartbeat: the in-process worker's 5 s, a forking worker's dequeue timeout (30 s),
        # the scheduler's interval; the bound is loose for loaded machines.
        wait_for(lambda: all_back(checks()), timeout=120, interval=0.5)
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)

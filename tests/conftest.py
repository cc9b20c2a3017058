"""Shared fixtures: a clean real Redis per test, a real SMTP server, real RQ workers.

The suite runs under `bin/with-test-services`, which starts redis-server and PostgreSQL and
exports REDIS_URL / DATABASE_URL; nothing here fakes Redis, SMTP or the worker.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
from email import message_from_bytes
from email.policy import default as email_policy
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

os.environ["JOB_EXTRA_TASK_MODULES"] = "tests.tasks"  # the workers the tests start may run the tests' tasks

import django_rq  # noqa: E402
import pytest  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.utils import translation  # noqa: E402

from jobs.runtime.slots import worker_class_for  # noqa: E402
from tests.ports import free_port  # noqa: E402, F401 (the tests import it from here)

settings.JOB_EXTRA_TASK_MODULES = ["tests.tasks"]  # and the workers of this process (settings may be loaded)

pytest_plugins = ["tests.browser"]  # the browser tests' `page` fixture
BASE_DIR = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 10, interval: float = 0.05):
    """Poll until `predicate()` is truthy; return its value or fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s: {getattr(predicate, '__name__', predicate)}")


@pytest.hookimpl(tryfirst=True)  # before --random-order shuffles, which then decides alone
def pytest_collection_modifyitems(items):
    """Slow tests first: on parallel workers, the longest ones then start at once instead of last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_sessionstart(session):
    """Every test empties the queues' Redis database: refuse one that holds data at the start (the
    `bin/run` queues of a developer machine, say). `bin/test` starts an empty Redis of its own."""
    if hasattr(session.config, "workerinput"):  # an xdist worker, on its own Redis (the env var is inherited)
        return
    keys = django_rq.get_connection("email").dbsize()
    if keys:
        pytest.exit(f"the Redis database at REDIS_URL holds data ({keys} keys) the tests would delete: "
                    "run the tests with bin/test, or point REDIS_URL at an empty database", returncode=2)  # fmt: skip


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing():
    """MD5 for the passwords the tests make: PBKDF2 spends 0.4 s of CPU on each. The real hashers stay
    listed after it, so a password hashed by a process a test started still verifies here."""
    with override_settings(
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    ):
        yield


@pytest.fixture(autouse=True)
def redis_conn():
    """The queues' Redis connection, on an empty database before and after each test."""
    conn = django_rq.get_connection("email")
    conn.flushdb()
    yield conn
    conn.flushdb()


@pytest.fixture(autouse=True)
def fresh_process():
    """What modules remember for the whole process starts afresh in each test, so order never matters."""
    from ceres_site.accounts.limits import LimitCache
    from jobs.enqueue import unique
    from jobs.observability import series

    LimitCache.resume()  # a Redis error in an earlier test paused the rate limits' counting
    unique.forget_lone_master()  # an earlier Sentinel test found a master without replicas
    series.forget_expiring()  # the hour keys got their TTL in an earlier test's Redis, since emptied
    translation.activate(settings.LANGUAGE_CODE)  # a request in English leaves the thread speaking English


class SmtpSink:
    """A real SMTP server on loopback that keeps what it receives, or answers RCPT with `rcpt_reply`."""

    def __init__(self):
        self.port = free_port()
        self.messages = []
        self.rcpt_times: list[float] = []  # time.time() of every RCPT, accepted or refused
        self.rcpt_to: list[str] = []  # and its address, in the same order
        self.rcpt_reply: str | None = None
        self.data_started: list[float] = []  # time.monotonic() of every DATA, before any delay
        self.data_delays: list[float] = []  # seconds to wait before answering the next DATAs, in order

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpt_times.append(time.time())
        self.rcpt_to.append(address)
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.data_started.append(time.monotonic())
        self.messages.append(message_from_bytes(envelope.content, policy=email_policy))
        if self.data_delays:  # a server slow to confirm: the message is in, the client still waits
            await asyncio.sleep(self.data_delays.pop(0))
        return "250 Message accepted"


@pytest.fixture
def smtp(settings):
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield sink
    controller.stop()


@pytest.fixture
def work():
    """Run a real worker in burst mode on the given queues, as `rqworker --burst` would: the
    in-process one (slots as threads of this process) or the forking one, as the policies say."""

    def run(*queue_names: str):
        queue_names = queue_names or ("email",)
        connections.close_all()  # a forked work-horse must open its own DB connection
        worker = django_rq.get_worker(*queue_names, worker_class=worker_class_for(queue_names))
        worker.work(burst=True, with_scheduler=True)
        return worker

    return run


@pytest.fixture
def worker_log(tmp_path):
    """Everything logged at DEBUG and above, by this process and the work-horses it forks."""
    import logging

    path = tmp_path / "worker.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level, root.level = root.level, logging.DEBUG
    root.addHandler(handler)
    yield lambda: path.read_text()
    root.removeHandler(handler)
    root.setLevel(level)
    handler.close()


@pytest.fixture
def work_until(work):
    """Run burst workers again and again (RQ's scheduler promotes due retries) until `done()`."""

    def run(done, *queue_names: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            work(*queue_names)
            if done():
                return
            time.sleep(0.2)
        pytest.fail(f"not done within {timeout}s: {getattr(done, '__name__', done)}")

    return run


def promote_scheduled(queue_name: str) -> list[str]:
    """Enqueue every scheduled job of the queue now, as the scheduler would when their time comes."""
    queue = django_rq.get_queue(queue_name)
    registry = queue.scheduled_job_registry
    job_ids = registry.get_job_ids()
    for job_id in job_ids:
        job = queue.fetch_job(job_id)
        registry.remove(job)
        queue.enqueue_job(job)
    return job_ids


class SlackSink:
    """A real HTTP server standing in for Slack's webhook; `answers` are served in order, then 200 ok."""

    PATH = "/services/T0CERES/B0ALERTS/webhook-secret-Zq9"

    def __init__(self, httpserver):
        self.server = httpserver
        self.requests: list[tuple[float, dict]] = []  # (time.time(), JSON body)
        self.answers: list = []
        httpserver.expect_request(self.PATH, method="POST").respond_with_handler(self._handle)

    @property
    def texts(self) -> list[str]:
        return [body["text"] for _, body in self.requests]

    def _handle(self, request):
        from werkzeug import Response

        self.requests.append((time.time(), request.get_json()))
        answer = self.answers.pop(0) if self.answers else Response("ok")
        return answer if isinstance(answer, Response) else answer()


@pytest.fixture
def slack(httpserver, settings):
    sink = SlackSink(httpserver)
    settings.SLACK_WEBHOOK_URL = httpserver.url_for(SlackSink.PATH)
    return sink


@pytest.fixture
def policy(monkeypatch):
    """Change a queue's policy for this test: `policy("email", retry_max=0, alert_window=1)`."""

    def change(queue_name: str, **changes):
        from dataclasses import replace

        from jobs.config import policies

        monkeypatch.setitem(policies.QUEUES, queue_name, replace(policies.QUEUES[queue_name], **changes))

    return change


def process_env(smtp, **extra) -> dict:
    """The environment of a process started by a test: the test database, Redis and SMTP server."""
    db = urlsplit(os.environ["DATABASE_URL"])
    return {
        **os.environ,
        "DATABASE_URL": urlunsplit(db._replace(path="/" + connection.settings_dict["NAME"])),
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp.port}",
        **extra,
    }


@pytest.fixture
def live_worker(smtp, tmp_path):
    """Start `manage.py rqworker <queues> --with-scheduler` as its own process, on the test database."""
    processes = []

    def start(*queue_names: str, options: tuple[str, ...] = (), env: dict | None = None):
        env = process_env(smtp, **(env or {}))
        command = [sys.executable, "manage.py", "rqworker", *queue_names, "--with-scheduler", *options]
        log = open(tmp_path / f"worker-{len(processes)}.log", "wb")
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()  # a warm shutdown waits for the running job...
        stop_group(process, timeout=15)  # ...which some tests leave running on purpose


def group_alive(pgid: int) -> bool:
    """Some process of the group still runs; a zombie waiting to be reaped does not count."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False


def stop_group(process: subprocess.Popen, timeout: float) -> None:
    """Wait for `process` (already signalled) and every process of its group to exit, then SIGKILL
    what is left: none may outlive the test, holding the test database open or working on."""
    deadline = time.monotonic() + timeout
    try:
        process.wait(timeout=timeout)
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    except subprocess.TimeoutExpired:
        pass
    if group_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        while group_alive(process.pid):
            time.sleep(0.05)

"""The whole process set, started for real with honcho and with PM2, stopped with SIGTERM mid-job."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request

import django_rq
import pytest

from ceres_site.accounts.models import User
from jobs.config.policies import QUEUES
from jobs.config.processes import processes
from jobs.enqueue.producers import enqueue_email_verify, enqueue_stored_call
from tests.conftest import BASE_DIR, free_port, process_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def live_worker_count() -> int:
    connection = django_rq.get_connection("email")
    return sum(connection.scard(f"ceres:queue:workers:{name}") for name in QUEUES)


def gone(pids: list[int]) -> bool:
    """None of `pids` runs any more (a zombie waiting for its parent to reap it counts as gone)."""
    for pid in pids:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            return False
    return True


def exercise(smtp, web_port: int, stop, session_pids):
    """Everything is up; a verification email goes through; a stop lets a slow job finish."""
    expected = sum(1 if policy.in_process else policy.concurrency for policy in QUEUES.values())  # processes
    wait_for(lambda: live_worker_count() == expected, timeout=90)
    wait_for(lambda: _answers(f"http://127.0.0.1:{web_port}/accounts/signup/"), timeout=30)
    wait_for(lambda: django_rq.get_scheduler("maintenance").is_alive(), timeout=60)  # up, its handlers installed
    user = User.objects.create_user(username="ana@example.com", email="ana@example.com", first_name="Ana")
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    wait_for(lambda: smtp.messages, timeout=30)
    assert smtp.messages[0]["To"] == "ana@example.com"

    enqueue_stored_call(queue_name="email", func="tests.tasks.sleep", job_id="email-slow-1", kwargs={"seconds": 4})
    queue = django_rq.get_queue("email")
    wait_for(lambda: queue.fetch_job("email-slow-1").get_status() == "started", timeout=30)
    pids = session_pids()
    stop()

    wait_for(lambda: gone(pids), timeout=60)
    assert queue.fetch_job("email-slow-1").get_status() == "finished"
    assert queue.started_job_registry.get_job_count(cleanup=False) == 0


def _answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def descendants(root: int) -> list[int]:
    """`root` and every process under it (honcho gives each child a session of its own)."""
    rows = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    children = {}
    for pid, parent in (map(int, row.split()) for row in rows if row.strip()):
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def procfile_names() -> list[str]:
    lines = (BASE_DIR / "ecosystem" / "Procfile").read_text().splitlines()
    return [line.split(":", 1)[0] for line in lines if line.strip() and not line.startswith("#")]


def test_honcho_runs_the_procfile_and_stops_gracefully(smtp, tmp_path):
    web_port = free_port()
    env = process_env(
        smtp, WEB_PORT=str(web_port), ALLOWED_HOSTS="127.0.0.1", PATH=f"{BASE_DIR}/.venv/bin:{os.environ['PATH']}"
    )
    log = open(tmp_path / "honcho.log", "wb")
    honcho = subprocess.Popen([sys.executable, "bin/procfile"], cwd=BASE_DIR, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        exercise(smtp, web_port, lambda: honcho.send_signal(signal.SIGTERM), lambda: descendants(honcho.pid))
        assert honcho.wait(timeout=30) == 128 + signal.SIGTERM  # honcho's answer to being stopped
        log = (tmp_path / "honcho.log").read_text()
        stopped = [line for line in log.splitlines() if "system" in line and " stopped (rc=" in line]
        assert len(stopped) == len(procfile_names()) and all(line.endswith("(rc=0)") for line in stopped), stopped
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)


@pytest.mark.slow
def test_bin_run_refuses_a_busy_web_port_in_one_line_before_starting_anything(smtp):
    redis_port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = process_env(smtp, REDIS_URL=f"redis://127.0.0.1:{redis_port}/5", WEB_PORT=str(port))
        done = subprocess.run(["bin/run"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=600)

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Port {port} is in use (127.0.0.1:{port}): stop what listens there, or choose another port: WEB_PORT=8001 bin/run"
    ]
    assert "redis-server" not in done.stdout and "is starting" not in done.stdout  # nothing was started
    assert not (BASE_DIR / "var" / "redis" / str(redis_port)).exists()


def test_bin_run_stops_the_redis_it_started_last(smtp, tmp_path, settings):
    """SIGTERM to `bin/run` (a supervisor, `kill`): every process finishes its jobs, then its Redis stops."""
    web_port, redis_port = free_port(), free_port()
    url = f"redis://127.0.0.1:{redis_port}/5"  # nothing answers there: bin/run starts its own redis-server
    settings.RQ_QUEUES = {name: {**config, "URL": url} for name, config in settings.RQ_QUEUES.items()}
    env = process_env(smtp, REDIS_URL=url, WEB_PORT=str(web_port), ALLOWED_HOSTS="127.0.0.1")
    data = BASE_DIR / "var" / "redis" / str(redis_port)
    log = open(tmp_path / "run.log", "wb")
    run = subprocess.Popen(["bin/run"], cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(redis_port), "ping"], capture_output=True).stdout
                 == b"PONG\n", timeout=120)  # fmt: skip
        expected = sum(1 if policy.in_process else policy.concurrency for policy in QUEUES.values())
        wait_for(lambda: live_worker_count() == expected, timeout=90)
        # Every process up (a process stopped while it still starts exits by the signal, rc=-15).
        wait_for(lambda: _answers(f"http://127.0.0.1:{web_port}/accounts/signup/"), timeout=60)
        wait_for(lambda: django_rq.get_scheduler("maintenance").is_alive(), timeout=60)
        enqueue_stored_call(queue_name="email", func="tests.tasks.sleep", job_id="email-slow-1", kwargs={"seconds": 4})
        queue = django_rq.get_queue("email")
        wait_for(lambda: queue.fetch_job("email-slow-1").get_status() == "started", timeout=30)
        redis_pid = int((data / "redis.pid").read_text())

        run.send_signal(signal.SIGTERM)

        assert run.wait(timeout=90) == 128 + signal.SIGTERM
        wait_for(lambda: gone([redis_pid]), timeout=30)  # stopped, and only now
        output = (tmp_path / "run.log").read_text()
        stopped = [line for line in output.splitlines() if "system" in line and " stopped (rc=" in line]
        assert len(stopped) == len(procfile_names()) and all(line.endswith("(rc=0)") for line in stopped), stopped
        assert "email-slow-1 finished" in output
        assert "Emails go out through the SMTP server of EMAIL_URL." in output  # EMAIL_URL is set here
        assert "ConnectionError" not in output and "Traceback" not in output, output[-3000:]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        subprocess.run(["redis-cli", "-p", str(redis_port), "shutdown", "nosave"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def pm2():
    """PM2 from the npm registry, installed once under var/ (no global install)."""
    prefix = BASE_DIR / "var" / "pm2"
    binary = prefix / "node_modules" / ".bin" / "pm2"
    if not binary.exists():
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix), "pm2@7.0.4"],
                       check=True, timeout=300)  # fmt: skip
    return str(binary)


def test_pm2_runs_the_ecosystem_and_stops_gracefully(smtp, tmp_path, pm2):
    web_port = free_port()
    env = process_env(smtp, WEB_PORT=str(web_port), ALLOWED_HOSTS="127.0.0.1", PM2_HOME=str(tmp_path / "pm2"))
    (BASE_DIR / "var" / "log").mkdir(parents=True, exist_ok=True)
    run = lambda *args: subprocess.run([pm2, *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120)  # noqa: E731
    started = run("start", "ecosystem/ecosystem.config.js")
    assert started.returncode == 0, started.stderr
    names = {f"ceres-{process.name}" for process in processes()}
    try:
        listed = run("jlist")
        assert names <= {app["name"] for app in json.loads(listed.stdout)}
        daemon_pid = int((tmp_path / "pm2" / "pm2.pid").read_text())

        def app_pids():
            return [pid for app in json.loads(run("jlist").stdout) if app["pid"] for pid in descendants(app["pid"])]

        exercise(smtp, web_port, lambda: run("stop", "all"), app_pids)
    finally:
        run("kill")
    wait_for(lambda: gone([daemon_pid]), timeout=30)

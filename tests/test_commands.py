"""The commands as the README writes them, and every command's answer to what it does not run or
to bad arguments: one clear line, a non-zero exit, never a traceback. Real processes (`manage.py`)."""

import re
import shlex
import subprocess
import sys

import pytest

from ceres_site.accounts.models import User
from tests.conftest import BASE_DIR, process_env

pytestmark = pytest.mark.django_db(transaction=True)

RUNS_UNTIL_STOPPED = 15  # seconds a command documented as "runs until stopped" must stay up, then is stopped


def readme_commands() -> list[tuple[str, str]]:
    """(command, its comment) of every line in the README's ```sh blocks, but the two commands
    (`bin/run`: `test_processes.py`; `bin/test`: CI itself)."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", (BASE_DIR / "README.md").read_text(), flags=re.S):
        for line in block.splitlines():
            command, _, comment = line.partition("  #")
            if command.strip() and not command.startswith("bin/"):
                found.append((command.strip(), comment.strip()))
    return found


def run(command: str, smtp, timeout: float = 120) -> subprocess.CompletedProcess | None:
    """Run `command` as typed (its `python` is this interpreter); None if it was still running at
    `timeout` (then stopped)."""
    argv = shlex.split(command)
    argv[0] = sys.executable if argv[0] == "python" else argv[0]
    env = process_env(smtp, SLACK_WEBHOOK_URL="http://127.0.0.1:9/services/T/B/x")  # configured: no start-up warning
    process = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        out, _ = process.communicate(timeout=60)
        assert "Traceback" not in out, out
        return None
    return subprocess.CompletedProcess(argv, process.returncode, out)


def test_the_readme_lists_the_commands_it_promises():
    commands = [command for command, _ in readme_commands()]
    assert "python manage.py rqscheduler" in commands and "python manage.py enqueue_verify ana@example.com" in commands
    assert len(commands) >= 15


@pytest.mark.slow
@pytest.mark.parametrize("command,comment", readme_commands())
def test_every_readme_command_runs_as_written(command, comment, smtp):
    User.objects.create_user(username="ana@example.com", email="ana@example.com", first_name="Ana")

    result = run(command, smtp, timeout=RUNS_UNTIL_STOPPED if "runs until stopped" in comment else 120)

    if "runs until stopped" in comment:
        assert result is None, result.stdout  # still up when stopped: it did not exit on its own
        return
    assert result is not None and "Traceback" not in result.stdout, result
    allowed = (0, 1) if "exit status 1" in comment else (0,)
    assert result.returncode in allowed, result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command,says", [
    ("rqenqueue jobs.tasks.slack.post_to_slack x", "rqenqueue is not used here: jobs go through the producers"),
    ("rqworker-pool email", "rqworker-pool is not used here"),
    ("rqcron", "rqcron is not used here"),
    ("rqworker", "name the queues to work on"),
    ("rqworker nada", "unknown queue nada"),
    ("rqworker email --processes dos", "--processes takes a number of processes or auto, not 'dos'"),
    ("rqworker files --processes 2", "--processes is for in-process queues"),
    ("rqscheduler --queue nada", "unknown queue nada"),
    ("queues pause", "name the queue to pause"),
    ("queues pause nada", "argument queue: invalid choice: 'nada'"),
    ("enqueue_verify nadie@example.com", "1 of 1 users not found"),
    ("daily_report --date 29/11/2026", "'29/11/2026' is not a day: write it YYYY-MM-DD"),
    ("rqsuspend --duration 60", "--duration is not supported"),
])  # fmt: skip
def test_what_a_command_does_not_do_is_one_clear_line_and_a_non_zero_exit(command, says, smtp):
    result = run(f"python manage.py {command}", smtp)

    assert result is not None and result.returncode != 0
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    # The error is the last line; before it, only the command's own report (enqueue_verify's per user).
    assert says in lines[-1] and "Traceback" not in result.stdout, result.stdout
    assert len(lines) == 1 or command.startswith("enqueue_verify") and lines[:-1] == ["nadie@example.com: no such user"]

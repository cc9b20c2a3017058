"""The process definitions serve every queue with the concurrency its policy declares."""

import re
import shlex

from jobs.queues import QUEUES
from tests.conftest import BASE_DIR


def procfile() -> dict[str, list[str]]:
    lines = (BASE_DIR / "ecosystem" / "Procfile").read_text().splitlines()
    entries = [line.split(":", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {name.strip(): shlex.split(command) for name, command in entries}


def served_concurrency(argv: list[str]) -> tuple[list[str], int]:
    """(queues, processes) of an `rqworker` / `rqworker-pool` command line; fails on anything else."""
    command = argv[argv.index("manage.py") + 1]
    queues = [arg for arg in argv[argv.index(command) + 1 :] if not arg.startswith("-") and not arg.isdigit()]
    if command == "rqworker-pool":
        return queues, int(argv[argv.index("--num-workers") + 1])
    assert command == "rqworker" and "--with-scheduler" in argv, f"{argv}: retries need RQ's scheduler"
    return queues, 1


def test_every_queue_has_its_worker_process_with_the_declared_concurrency():
    processes = procfile()
    workers = {name: served_concurrency(argv) for name, argv in processes.items() if name.startswith("worker-")}

    assert set(workers) == {f"worker-{name}" for name in QUEUES}
    for name, policy in QUEUES.items():
        assert workers[f"worker-{name}"] == ([name], policy.concurrency)


def test_web_and_scheduler_are_defined():
    processes = procfile()

    assert "runserver" in processes["web"] or "gunicorn" in processes["web"][0]
    assert processes["scheduler"][:3] == ["python", "manage.py", "rqscheduler"]
    assert re.fullmatch(r"\w+", processes["scheduler"][processes["scheduler"].index("--queue") + 1])

"""The forking queues' workers as one family (`jobs.runtime.family`): real `rqworker` processes and signals."""

import os
import signal
from pathlib import Path

import django_rq
import pytest

from jobs.config.policies import QUEUES
from jobs.observability import health, reads
from tests.conftest import wait_for
from tests.test_slots import marks, status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def registered(queue_name: str) -> int:
    return len([worker for worker in reads.workers(queue_name) if worker.alive])


def slow_files_job(tmp_path, n: int, seconds: float) -> str:
    job_id = f"files-slow-{n}"
    queue = django_rq.get_queue("files")
    queue.enqueue("tests.tasks.mark_slowly", n, str(tmp_path / "done"), seconds, job_id=job_id)
    return job_id


@pytest.fixture
def family(live_worker):
    process = live_worker("maintenance", "files")
    wait_for(lambda: registered("maintenance") == 1 and registered("files") == 2, timeout=60)
    return process


def test_one_parent_forks_a_worker_per_unit_of_concurrency(family, tmp_path):
    assert QUEUES["files"].concurrency == 2 and QUEUES["maintenance"].concurrency == 1
    assert len(children(family.pid)) == 3

    for n in range(2):
        slow_files_job(tmp_path, n, 2)
    wait_for(lambda: len(marks(tmp_path / "done")) == 4, timeout=60)
    starts = [m for m in marks(tmp_path / "done")[:2]]
    assert sorted(starts) == ["start 0", "start 1"]  # both ran at once: two workers


def test_a_worker_that_dies_is_replaced(family, tmp_path):
    victim = children(family.pid)[0]
    os.kill(victim, signal.SIGKILL)

    wait_for(lambda: victim not in children(family.pid) and len(children(family.pid)) == 3, timeout=30)
    wait_for(lambda: registered("maintenance") + registered("files") == 3, timeout=60)
    job_id = slow_files_job(tmp_path, 1, 0)
    wait_for(lambda: status(job_id, queue="files") == "finished", timeout=60)


def test_sigterm_lets_running_jobs_finish_then_the_family_exits(family, tmp_path):
    job_id = slow_files_job(tmp_path, 1, 3)
    wait_for(lambda: marks(tmp_path / "done") == ["start 1"], timeout=30)
    # Every worker started first: rq lists a worker before it installs its signal handlers, so one
    # stopped while it starts dies listed (the reaper clears it later); this test is about the rest.
    wait_for(lambda: registered("maintenance") + registered("files") == 3, timeout=60)
    workers = children(family.pid)

    family.send_signal(signal.SIGTERM)

    assert family.wait(timeout=60) == 0
    assert marks(tmp_path / "done") == ["start 1", "end 1"] and status(job_id, queue="files") == "finished"
    assert not any(alive(pid) for pid in workers)
    assert registered("files") == registered("maintenance") == 0


def test_workers_stop_by_themselves_when_their_parent_is_killed(family, tmp_path):
    job_id = slow_files_job(tmp_path, 1, 3)
    wait_for(lambda: marks(tmp_path / "done") == ["start 1"], timeout=30)
    workers = children(family.pid)

    family.kill()
    family.wait()

    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=60)
    assert marks(tmp_path / "done") == ["start 1", "end 1"]  # the running job finished first
    assert status(job_id, queue="files") == "finished"


def test_in_process_workers_run_as_several_processes_of_one_parent(live_worker, tmp_path):
    process = live_worker("email", "slack", options=("--processes", "2"))
    wait_for(lambda: registered("email") == 2 and registered("slack") == 2, timeout=60)
    assert len(children(process.pid)) == 2
    assert sum(worker.slots for worker in reads.workers("email") if worker.alive) == 2 * QUEUES["email"].concurrency
    [check] = [c for c in health.health_report()["checks"] if c["name"] == "email.workers"]
    assert check["detail"] == "10 of 10 slots in 2 processes, 0 busy"

    queue, done = django_rq.get_queue("email"), tmp_path / "done"
    for n in range(2 * QUEUES["email"].concurrency):  # all at once only with the slots of both processes
        queue.enqueue("tests.tasks.mark_slowly", n, str(done), 10, job_id=f"email-slow-{n}")
    wait_for(lambda: len([m for m in marks(done) if m.startswith("start")]) == 10, timeout=60)
    assert not [m for m in marks(done) if m.startswith("end")]  # all ten ran at once

    process.send_signal(signal.SIGTERM)  # the running jobs finish, then the parent exits
    assert process.wait(timeout=60) == 0
    assert len([m for m in marks(done) if m.startswith("end")]) == 10
    assert registered("email") == 0

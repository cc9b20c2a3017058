"""The in-process worker (`jobs.runtime.slots`): real `rqworker` processes, real signals, real SMTP."""

import os
import random
import re
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import django_rq
import pytest
from django.db import connection
from rq import Callback, Retry

from ceres_site.accounts.models import User, VerificationToken
from jobs.config import pauses
from jobs.enqueue.producers import enqueue_email_verify
from jobs.failures.attempts import on_job_failure
from jobs.observability import health, reads
from jobs.runtime import slot_loop, slot_runner, slots
from tests.conftest import wait_for
from tests.test_email_tasks import LINK

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def enqueue(func: str, *args, job_id: str, queue: str = "email", **options):
    return django_rq.get_queue(queue).enqueue(f"tests.tasks.{func}", *args, job_id=job_id, **options)


def status(job_id: str, queue: str = "email") -> str | None:
    job = django_rq.get_queue(queue).fetch_job(job_id)
    return job.get_status(refresh=False).value if job else None


def marks(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


def make_users(n: int) -> list[User]:
    emails = [f"slot{i}@example.test" for i in range(n)]
    return [User.objects.create_user(username=email, email=email, first_name="Ada") for email in emails]


def test_one_process_runs_every_slot_of_email_and_slack(live_worker, tmp_path):
    process = live_worker("email", "slack")
    wait_for(lambda: reads.workers("email") and reads.workers("slack"), timeout=30)
    [email], [slack] = reads.workers("email"), reads.workers("slack")
    assert email.name == slack.name and (email.slots, slack.slots) == (5, 10)

    done = tmp_path / "done"
    for n in range(6):
        enqueue("mark_slowly", n, str(done), 2 * slots.HEARTBEAT_INTERVAL, job_id=f"email-slow-{n}")
    wait_for(lambda: len([m for m in marks(done) if m.startswith("start")]) == 5, timeout=30)
    wait_for(lambda: reads.workers("email")[0].busy == 5, timeout=15)  # the next heartbeat says so
    assert reads.queue_stats("email").counts["queued"] == 1  # the sixth waits for a free slot
    [check] = [c for c in health.queue_checks(reads.queue_stats("email")) if c.name == "email.workers"]
    assert check.detail == "capacidad para 5 de 5 jobs a la vez en 1 proceso, 5 en curso"  # monitors get English

    wait_for(lambda: len(marks(done)) == 12, timeout=60)
    assert sorted(marks(done)) == sorted([f"start {n}" for n in range(6)] + [f"end {n}" for n in range(6)])
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert children == []  # no work-horse, no scheduler process: the slots are threads


def test_a_job_longer_than_the_heartbeat_ttl_runs_once(live_worker, tmp_path):
    live_worker("email")
    live_worker("email")  # a second process that would take the job over if it looked abandoned
    done = tmp_path / "done"
    seconds = slots.PROCESS_TTL + 2 * slots.REAP_INTERVAL
    enqueue("mark_slowly", 1, str(done), seconds, job_id="email-long-1", job_timeout=seconds + 60)

    wait_for(lambda: status("email-long-1") == "finished", timeout=seconds + 60)
    assert marks(done) == ["start 1", "end 1"]
    assert "failures" not in django_rq.get_queue("email").fetch_job("email-long-1").meta


def test_a_job_past_its_timeout_fails_that_attempt_and_retries(live_worker, tmp_path):
    process = live_worker("email")
    done = tmp_path / "done"
    enqueue("spin", 1, str(done), 30, job_id="email-stuck-1", job_timeout=1,
            retry=Retry(max=1, interval=[1]), on_failure=Callback(on_job_failure))  # fmt: skip

    wait_for(lambda: status("email-stuck-1") == "failed", timeout=60)
    attempts = django_rq.get_queue("email").fetch_job("email-stuck-1").meta["failures"]
    assert [attempt["error"].split(":")[0] for attempt in attempts] == ["JobTimeoutException"] * 2
    assert marks(done) == ["start 1", "start 1"]  # stopped twice, never reached its end

    enqueue("mark", 2, str(done), job_id="email-next-1")
    wait_for(lambda: status("email-next-1") == "finished", timeout=30)
    assert process.poll() is None


def test_a_timeout_stops_the_jobs_own_code_or_comes_too_late(work, monkeypatch):
    """Jobs that return right at their deadline: the timeout stops the task (in its code, or at its
    call as it returns), or the task's return wins; it never lands in the bookkeeping after the
    return (RQ's, redis-py's)."""
    monkeypatch.setattr(slot_runner, "WATCHDOG_TICK", 0.0001)  # the watchdog looks 2000 times as often,
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # and gets the GIL at once: a late timeout is sent every few jobs
    try:
        for n in range(60):
            enqueue("return_at_deadline", random.uniform(-0.0002, 0.0004), job_id=f"email-edge-{n}", job_timeout=1)
        worker = work("email")
    finally:
        sys.setswitchinterval(switch)

    queue = django_rq.get_queue("email")
    raised_in = set()
    for n in range(60):
        job = queue.fetch_job(f"email-edge-{n}")
        if job.get_status() != "finished":
            raised_in.add(re.findall(r'File "(.+)", line \d+, in (\w+)', job.latest_result().exc_string)[-1])
    in_the_task = (str(Path(__file__).parent / "tasks.py"), "return_at_deadline")
    at_its_call = (slot_runner.__file__, "_run_job_code")
    assert raised_in <= {in_the_task, at_its_call}
    idle = worker.connection.connection_pool._available_connections
    assert not [c for c in idle if c._sock and c.can_read()]  # no pooled connection holds an unread reply
    assert worker.connection.ping()


def test_a_job_that_exits_or_runs_out_of_memory_fails_alone(live_worker, tmp_path):
    process = live_worker("email")
    done = tmp_path / "done"
    enqueue("exit_process", job_id="email-exit-1")
    enqueue("exhaust_memory", job_id="email-oom-1")
    enqueue("mark", 1, str(done), job_id="email-fine-1")

    wait_for(lambda: status("email-fine-1") == "finished", timeout=30)
    wait_for(lambda: status("email-exit-1") == status("email-oom-1") == "failed", timeout=30)
    assert marks(done) == ["1"] and process.poll() is None
    [worker] = reads.workers("email")
    assert worker.alive


def test_a_job_deleted_while_queued_is_skipped_without_a_trace(work, redis_conn, tmp_path):
    queue = django_rq.get_queue("email")
    gone = enqueue("mark", 1, str(tmp_path / "done"), job_id="email-gone-1")
    enqueue("mark", 2, str(tmp_path / "done"), job_id="email-kept-2")
    redis_conn.delete(gone.key)  # its id stays in the queue's list, as a racing delete leaves it

    work("email")

    assert marks(tmp_path / "done") == ["2"]
    assert not redis_conn.exists(gone.key)  # the start wrote nothing that outlives it
    assert queue.started_job_registry.get_job_ids() == []
    assert redis_conn.llen(queue.intermediate_queue_key) == 0
    assert status("email-kept-2") == "finished"


def test_sigkill_mid_email_gives_the_job_back_once(smtp, live_worker):
    [user] = make_users(1)
    smtp.data_delays = [5]  # the server holds the first message's answer: the kill lands mid-send
    first = live_worker("email")
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    wait_for(lambda: smtp.data_started, timeout=30)

    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    live_worker("email")  # what the supervisor does

    # The bound is loose on purpose (machines are loaded); benchmarks/sigkill_recovery.py reports the figure.
    wait_for(lambda: len(smtp.data_started) == 2, timeout=60)
    wait_for(lambda: status(f"email-verify-{user.pk}") == "finished", timeout=30)
    job = django_rq.get_queue("email").fetch_job(f"email-verify-{user.pk}")
    assert [attempt["error"] for attempt in job.meta["failures"]] == ["AbandonedJobError: "]
    assert len(smtp.data_started) == 2  # one killed run, one re-run: at most one extra copy per crash
    assert len({LINK.search(message.get_body(("plain",)).get_content())[0] for message in smtp.messages}) == 1
    assert VerificationToken.objects.filter(user=user).count() == 1
    assert reads.queue_stats("email").counts["started"] == 0


def test_sigterm_lets_the_five_emails_in_flight_finish(smtp, live_worker):
    users = make_users(5)
    smtp.data_delays = [2] * 5
    process = live_worker("email")
    for user in users:
        enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    wait_for(lambda: len(smtp.data_started) == 5, timeout=30)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert sorted(message["To"] for message in smtp.messages) == sorted(user.email for user in users)
    assert all(status(f"email-verify-{user.pk}") == "finished" for user in users)
    assert reads.workers("email") == []  # it said goodbye


def test_a_second_signal_stops_at_once_and_the_job_comes_back(smtp, live_worker, tmp_path):
    [user] = make_users(1)
    smtp.data_delays = [60]
    process = live_worker("email")
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    wait_for(lambda: smtp.data_started, timeout=30)

    process.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping after the running jobs" in (tmp_path / "worker-0.log").read_text(), timeout=15)
    wait_for(lambda: process.poll() is not None or process.send_signal(signal.SIGTERM), timeout=30, interval=1.5)
    assert process.returncode == 1

    live_worker("email")
    wait_for(lambda: status(f"email-verify-{user.pk}") == "finished", timeout=60)
    assert len(smtp.data_started) == 2


def test_database_connections_broken_while_idle_are_replaced_before_the_next_jobs(smtp, live_worker):
    users = make_users(10)
    smtp.data_delays = [1] * 5  # the first five run at once: every slot opens its connection
    live_worker("email")
    for user in users[:5]:
        enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    wait_for(lambda: all(status(f"email-verify-{user.pk}") == "finished" for user in users[:5]), timeout=60)

    with connection.cursor() as cursor:  # what a PostgreSQL restart or a proxy's idle timeout does
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0]
    time.sleep(slot_loop.DB_CHECK_AFTER + 0.5)  # not a wait for an outcome: the slots must have been idle
    for user in users[5:]:
        enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)

    wait_for(lambda: all(status(f"email-verify-{user.pk}") == "finished" for user in users[5:]), timeout=60)
    jobs = [django_rq.get_queue("email").fetch_job(f"email-verify-{user.pk}") for user in users[5:]]
    assert [job.meta.get("failures", []) for job in jobs] == [[]] * 5  # no attempt lost to a dead connection
    assert len(smtp.messages) == 10


def test_recycling_after_n_jobs_loses_nothing(live_worker, tmp_path):
    process = live_worker("email", options=("--max-jobs", "3"))
    done = tmp_path / "done"
    # A generation runs its 3 jobs, the others its 5 slots had started by then, and the next one each
    # of those ends had started with it (`SlotRunner.handle_job_success`): 3 + 5 + 5 at most.
    jobs = 2 * (3 + 5 + 5) + 1
    for n in range(jobs):
        enqueue("mark", n, str(done), job_id=f"email-recycle-{n}")

    wait_for(lambda: all(status(f"email-recycle-{n}") == "finished" for n in range(jobs)), timeout=90)
    assert sorted(marks(done), key=int) == [str(n) for n in range(jobs)]
    wait_for(lambda: (tmp_path / "worker-0.log").read_text().count("starting again") >= 2, timeout=30)
    assert process.poll() is None
    wait_for(lambda: len(reads.workers("email")) == 1, timeout=30)  # each generation left the registry


def test_idle_slots_cost_no_redis_traffic(live_worker, redis_conn):
    live_worker("email", "slack")
    seen = set()  # two heartbeats after the first: start-up, its sweep and the first reap are over
    wait_for(lambda: seen.update(w.last_heartbeat for w in reads.workers("email")) or len(seen) >= 3, timeout=60)
    redis_conn.config_resetstat()
    beats = set()
    wait_for(lambda: beats.add(reads.workers("email")[0].last_heartbeat) or len(beats) >= 4, timeout=60, interval=0.5)

    calls = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in redis_conn.info("commandstats").items()}
    # One idle slot per queue waits in Redis, the others on a lock: about one BLMOVE per queue and
    # interval (15 polling slots would make 15), and no per-slot heartbeats: per interval one HSET
    # for the process and one for its RQ scheduler. No new connections either (HELLO).
    assert calls.get("blmove", 0) <= 2 * len(beats), calls
    assert calls.get("hset", 0) <= 2 * len(beats), calls
    assert calls.get("hello", 0) == 0, calls


def test_the_in_process_worker_schedules_the_forking_queues_too(live_worker, tmp_path):
    live_worker("email", "slack")
    files = live_worker("files")
    wait_for(lambda: reads.workers("email") and reads.workers("files"), timeout=30)
    done = tmp_path / "done"
    later = timedelta(seconds=1)
    django_rq.get_queue("files").enqueue_in(later, "tests.tasks.mark", 1, str(done), job_id="files-later-1")

    wait_for(lambda: status("files-later-1", queue="files") == "finished", timeout=30)
    # The work-horse has exited; no RQ scheduler process was forked by the files workers: the lock was taken.
    workers = Path(f"/proc/{files.pid}/task/{files.pid}/children").read_text().split()
    assert len(workers) == 2
    wait_for(
        lambda: not any(Path(f"/proc/{pid}/task/{pid}/children").read_text().split() for pid in workers), timeout=15
    )
    assert marks(done) == ["1"]


def dequeues_counted(monkeypatch) -> list[str]:
    """The ids the slots took from their queues by themselves (not with a job's end)."""
    taken, dequeue = [], slot_loop.SlotLoop._dequeue

    def counting(self, queue, burst, *timeout):
        taken.append(job_id := dequeue(self, queue, burst, *timeout))
        return job_id

    monkeypatch.setattr(slot_loop.SlotLoop, "_dequeue", counting)
    return taken


def test_a_jobs_end_takes_and_starts_the_next_job_of_its_queue(work, policy, monkeypatch, tmp_path):
    policy("email", concurrency=1)
    taken = dequeues_counted(monkeypatch)
    starts, start = [], slot_runner.SlotRunner.start
    monkeypatch.setattr(
        slot_runner.SlotRunner, "start", lambda self, job_id, queue: starts.append(job_id) or start(self, job_id, queue)
    )
    for n in range(1, 5):
        enqueue("mark", n, str(tmp_path / "done"), job_id=f"email-chain-{n}")

    work("email")

    assert marks(tmp_path / "done") == ["1", "2", "3", "4"]
    assert taken == ["email-chain-1", None]  # 2 to 4 came with the end of the job before them...
    assert starts == ["email-chain-1"]  # ...started by it, in the same round trip
    assert all(status(f"email-chain-{n}") == "finished" for n in range(1, 5))


def test_a_pause_during_a_job_leaves_the_next_job_queued(work, policy, monkeypatch, redis_conn, tmp_path):
    policy("email", concurrency=1)
    monkeypatch.setattr(pauses, "REFRESH", 0)  # every look reads Redis
    enqueue("pause_queue", "email", job_id="email-pauses-1")
    enqueue("mark", 2, str(tmp_path / "done"), job_id="email-waits-2")

    work("email")

    queue = django_rq.get_queue("email")
    assert status("email-pauses-1") == "finished"
    assert status("email-waits-2") == "queued" and not (tmp_path / "done").exists()
    assert queue.get_job_ids() == ["email-waits-2"] and redis_conn.llen(queue.intermediate_queue_key) == 0


def test_a_job_started_with_the_last_ones_end_runs_through_a_pause_that_came_meanwhile(
    work, policy, monkeypatch, redis_conn, tmp_path
):
    """Started is started: as a job running when staff pause its queue, it runs to its end."""
    policy("email", concurrency=1)
    monkeypatch.setattr(pauses, "REFRESH", 0)  # every look reads Redis
    end = slot_runner.SlotRunner.handle_job_success

    def end_then_pause(self, job, *args, **kwargs):
        end(self, job, *args, **kwargs)
        if job.id == "email-first-1":
            pauses.pause(redis_conn, "email", "staff")

    monkeypatch.setattr(slot_runner.SlotRunner, "handle_job_success", end_then_pause)
    for n, name in enumerate(["first", "second", "third"], 1):
        enqueue("mark", n, str(tmp_path / "done"), job_id=f"email-{name}-{n}")

    work("email")

    queue = django_rq.get_queue("email")
    assert marks(tmp_path / "done") == ["1", "2"]
    assert [status(f"email-{name}-{n}") for n, name in enumerate(["first", "second", "third"], 1)] == [
        "finished", "finished", "queued"
    ]  # fmt: skip
    assert queue.get_job_ids() == ["email-third-3"] and redis_conn.llen(queue.intermediate_queue_key) == 0
    assert queue.started_job_registry.get_job_ids() == []


@pytest.mark.parametrize("meanwhile", ["paused", "stopping"])
def test_a_job_taken_with_the_last_ones_end_goes_back_if_the_worker_may_not_run_it(meanwhile, redis_conn):
    """Paused or stopping between a job's end and the next job's start: the next job goes back."""
    worker = django_rq.get_worker("email", worker_class=slots.SlotWorker)
    group = worker.groups[0]
    queue = group.queue
    for n in range(1, 3):
        enqueue("sleep", 0, job_id=f"email-handed-{n}")
    runner = worker._runner(group)
    runner.next_job_id = redis_conn.lmove(queue.key, queue.intermediate_queue_key).decode()  # as a job's end does
    if meanwhile == "paused":
        pauses.pause(redis_conn, "email", "staff")
    else:
        worker._stopping.set()

    assert worker._handed_over(runner, queue) is None
    assert queue.get_job_ids() == ["email-handed-1", "email-handed-2"]
    assert redis_conn.llen(queue.intermediate_queue_key) == 0
    assert runner.take_next_job_id() is None

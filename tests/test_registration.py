"""Workers in Redis: they come back on the lists after Redis lost them, and the reaper of dead
workers (`jobs.runtime.reaper.reap_dead_workers`) leaves the living alone and works alone."""

import os
import signal
import threading
import time

import django_rq
import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL

from jobs import rq_compat
from jobs.models import DeadLetter
from jobs.observability import reads
from jobs.runtime import reaper
from jobs.runtime.worker import CeresWorker
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FAST_BEAT = ("--worker-ttl", "20")  # an idle forking worker beats every 5 s (RQ: its TTL less 15 s)


def states(queue_name: str) -> list[str]:
    return [worker.state for worker in reads.workers(queue_name)]


def hold(tmp_path, queue_name: str, job_id: str):
    """A job that runs until the test creates the returned path."""
    release = tmp_path / f"release-{job_id}"
    django_rq.get_queue(queue_name).enqueue("tests.tasks.wait_until", str(release), job_id=job_id)
    return release


# --- back on the lists -------------------------------------------------------------------------


def test_an_idle_forking_worker_is_listed_idle_again_after_redis_lost_its_data(live_worker, redis_conn):
    live_worker("maintenance", options=FAST_BEAT)
    wait_for(lambda: states("maintenance") == ["idle"], timeout=30)

    redis_conn.flushdb()  # a Redis restarted without persistence

    wait_for(lambda: states("maintenance"), timeout=30)
    assert states("maintenance") == ["idle"]


def test_a_forking_worker_flushed_out_mid_job_is_listed_again_when_the_job_ends(live_worker, redis_conn, tmp_path):
    live_worker("maintenance", options=FAST_BEAT)
    release = hold(tmp_path, "maintenance", "maintenance-held-1")
    wait_for(lambda: states("maintenance") == ["busy"], timeout=30)

    redis_conn.flushdb()
    release.touch()  # the end of the job writes the worker's state back to a hash no list holds

    wait_for(lambda: states("maintenance") == ["idle"], timeout=30)


def test_a_forking_worker_flushed_out_mid_job_is_listed_again_while_the_job_runs(live_worker, redis_conn, tmp_path):
    live_worker("maintenance", options=FAST_BEAT)
    release = hold(tmp_path, "maintenance", "maintenance-held-1")
    wait_for(lambda: states("maintenance") == ["busy"], timeout=30)

    redis_conn.flushdb()

    # The worker beats for its running job every DEFAULT_JOB_MONITORING_INTERVAL seconds.
    wait_for(lambda: states("maintenance") == ["busy"], timeout=DEFAULT_JOB_MONITORING_INTERVAL + 30)
    release.touch()
    wait_for(lambda: states("maintenance") == ["idle"], timeout=30)


# --- the reaper ------------------------------------------------------------------------------


def test_the_reaper_releases_a_dead_schedulers_lock_and_only_a_dead_ones(redis_conn):
    worker = django_rq.get_worker("files", worker_class=CeresWorker)
    worker.prepare_scheduler()  # what `rqworker files` does at its start, and its maintenance when no
    worker.scheduler.acquire_locks(auto_start=True)  # one holds the queue's lock: RQ forks its scheduler
    process = worker.scheduler._process
    key = rq_compat.scheduler_lock_key("files")
    try:
        owner = redis_conn.get(key)
        wait_for(lambda: redis_conn.hget(worker.scheduler.key, "pid") == str(process.pid).encode(), timeout=30)
        assert owner and owner.decode() != worker.name  # a name of its own, no worker's

        assert reaper.reap_dead_workers(redis_conn) == []
        assert redis_conn.get(key) == owner

        os.kill(process.pid, signal.SIGKILL)
        process.join()
        assert reaper.reap_dead_workers(redis_conn) == []
        assert redis_conn.get(key) is None  # a retry delay need not wait for the lock to expire
    finally:
        if process.is_alive():
            worker.stop_scheduler()


def test_a_reap_longer_than_its_lock_ttl_keeps_other_reapers_out(live_worker, redis_conn, tmp_path, monkeypatch):
    monkeypatch.setattr(reaper, "REAP_LOCK_TTL", 1)
    process = live_worker("email")
    hold(tmp_path, "email", "email-held-1")  # no retries: its worker's death fails it, and the reap archives it
    wait_for(lambda: django_rq.get_queue("email").started_job_registry.get_job_ids() == ["email-held-1"], timeout=30)
    [dead] = [worker.name for worker in reads.workers("email")]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # It may have died reaping: its lock then lasts its TTL (jobs.runtime.reaper), unrenewed.
    wait_for(lambda: not redis_conn.exists(f"{settings.RQ_KEY_PREFIX}:reap-lock"), timeout=30)

    first = {}

    def reap():
        try:
            first["dead"] = reaper.reap_dead_workers(redis_conn)
        except Exception as error:
            first["error"] = error
        finally:
            connections.close_all()

    with transaction.atomic(), connection.cursor() as cursor:
        # The archive's table held: the first reap waits in its sweep as long as the test wants.
        cursor.execute(f"LOCK TABLE {DeadLetter._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=reap)
        thread.start()

        def first_reap_waits():
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # else this transaction sees its first look again
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0]

        wait_for(first_reap_waits, timeout=30)
        time.sleep(3 * reaper.REAP_LOCK_TTL)  # not a wait for an outcome: the reap must outlive its lock's TTL
        assert reaper.reap_dead_workers(redis_conn) is None  # a second reaper finds the work taken

    thread.join(timeout=30)
    assert first == {"dead": [dead]}
    assert DeadLetter.objects.filter(job_id="email-held-1").count() == 1

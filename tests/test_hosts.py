"""Several worker hosts on one Redis: a worker on another host is judged by its heartbeat alone (its
pid means nothing here), so its jobs come back once its registration expires, not before."""

import os
import signal
from pathlib import Path

import django_rq
import pytest
from django.conf import settings

from jobs import rq_compat
from jobs.enqueue.producers import enqueue_stored_call
from jobs.observability import reads
from jobs.runtime import reaper
from jobs.runtime.slots import PROCESS_TTL
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

OTHER_HOST = {"PYTHONPATH": str(Path(__file__).parent / "other_host"), "CERES_TEST_HOSTNAME": "worker-host-b"}


def test_a_dead_host_s_jobs_come_back_after_its_heartbeat_expires(
    live_worker, redis_conn, tmp_path, work_until, policy
):
    policy("email", retry_intervals=(1,))  # the job's retries, as its producer gives them
    process = live_worker("email", env=OTHER_HOST)
    release = tmp_path / "release"
    enqueue_stored_call(
        queue_name="email", func="tests.tasks.wait_until", job_id="email-on-host-b", kwargs={"path": str(release)}
    )
    queue = django_rq.get_queue("email")
    wait_for(lambda: queue.started_job_registry.get_job_ids() == ["email-on-host-b"], timeout=30)
    [remote] = [worker.name for worker in reads.workers("email")]
    key = rq_compat.worker_key(remote)
    assert redis_conn.hget(key, "hostname") == b"worker-host-b"

    os.killpg(process.pid, signal.SIGKILL)  # host B goes away: no signal handler, no goodbye in Redis
    process.wait()
    # It may have died reaping: its reap lock then lasts its TTL (10 s), well within its registration's.
    wait_for(lambda: not redis_conn.exists(f"{settings.RQ_KEY_PREFIX}:reap-lock"), timeout=30)
    assert reaper.reap_dead_workers(redis_conn) == []  # its pid is not ours to judge: it still counts as alive
    assert queue.fetch_job("email-on-host-b").get_status() == "started"

    wait_for(lambda: not redis_conn.exists(key), timeout=PROCESS_TTL * 3)  # its registration expires
    assert reaper.reap_dead_workers(redis_conn) == [remote]
    release.touch()
    work_until(lambda: queue.fetch_job("email-on-host-b").get_status() == "finished", "email", timeout=60)

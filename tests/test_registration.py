"""Workers in Redis: they come back on the lists after Redis lost them."""

import django_rq
import pytest
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL

from jobs import reads
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

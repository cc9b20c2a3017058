"""Redis Sentinel: the master dies while jobs are enqueued and worked; nothing acknowledged is lost.

A real topology on loopback: a master, a replica and three redis-sentinel processes.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import django_rq
import pytest
from redis import Redis
from redis.sentinel import Sentinel

from jobs.enqueue.producers import enqueue_stored_call
from tests.conftest import BASE_DIR, free_port, process_env, promote_scheduled, stop_group, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.failover, pytest.mark.slow]

MASTER_NAME = "ceres"


def redis_process(args, workdir):
    return subprocess.Popen(["redis-server", *args], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


@pytest.fixture
def sentinel_cluster(tmp_path):
    master_port, replica_port = free_port(), free_port()
    sentinel_ports = [free_port() for _ in range(3)]
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    processes = {
        "master": redis_process(["--port", str(master_port), *common], tmp_path),
        "replica": redis_process(
            ["--port", str(replica_port), "--replicaof", "127.0.0.1", str(master_port), *common], tmp_path
        ),  # fmt: skip
    }
    for n, port in enumerate(sentinel_ports):
        config = tmp_path / f"sentinel-{n}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        processes[f"sentinel-{n}"] = subprocess.Popen(["redis-sentinel", str(config)], stdout=subprocess.DEVNULL,
                                                       stderr=subprocess.STDOUT)  # fmt: skip
    sentinels = [("127.0.0.1", port) for port in sentinel_ports]
    wait_for(lambda: Redis(port=replica_port).info("replication").get("master_link_status") == "up", timeout=20)
    wait_for(lambda: _knows_replica(sentinels), timeout=20)
    yield {"sentinels": sentinels, "master_port": master_port, "processes": processes}
    for process in processes.values():
        process.kill()
        process.wait()


def _knows_replica(sentinels) -> bool:
    try:
        return all(Sentinel([s]).discover_slaves(MASTER_NAME) for s in sentinels)
    except Exception:
        return False


def _stuck(job_ids) -> bool:
    """Every job not run yet sits where a dying worker left it: dequeued, in the intermediate queue."""
    queue = django_rq.get_queue("files")
    return set(job_ids) <= {int(job_id.rsplit("-", 1)[1]) for job_id in queue.intermediate_queue.get_job_ids()}


def recover_stuck(queue_name: str) -> None:
    """What RQ's maintenance does for such a job, with its clock moved on instead of waited for: once
    the dead worker's heartbeat is over (90 s), the started registry lets it go; a minute after the
    intermediate queue first saw it, the job goes to its retry, which runs once the dead worker's
    scheduler lock has expired (60 s). Real time: up to about 5 minutes."""
    queue = django_rq.get_queue(queue_name)
    queue.started_job_registry.cleanup(timestamp=time.time() + 100)
    for job_id in queue.intermediate_queue.get_job_ids():
        queue.connection.set(queue.intermediate_queue.get_first_seen_key(job_id), time.time() - 120)
    queue.intermediate_queue.cleanup(django_rq.get_worker(queue_name), queue)
    promote_scheduled(queue_name)  # its retry delay, and the dead worker's scheduler lock, run out


def test_jobs_survive_the_loss_of_the_redis_master(sentinel_cluster, settings, smtp, tmp_path):
    sentinels = sentinel_cluster["sentinels"]
    connection = {"SENTINELS": sentinels, "MASTER_NAME": MASTER_NAME, "DB": 5, "SOCKET_TIMEOUT": 2,
                  "CONNECTION_KWARGS": {"socket_connect_timeout": 1}}  # fmt: skip
    settings.RQ_QUEUES = {name: {**config, **connection} for name, config in settings.RQ_QUEUES.items()}
    for key in ("URL",):
        for config in settings.RQ_QUEUES.values():
            config.pop(key, None)
    settings.REDIS_WAIT_REPLICAS = 1
    env = process_env(
        smtp, REDIS_SENTINELS=",".join(f"{h}:{p}" for h, p in sentinels), REDIS_SENTINEL_MASTER=MASTER_NAME
    )
    log = open(tmp_path / "worker.log", "wb")
    # A worker that loses Redis exits; PM2 (autorestart) and systemd (Restart=always) start it again.
    # This loop stands for them.
    supervised = f"while true; do {sys.executable} manage.py rqworker files --with-scheduler; sleep 1; done"
    worker = subprocess.Popen(["bash", "-c", supervised], cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    done_file = tmp_path / "done.txt"
    done_file.touch()
    acknowledged, failures, stop = [], [], threading.Event()

    def produce():
        n = 0
        while not stop.is_set():
            try:
                enqueue_stored_call(queue_name="files", func="tests.tasks.mark", job_id=f"files-ha-{n}",
                                    kwargs={"n": n, "path": str(done_file)})  # fmt: skip
            except Exception as error:  # the master is gone: try the same job again, as a caller would
                failures.append((time.monotonic(), type(error).__name__))
                time.sleep(0.1)
                continue
            acknowledged.append((time.monotonic(), n))
            n += 1
            time.sleep(0.02)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(2)
        killed_at = time.monotonic()
        sentinel_cluster["processes"]["master"].send_signal(signal.SIGKILL)
        wait_for(lambda: any(at > killed_at for at, _ in acknowledged) and failures, timeout=60)
        time.sleep(2)
    finally:
        stop.set()
        producer.join()
    recovered = min(at for at, _ in acknowledged if at > killed_at) - killed_at

    new_master = Sentinel(sentinels).master_for(MASTER_NAME, db=5)
    assert new_master.connection_pool.get_master_address()[1] != sentinel_cluster["master_port"]
    done = lambda: {int(n) for n in done_file.read_text().split()}  # noqa: E731
    wanted = {n for _, n in acknowledged}
    try:
        wait_for(lambda: wanted <= done() or _stuck(wanted - done()), timeout=60)
        stuck = sorted(wanted - done())
        recover_stuck("files")  # RQ's own recovery of a job its dying worker had dequeued, time moved on
        wait_for(lambda: wanted <= done(), timeout=60)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        stop_group(worker, timeout=30)  # bash exits at once, the rqworker after its warm shutdown
    print(f"\nfailover: producers enqueued again {recovered:.1f} s after the master died; {len(wanted)} jobs "
          f"acknowledged, all run; {len(failures)} refused attempts retried; caught mid-dequeue: {stuck}")  # fmt: skip

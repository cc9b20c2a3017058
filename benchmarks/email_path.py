"""The verification-email path end to end: real producer → Redis → workers as the Procfile starts
them → PostgreSQL → a local SMTP server, today's forking workers against the in-process worker (and
the original BullMQ system), in the same run, rounds interleaved.

Run:  bin/with-test-services -- .venv/bin/python benchmarks/email_path.py [--users 5000] [--rounds 3]

What it does, in the database and Redis it is pointed at (it flushes that Redis database and
deletes its own users, deliveries and tokens at the end; the original's keys in DB 0 too):
- migrates, creates `--users` users `bench<i>@example.test`; starts an SMTP sink (aiosmtpd) as its
  own process, which reports each message's arrival on CLOCK_MONOTONIC;
- the producer alone (no worker running): `enqueue_email_verify` one by one, calls/s and Redis
  commands per call; `enqueue_email_verify_many` of `--bulk` ids at once (if it exists);
- per round and setup (order rotated every round): flush the queue DB, delete every EmailDelivery
  and VerificationToken so each user gets an email again, start the workers and wait until they
  are registered, then time from the first enqueue to the N-th distinct recipient at the sink
  (`forking` sends `--forking-users` emails, 300 by default: its rate is flat from the first jobs,
  a fork per job, and 5,000 would take it several minutes a round);
  Redis `INFO commandstats` before and after (until every job is finished), worker CPU, PSS of the
  worker processes and their children right after the run;
  - `forking`: 5 × `python manage.py rqworker email --with-scheduler --worker-class jobs.runtime.worker.CeresWorker`
    (today's way: a work-horse forked per job);
  - `in-process`: 1 × `python manage.py rqworker email slack --with-scheduler` (the SlotWorker,
    5 email slots as threads), as `ecosystem/Procfile` starts it;
  - `in-process-2` (not by default): `rqworker email slack --processes 2`, two such workers forked
    from one parent (`jobs.runtime.family`), to see what the second core gives;
  - `in-process-bulk` (not by default: the workers bound it as they bound `in-process`): the same
    worker, the users enqueued with `enqueue_email_verify_many`;
  - `original`: `/work/shared/bench/original/original_email.mjs` (BullMQ 6.7 + nodemailer,
    concurrency 5), its own producer (`queue.add` one by one);
- latency add → start at a pace the workers keep up with (`--latency-rate` jobs/s, `--latency-jobs`
  jobs in all of a trivial job that returns `time.monotonic()` when it starts, one segment after
  each round) against the in-process worker (`--latency-setups` adds `forking`).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _support import (
    Sink,
    Workers,
    command_delta,
    commandstats,
    finish,
    header,
    loadavg,
    markdown_table,
    med,
    percentile,
    prepared_services,
    redis_host_port,
    rqworker_argv,
    service_pids,
    spread,
    thread_cpu,
    town,
    tree_cpu,
    wait_registered,
    worker_env,
)

ORIGINAL_DIR = Path("/work/shared/bench/original")
SETUPS = ("forking", "in-process", "in-process-2", "in-process-bulk", "original")
DEFAULT_SETUPS = ("forking", "in-process", "original")  # in-process-bulk: the workers bound it, as in-process
FORKING_PROCESSES = 5
USER_PREFIX = "bench"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=5000, help="emails per round (default 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per setup (default 3)")
    parser.add_argument("--forking-users", type=int, default=300,
                        help="emails per round for `forking` (default 300; 0: --users). Its rate is flat from the "
                             "first jobs (a fork per job) and 5,000 take it minutes per round")  # fmt: skip
    parser.add_argument("--setups", default=",".join(DEFAULT_SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--bulk", type=int, default=10_000, help="ids in the bulk-producer measure (0: skip)")
    parser.add_argument("--latency-jobs", type=int, default=2000, help="in all, split over the rounds (0: skip)")
    parser.add_argument("--latency-rate", type=float, default=100, help="jobs/s of the paced producer")
    parser.add_argument("--latency-setups", default="in-process", help="comma-separated: in-process, forking")
    parser.add_argument("--latency-load", type=float, default=0,
                        help="during each latency segment, also send verification emails at this share of the "
                             "in-process worker's measured emails/s (0.8: at 80 %% of its maximum; 0: none)")  # fmt: skip
    parser.add_argument("--round-timeout", type=float, default=600, help="seconds before a round counts as stuck")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs (their path is printed)")
    return parser.parse_args()


# --- preparation ---------------------------------------------------------------------------------


def make_users(n: int) -> list[int]:
    from django.contrib.auth.hashers import make_password

    from ceres_site.accounts.models import User

    User.objects.filter(username__startswith=USER_PREFIX).delete()
    password = make_password(None)
    users = [
        User(username=f"{USER_PREFIX}{i}@example.test", email=f"{USER_PREFIX}{i}@example.test", first_name="Ada",
             password=password)
        for i in range(n)
    ]  # fmt: skip
    User.objects.bulk_create(users, batch_size=2000)
    return list(User.objects.filter(username__startswith=USER_PREFIX).order_by("pk").values_list("pk", flat=True))


def reset_database() -> None:
    """Every user is owed an email again."""
    from ceres_site.accounts.models import EmailDelivery, User, VerificationToken

    EmailDelivery.objects.all().delete()
    VerificationToken.objects.all().delete()
    User.objects.filter(username__startswith=USER_PREFIX).exclude(email_verified_at=None).update(email_verified_at=None)


def delete_user_data() -> None:
    from ceres_site.accounts.models import EmailDelivery, User, VerificationToken

    EmailDelivery.objects.filter(user__username__startswith=USER_PREFIX).delete()
    VerificationToken.objects.filter(user__username__startswith=USER_PREFIX).delete()
    User.objects.filter(username__startswith=USER_PREFIX).delete()


class Original:
    """The original system's worker and producer (node), or why it cannot run here."""

    def __init__(self):
        self.problem = ""
        if not shutil.which("node"):
            self.problem = "node is not installed"
            return
        host, self.redis_port, password = redis_host_port(os.environ["REDIS_URL"])
        if password or host not in ("127.0.0.1", "localhost"):
            self.problem = "the original bench needs a password-less Redis on 127.0.0.1"
            return
        setup = subprocess.run(["bash", str(ORIGINAL_DIR / "setup.sh")], capture_output=True, text=True, timeout=600)
        if setup.returncode != 0:
            self.problem = f"setup.sh failed (npm install?): {(setup.stderr or setup.stdout).strip()[-300:]}"
            return
        cache = Path(os.environ.get("ORIGINAL_BENCH_DIR", Path.home() / ".cache" / "ceres-original-bench"))
        try:
            self.bullmq = json.loads((cache / "node_modules" / "bullmq" / "package.json").read_text())["version"]
        except OSError:
            self.bullmq = "?"
        self.node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        import redis

        self.db0 = redis.Redis(host="127.0.0.1", port=self.redis_port, db=0)

    def env(self, smtp_port: int) -> dict:
        return {**os.environ, "REDIS_PORT": str(self.redis_port), "SMTP_PORT": str(smtp_port)}

    def clean(self) -> None:
        keys = list(self.db0.scan_iter("bull:*", count=1000))
        for start in range(0, len(keys), 1000):
            self.db0.delete(*keys[start : start + 1000])

    def produce(self, n: int, smtp_port: int) -> dict:
        done = subprocess.run(
            ["node", str(ORIGINAL_DIR / "original_email.mjs"), "produce", "--n", str(n)],
            env=self.env(smtp_port), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        for line in done.stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
        raise RuntimeError(f"the original producer failed: {done.stderr[-500:]}")


# --- the producer alone --------------------------------------------------------------------------


def producer_alone(conn, user_ids: list[int], bulk: int, rounds: int) -> dict:
    from jobs.enqueue import producers

    has_bulk = hasattr(producers, "enqueue_email_verify_many")
    results = {"one_by_one": [], "per_call_cmds": [], "bulk": [], "bulk_cmds": [], "has_bulk": has_bulk}
    producers.enqueue_email_verify(
        user_id=user_ids[0], municipality=town()
    )  # warm up: the queue, the script, the connection
    for _ in range(rounds):
        conn.flushdb()
        before = commandstats(conn)
        started = time.perf_counter()
        for user_id in user_ids:
            producers.enqueue_email_verify(user_id=user_id, municipality=town())
        elapsed = time.perf_counter() - started
        delta = command_delta(before, commandstats(conn))
        results["one_by_one"].append(len(user_ids) / elapsed)
        results["per_call_cmds"].append(sum(delta.values()) / len(user_ids))
        results["per_call_top"] = delta
        if has_bulk and bulk:
            conn.flushdb()
            ids = list(range(10_000_000, 10_000_000 + bulk))  # ids only: no worker runs, nothing reads the users
            before = commandstats(conn)
            started = time.perf_counter()
            enqueued = producers.enqueue_email_verify_many(user_ids=ids, municipalities=dict.fromkeys(ids, town()))
            elapsed = time.perf_counter() - started
            delta = command_delta(before, commandstats(conn))
            assert sum(e.created for e in enqueued) == bulk, "the bulk producer did not enqueue every id"
            results["bulk"].append(elapsed)
            results["bulk_cmds"].append(sum(delta.values()) / bulk)
    conn.flushdb()
    return results


# --- one round of one setup ----------------------------------------------------------------------


def run_round(setup: str, conn, sink: Sink, user_ids: list[int], original: Original, log_dir: Path, timeout: float):
    from jobs.config.policies import EMAIL
    from jobs.enqueue import clients, producers

    n = len(user_ids)
    conn.flushdb()
    reset_database()
    workers = Workers(log_dir, worker_env(sink.port))
    started = time.monotonic()
    if setup == "forking":
        argv = rqworker_argv("email", options=("--worker-class", "jobs.runtime.worker.CeresWorker"))
        procs = [workers.start(argv, "forking") for _ in range(FORKING_PROCESSES)]
        startup = wait_registered(conn, "email", FORKING_PROCESSES, processes=procs)
    elif setup == "in-process-2":  # `--processes 2`: two in-process workers forked from one parent
        procs = [workers.start(rqworker_argv("email", "slack", options=("--processes", "2")), setup)]
        startup = wait_registered(conn, "email", 2, processes=procs)
    elif setup.startswith("in-process"):
        procs = [workers.start(rqworker_argv("email", "slack"), "in-process")]
        startup = wait_registered(conn, "email", 1, processes=procs)
    else:
        original.clean()
        workers.env = original.env(sink.port)
        process = workers.start(
            ["node", str(ORIGINAL_DIR / "original_email.mjs"), "worker"], "original", stdout=subprocess.PIPE
        )
        line = process.stdout.readline().decode()
        if not line.startswith("READY"):
            raise RuntimeError(f"the original worker did not start: {line!r}")
        startup = time.monotonic() - started
    time.sleep(1.0)  # let every process settle (a forking worker's scheduler child starts)

    mark = sink.mark()
    services = service_pids(conn)
    stats0, cpu0, sink_cpu0 = commandstats(conn), workers.cpu(), sink.cpu()
    services0 = {name: tree_cpu([pid]) for name, pid in services.items()}
    load = loadavg().split()[0]
    producer0 = thread_cpu()
    created = n
    if setup == "original":
        produced = original.produce(n, sink.port)
        t0, enqueue_s = produced["t0"], produced["enqueue_s"]
    else:
        t0 = time.monotonic()
        if setup == "in-process-bulk":
            created = sum(
                e.created
                for e in producers.enqueue_email_verify_many(
                    user_ids=user_ids, municipalities=dict.fromkeys(user_ids, town())
                )
            )
        else:
            created = sum(
                producers.enqueue_email_verify(user_id=user_id, municipality=town()).created for user_id in user_ids
            )
        enqueue_s = time.monotonic() - t0
    producer_cpu = thread_cpu() - producer0 if setup != "original" else produced.get("cpu_s", 0.0)
    last, distinct = sink.wait_distinct(mark, n, timeout=timeout)

    polls = 0
    if setup != "original":  # every job finished (its success written) before counting Redis commands
        finished_key = clients.queue(EMAIL.name).finished_job_registry.key
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            polls += 1
            if conn.zcard(finished_key) >= n:
                break
            time.sleep(0.05)
    else:
        time.sleep(0.3)  # the original removes completed jobs: give the last ones their completion
    delta = command_delta(stats0, commandstats(conn))
    if polls:
        delta["zcard"] = delta.get("zcard", 0) - polls
    worker_cpu, sink_cpu = workers.cpu() - cpu0, sink.cpu() - sink_cpu0
    service_cpu = {name: tree_cpu([pid]) - services0[name] for name, pid in services.items()}
    pss, processes = workers.pss_mib()
    messages = len(sink.since(mark))
    workers.stop()
    errors = workers.errors()
    if last is None:
        elapsed = timeout
    else:
        elapsed = last - t0
    return {
        "setup": setup,
        "emails_per_s": distinct / elapsed,
        "complete": last is not None,
        "e2e_s": elapsed,
        "enqueue_s": enqueue_s,
        "enqueue_per_s": n / enqueue_s if enqueue_s else None,
        "created": created,
        "distinct": distinct,
        "messages": messages,
        "pss_mib": pss,
        "processes": processes,
        "worker_cpu_ms_per_email": worker_cpu * 1000 / max(distinct, 1),
        "sink_cpu_ms_per_email": sink_cpu * 1000 / max(distinct, 1),
        "cpu_ms_per_email": {
            "workers": worker_cpu * 1000 / max(distinct, 1),
            "producer": producer_cpu * 1000 / max(distinct, 1),
            "smtp sink": sink_cpu * 1000 / max(distinct, 1),
            **{name: cpu * 1000 / max(distinct, 1) for name, cpu in service_cpu.items()},
        },
        "n": n,
        "load": load,
        "redis_cmds": delta,
        "redis_cmds_per_job": sum(delta.values()) / n,
        "startup_s": startup,
        "errors": errors,
    }


# --- latency ---------------------------------------------------------------------------------------


def latency(setup: str, conn, sink: Sink, jobs: int, rate: float, log_dir: Path, load_rate: float = 0,
            user_ids: list[int] = ()) -> dict:  # fmt: skip
    """Add → start of `jobs` trivial jobs paced at `rate`/s; with `load_rate`, while verification
    emails are enqueued at that pace too (paced, one by one, from a thread of this process)."""
    import threading

    import django_rq
    from rq.job import Job

    conn.flushdb()
    if load_rate:
        reset_database()
    queue = django_rq.get_queue("email")
    workers = Workers(log_dir, worker_env(sink.port))
    if setup == "forking":
        argv = rqworker_argv("email", options=("--worker-class", "jobs.runtime.worker.CeresWorker"))
        procs = [workers.start(argv, "latency-forking") for _ in range(FORKING_PROCESSES)]
        wait_registered(conn, "email", FORKING_PROCESSES, processes=procs)
    else:
        procs = [workers.start(rqworker_argv("email", "slack"), "latency-in-process")]
        wait_registered(conn, "email", 1, processes=procs)
    time.sleep(1.0)
    from jobs.enqueue.producers import enqueue_stored_call

    def add(job_id: str) -> None:  # the producers' own path: one round trip, the email policy
        enqueue_stored_call(queue_name="email", func="benchmarks._jobs.stamp", job_id=job_id, kwargs={})

    for i in range(20):  # warm up: imports of the job's module, connections
        add(f"bench-warm-{i}")
    time.sleep(1.0)

    stop_load, loaded = threading.Event(), []

    def load() -> None:
        from django.db import connection

        from jobs.enqueue.producers import enqueue_email_verify

        start = time.monotonic()
        for i, user_id in enumerate(user_ids):
            pause = start + i / load_rate - time.monotonic()
            if stop_load.wait(pause) if pause > 0 else stop_load.is_set():
                break
            enqueue_email_verify(user_id=user_id, municipality=town())
            loaded.append(time.monotonic())
        connection.close()

    loader = threading.Thread(target=load, daemon=True) if load_rate else None
    if loader:
        loader.start()
        time.sleep(2.0)  # the worker at its load before the first probe
    added, calls, ids = [], [], [f"bench-lat-{i}" for i in range(jobs)]
    begin = time.monotonic()
    for i, job_id in enumerate(ids):
        pause = begin + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        added.append(time.monotonic())
        add(job_id)
        calls.append((time.monotonic() - added[-1]) * 1000)
    probes_end = time.monotonic()
    deadline = probes_end + 120
    while None in conn.zmscore(queue.finished_job_registry.key, ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    if loader:
        stop_load.set()
        loader.join()
    emails_during = len([moment for moment in loaded if begin <= moment <= probes_end])
    workers.stop()
    errors = workers.errors()

    from_stamp, from_hash, missing = [], [], 0
    fetched = Job.fetch_many(ids, connection=conn, serializer=queue.serializer)
    for t_add, job in zip(added, fetched):
        value = job.return_value() if job else None
        if value is None:
            missing += 1
            continue
        from_stamp.append((value - t_add) * 1000)
        from_hash.append((job.started_at - job.enqueued_at).total_seconds() * 1000)
    conn.flushdb()
    return {
        "setup": setup,
        "jobs": jobs,
        "rate": rate,
        "missing": missing,
        "samples": from_stamp,
        "hash_samples": from_hash,
        "call_samples": calls,
        "p50": percentile(from_stamp, 50),
        "p99": percentile(from_stamp, 99),
        "load": loadavg().split()[0],
        "errors": errors,
        "load_rate": load_rate,
        "emails_per_s": emails_during / (probes_end - begin) if load_rate else 0.0,
    }


def pooled(segments: list[dict]) -> dict:
    """Percentiles over every segment's samples, and each segment's p50 / p99."""
    samples = [value for segment in segments for value in segment["samples"]]
    hashed = [value for segment in segments for value in segment["hash_samples"]]
    calls = [value for segment in segments for value in segment["call_samples"]]
    return {
        "jobs": len(samples),
        "missing": sum(segment["missing"] for segment in segments),
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "max": max(samples) if samples else float("nan"),
        "hash_p50": percentile(hashed, 50),
        "hash_p99": percentile(hashed, 99),
        "call_p50": percentile(calls, 50),
        "segment_p50": [segment["p50"] for segment in segments],
        "segment_p99": [segment["p99"] for segment in segments],
    }


# --- main ------------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    conn = prepared_services()

    setups = [name.strip() for name in args.setups.split(",") if name.strip()]
    unknown = set(setups) - set(SETUPS)
    if unknown:
        sys.exit(f"unknown setups: {', '.join(sorted(unknown))}")
    from jobs.enqueue import producers

    notes = []
    if "in-process-bulk" in setups and not hasattr(producers, "enqueue_email_verify_many"):
        setups.remove("in-process-bulk")
        notes.append("`enqueue_email_verify_many` does not exist in jobs/enqueue/producers.py: bulk skipped")
    original = Original() if "original" in setups else None
    extra = {}
    if original and original.problem:
        notes.append(f"original skipped: {original.problem}")
        setups.remove("original")
        original = None
    elif original:
        extra["original"] = f"node {original.node}, bullmq {original.bullmq} (/work/shared/bench/original)"
    info = header("Email path end to end", extra)
    for note in notes:
        print(f"note: {note}")

    latency_setups = [name.strip() for name in args.latency_setups.split(",") if name.strip()]
    segment_jobs = -(-args.latency_jobs // args.rounds) if args.latency_jobs else 0
    if not segment_jobs:
        latency_setups = []
    log_dir = Path(tempfile.mkdtemp(prefix="ceres-bench-email-"))
    sink = Sink()
    try:
        user_ids = make_users(args.users)
        print(f"{len(user_ids)} users in PostgreSQL; SMTP sink (aiosmtpd) pid {sink.process.pid} on port {sink.port}")

        print("\n## producer alone (no worker running)", flush=True)
        alone = producer_alone(conn, user_ids, args.bulk, args.rounds)
        print(f"enqueue_email_verify one by one: {spread(alone['one_by_one'])} calls/s, "
              f"{med([1000 / r for r in alone['one_by_one']]):.3f} ms/call, "
              f"{med(alone['per_call_cmds']):.1f} Redis commands/call")  # fmt: skip
        if alone["bulk"]:
            print(f"enqueue_email_verify_many({args.bulk:,} ids): {spread(alone['bulk'], '{:.2f}')} s, "
                  f"{med([args.bulk / s for s in alone['bulk']]):,.0f} jobs/s, "
                  f"{med(alone['bulk_cmds']):.1f} Redis commands/job")  # fmt: skip

        print(f"\n## end to end: {len(user_ids):,} emails per round, {args.rounds} rounds, setups {', '.join(setups)}"
              f"; after each round, a latency segment of {segment_jobs} trivial jobs at {args.latency_rate:g}/s "
              f"against {', '.join(latency_setups) or 'nothing'}")  # fmt: skip
        results: dict[str, list[dict]] = {setup: [] for setup in setups}
        lat: dict[str, list[dict]] = {setup: [] for setup in latency_setups}
        for round_no in range(args.rounds):
            order = setups[round_no % len(setups) :] + setups[: round_no % len(setups)]
            for setup in order:
                ids = user_ids[: args.forking_users] if setup == "forking" and args.forking_users else user_ids
                result = run_round(setup, conn, sink, ids, original, log_dir, args.round_timeout)
                results[setup].append(result)
                print(
                    f"round {round_no + 1} {setup:<16} {result['emails_per_s']:7.1f} emails/s  "
                    f"e2e {result['e2e_s']:6.2f} s  enqueue {result['enqueue_s']:6.2f} s  "
                    f"PSS {result['pss_mib']:5.0f} MiB ({result['processes']} processes)  "
                    f"worker CPU {result['worker_cpu_ms_per_email']:.2f} ms/email  "
                    f"sink CPU {result['sink_cpu_ms_per_email']:.2f} ms/email  "
                    f"Redis {result['redis_cmds_per_job']:.1f} cmds/job  "
                    f"{result['distinct']}/{result['n']} delivered, {result['messages']} messages  "
                    f"load {result['load']}"
                    + ("" if result["complete"] else "  INCOMPLETE")
                    + (f"  {len(result['errors'])} error lines in logs" if result["errors"] else ""),
                    flush=True,
                )
            measured = [r["emails_per_s"] for r in results.get("in-process", [])]
            load_rate = args.latency_load * med(measured) if args.latency_load and measured else 0
            for setup in latency_setups:
                segment = latency(setup, conn, sink, segment_jobs, args.latency_rate, log_dir, load_rate, user_ids)
                lat[setup].append(segment)
                print(
                    f"round {round_no + 1} latency {setup:<8} add → start p50 {segment['p50']:.2f} ms  "
                    f"p99 {segment['p99']:.2f} ms  missing {segment['missing']}  load {segment['load']}"
                    + (f"  while {segment['emails_per_s']:.0f} emails/s were enqueued (aimed at {load_rate:.0f})"
                       if load_rate else ""),
                    flush=True,
                )  # fmt: skip
    finally:
        sink.stop()
        conn.flushdb()
        if original:
            original.clean()
        delete_user_data()

    report(args, info, alone, results, lat, len(user_ids))
    errors = [line for rows in results.values() for r in rows for line in r["errors"]]
    errors += [line for segments in lat.values() for row in segments for line in row["errors"]]
    finish(errors, log_dir, args.keep_logs)
    print(f"\nload average at end: {loadavg()}")


def report(args, info, alone, results, lat, n) -> None:
    print("\n## Markdown\n")
    print(f"Machine: {info['machine']}. {info['versions']}.")
    if "original" in info:
        print(f"Original: {info['original']}.")
    print(f"Command: `{info['command']}` ({info['date']}).\n")
    forking_n = next((rounds[0]["n"] for setup, rounds in results.items() if setup == "forking" and rounds), n)
    print(f"Email path end to end, {n:,} verification emails per round"
          + (f" ({forking_n:,} for `forking`, whose rate is flat: a fork per job)" if forking_n != n else "")
          + f", median (min–max) of {args.rounds} interleaved rounds; emails/s = delivered / (N-th distinct "
          "recipient at the SMTP sink − first enqueue); × forking = ratio within each round:\n")  # fmt: skip
    base = results.get("forking")
    headers = ["setup", "emails/s", "× forking", "end to end (s)", "enqueue calls/s (workers running)",
               "PSS of worker processes (MiB)", "worker CPU ms/email", "Redis cmds/job", "delivered"]  # fmt: skip
    rows = []
    for setup, rounds in results.items():
        if not rounds:
            continue
        ratios = [r["emails_per_s"] / b["emails_per_s"] for r, b in zip(rounds, base)] if base else []
        delivered = f"{min(r['distinct'] for r in rounds):,}/{rounds[0]['n']:,}"
        extra = max(r["messages"] - r["distinct"] for r in rounds)
        if extra:
            delivered += f" (+{extra} duplicate messages)"
        rows.append([
            f"`{setup}`" + (f" ({rounds[0]['processes']} process{'es' if rounds[0]['processes'] > 1 else ''})"),
            spread([r["emails_per_s"] for r in rounds]),
            spread(ratios, "{:.1f}×") if base and setup != "forking" else "1×" if setup == "forking" else "–",
            spread([r["e2e_s"] for r in rounds], "{:.1f}"),
            spread([r["enqueue_per_s"] for r in rounds]) + (" (bulk)" if setup == "in-process-bulk" else "")
            + (" (`queue.add`)" if setup == "original" else ""),
            spread([r["pss_mib"] for r in rounds]),
            spread([r["worker_cpu_ms_per_email"] for r in rounds], "{:.2f}"),
            spread([r["redis_cmds_per_job"] for r in rounds], "{:.1f}"),
            delivered,
        ])  # fmt: skip
    print(markdown_table(headers, rows))

    print("\nRedis commands per email job (producer included; commands run inside Lua scripts counted), "
          "median round, the top ones:\n")  # fmt: skip
    rows = []
    for setup, rounds in results.items():
        if not rounds:
            continue
        totals = Counter()
        for r in rounds:
            totals.update(r["redis_cmds"])
        per = sum(r["n"] for r in rounds)
        top = ", ".join(f"{name.upper()} {calls / per:.1f}" for name, calls in totals.most_common(8))
        rows.append([f"`{setup}`", f"{med([r['redis_cmds_per_job'] for r in rounds]):.1f}", top])
    print(markdown_table(["setup", "commands/job", "top commands (per job)"], rows))

    print("\nCPU per email (ms, median of the rounds) while the round ran, by process; "
          "the machine has 2 cores shared with other work:\n")  # fmt: skip
    parts = ["workers", "producer", "smtp sink", "redis", "postgres"]
    rows = []
    for setup, rounds in results.items():
        if not rounds:
            continue
        cells = [f"{med([r['cpu_ms_per_email'].get(part) for r in rounds]):.2f}" for part in parts]
        total = med([sum(r["cpu_ms_per_email"].values()) for r in rounds])
        wall = med([r["e2e_s"] * 1000 / max(r["distinct"], 1) for r in rounds])
        rows.append([f"`{setup}`", *cells, f"{total:.2f}", f"{wall:.2f}"])
    print(markdown_table(["setup", *parts, "total", "wall ms/email"], rows))

    print("\nProducer alone (no worker running):\n")
    per_call_ms = med([1000 / r for r in alone["one_by_one"]])
    rows = [["`enqueue_email_verify` one by one", f"{spread(alone['one_by_one'])} calls/s", f"{per_call_ms:.3f} ms",
             f"{med(alone['per_call_cmds']):.1f}"]]  # fmt: skip
    if alone["bulk"]:
        rows.append([f"`enqueue_email_verify_many`, {args.bulk:,} ids", f"{spread(alone['bulk'], '{:.2f}')} s",
                     f"{med([s * 1000 / args.bulk for s in alone['bulk']]):.3f} ms/job",
                     f"{med(alone['bulk_cmds']):.1f}"])  # fmt: skip
    elif not alone["has_bulk"]:
        rows.append(["`enqueue_email_verify_many`", "absent", "–", "–"])
    print(markdown_table(["call", "rate / time", "per call", "Redis cmds/job"], rows))
    if alone.get("per_call_top"):
        top = Counter(alone["per_call_top"]).most_common(6)
        print(f"\n(one call: {', '.join(f'{name.upper()} {calls / n:.1f}' for name, calls in top)})")

    if any(lat.values()):
        rates = ", ".join(f"{segment['emails_per_s']:.0f}" for segments in lat.values() for segment in segments)
        under = (f", while verification emails were enqueued at {args.latency_load:.0%} of the in-process worker's "
                 f"measured emails/s ({rates} emails/s in the segments)") if args.latency_load else ""  # fmt: skip
        print(f"\nLatency add → start (the producer's clock before the call → the job's first line; the producers' path, `enqueue_stored_call`), "
              f"a trivial job paced at {args.latency_rate:g}/s, one segment after each round, in ms{under}:\n")  # fmt: skip
        rows = []
        for setup, segments in lat.items():
            row = pooled(segments)
            rows.append([
                f"`{setup}`", f"{row['jobs']:,}" + (f" ({row['missing']} missing)" if row["missing"] else ""),
                f"{row['p50']:.2f}", f"{row['p90']:.2f}", f"{row['p99']:.2f}", f"{row['max']:.1f}",
                spread(row["segment_p50"], "{:.2f}"), spread(row["segment_p99"], "{:.2f}"),
                f"{row['hash_p50']:.2f} / {row['hash_p99']:.2f}", f"{row['call_p50']:.2f}",
            ])  # fmt: skip
        print(markdown_table(["setup", "jobs", "p50", "p90", "p99", "max", "p50 per segment", "p99 per segment",
                              "RQ's enqueued_at → started_at, p50 / p99", "the producer's call, p50"], rows))  # fmt: skip


if __name__ == "__main__":
    main()

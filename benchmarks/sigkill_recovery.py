"""Seconds from a SIGKILL of the in-process worker, mid-email, to the email job's re-run.

Run:  bin/with-test-services -- .venv/bin/python benchmarks/sigkill_recovery.py [--trials 10] [--no-restart]

Per trial, in the database and Redis it is pointed at (it flushes that Redis database): one
`python manage.py rqworker email slack --with-scheduler` (as `ecosystem/Procfile` starts it), an
SMTP sink (aiosmtpd, its own process) that holds its answer to the first DATA for `--hold` seconds,
one verification email enqueued with `enqueue_email_verify`. When the sink sees DATA, the worker's
process group gets SIGKILL and a new worker is started at once, as a supervisor would (PM2
`autorestart`, systemd `Restart=always`); the figure is the time from the kill to the job's re-run
reaching the sink (its DATA seen again). With `--no-restart` a second worker process was running
from the start and none is started after the kill: the one that holds the job is killed, the
other has to notice.
"""

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

from _support import (
    Sink,
    Workers,
    finish,
    header,
    loadavg,
    markdown_table,
    percentile,
    prepared_services,
    rqworker_argv,
    spread,
    town,
    wait_registered,
    worker_env,
)

EMAIL = "bench-kill@example.test"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--no-restart", action="store_true",
                        help="a second worker runs from the start; none is started after the kill")  # fmt: skip
    parser.add_argument("--hold", type=float, default=5, help="seconds the sink holds the first DATA's answer")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the re-run")
    parser.add_argument("--keep-logs", action="store_true")
    return parser.parse_args()


def make_user() -> int:
    from ceres_site.accounts.models import User

    User.objects.filter(username=EMAIL).delete()
    return User.objects.create(username=EMAIL, email=EMAIL, first_name="Ada", password="!").pk


def reset(user_id: int) -> None:
    from ceres_site.accounts.models import EmailDelivery, VerificationToken

    EmailDelivery.objects.filter(user_id=user_id).delete()
    VerificationToken.objects.filter(user_id=user_id).delete()


def holder_pid(conn, job_id: str, timeout: float = 5) -> int | None:
    """The pid of the worker process running `job_id` (from the job and worker hashes)."""
    from rq.job import Job

    from jobs import rq_compat

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        name = conn.hget(Job.key_for(job_id), "worker_name")
        if name:
            pid = conn.hget(rq_compat.worker_key(name.decode()), "pid")
            if pid:
                return int(pid)
        time.sleep(0.01)
    return None


def trial(number: int, args, conn, sink: Sink, user_id: int, log_dir: Path) -> dict:
    import django_rq
    from rq.job import Job

    from jobs import rq_compat
    from jobs.enqueue.producers import enqueue_email_verify

    conn.flushdb()
    reset(user_id)
    workers = Workers(log_dir, worker_env(sink.port))
    argv = rqworker_argv("email", "slack")
    count = 1 if not args.no_restart else 2
    processes = [workers.start(argv, f"trial{number}") for _ in range(count)]
    wait_registered(conn, "email", count, processes=processes)
    time.sleep(0.5)

    mark = sink.mark()
    sink.hold(args.hold)
    job_id = enqueue_email_verify(user_id=user_id, municipality=town()).job_id
    if sink.wait_messages(mark, 1, timeout=30) is None:
        workers.stop()
        raise RuntimeError("the first DATA never reached the sink")
    pid = holder_pid(conn, job_id)
    victim = next((p for p in processes if p.pid == pid), None)
    if victim is None:
        workers.stop()
        raise RuntimeError(f"no worker process of ours holds {job_id} (pid {pid})")
    known = set(conn.smembers(rq_compat.workers_of_queue_key("email")))

    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait()
    if not args.no_restart:
        workers.start(argv, f"trial{number}-restarted")  # what the supervisor does

    registered_s = handed_back_s = None
    deadline = killed_at + args.timeout
    rerun_at = None
    job_key = Job.key_for(job_id)
    while time.monotonic() < deadline:
        if registered_s is None and not args.no_restart:
            if set(conn.smembers(rq_compat.workers_of_queue_key("email"))) - known:
                registered_s = time.monotonic() - killed_at
        if handed_back_s is None and conn.hget(job_key, "status") != b"started":
            handed_back_s = time.monotonic() - killed_at  # a reaper gave it back (scheduled for its retry)
        if len(sink.since(mark)) >= 2:
            rerun_at = sink.since(mark)[1][0]
            break
        time.sleep(0.01)

    queue = django_rq.get_queue("email")
    status, failures = None, []
    finish_by = time.monotonic() + 30
    while time.monotonic() < finish_by:
        job = queue.fetch_job(job_id)
        status = job.get_status(refresh=False).value if job else None
        if status in ("finished", "failed"):
            failures = [attempt.get("error", "") for attempt in job.meta.get("failures", [])]
            break
        time.sleep(0.1)
    time.sleep(1.0)  # a third copy would show up here
    messages = len(sink.since(mark))
    workers.stop()
    errors = [line for line in workers.errors() if "AbandonedJobError" not in line]
    return {
        "recovery_s": rerun_at - killed_at if rerun_at else None,
        "registered_s": registered_s,
        "handed_back_s": handed_back_s,
        "messages": messages,
        "status": status,
        "failures": failures,
        "errors": errors,
        "load": loadavg().split()[0],
    }


def main() -> None:
    args = parse_args()
    conn = prepared_services()
    variant = (
        "a second worker already running, none restarted" if args.no_restart else "the killed worker restarted at once"
    )
    info = header("SIGKILL recovery of the in-process worker", {"variant": variant})

    from ceres_site.accounts.models import User

    log_dir = Path(tempfile.mkdtemp(prefix="ceres-bench-kill-"))
    sink = Sink()
    user_id = make_user()
    results = []
    try:
        for number in range(1, args.trials + 1):
            result = trial(number, args, conn, sink, user_id, log_dir)
            results.append(result)
            recovery = f"{result['recovery_s']:.2f} s" if result["recovery_s"] is not None else "NOT RE-RUN"
            steps = [f"handed back after {result['handed_back_s']:.2f} s"] if result["handed_back_s"] else []
            if result["registered_s"]:
                steps.insert(0, f"new worker registered after {result['registered_s']:.2f} s")
            print(
                f"trial {number:2}: kill → re-run at the sink {recovery} ({', '.join(steps)}); "
                f"{result['messages']} messages, job {result['status']}, attempts failed: {result['failures']}, "
                f"load {result['load']}"
                + (f", {len(result['errors'])} error lines in logs" if result["errors"] else ""),
                flush=True,
            )
    finally:
        sink.stop()
        conn.flushdb()
        reset(user_id)
        User.objects.filter(pk=user_id).delete()

    recovered = [r["recovery_s"] for r in results if r["recovery_s"] is not None]
    extra = [r["messages"] - 2 for r in results if r["messages"] != 2]
    print("\n## Markdown\n")
    print(f"Machine: {info['machine']}. {info['versions']}.")
    print(f"Command: `{info['command']}` ({info['date']}).\n")
    registered = [r["registered_s"] for r in results if r["registered_s"]]
    rows = [[
        variant,
        f"{len(recovered)}/{len(results)}",
        spread(recovered, "{:.1f}"),
        f"{percentile(recovered, 90):.1f}" if recovered else "–",
        spread(registered, "{:.1f}") if registered else "–",
        spread([r["handed_back_s"] for r in results if r["handed_back_s"]], "{:.1f}"),
        f"{sum(r['messages'] == 2 for r in results)}/{len(results)}",
    ]]  # fmt: skip
    headers = ["SIGKILL of `rqworker email slack` mid-email", "re-run", "kill → re-run at the SMTP server, s",
               "p90, s", "new worker registered, s", "job handed back, s", "exactly 2 sends"]  # fmt: skip
    print(f"{args.trials} trials, median (min–max) seconds after the kill:\n")
    print(markdown_table(headers, rows))
    if extra:
        print(f"\ntrials with other than 2 messages: {extra}")
    errors = [line for r in results for line in r["errors"]]
    finish(errors, log_dir, args.keep_logs)


if __name__ == "__main__":
    main()

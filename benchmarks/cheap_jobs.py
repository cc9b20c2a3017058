"""Cheap jobs end to end: Slack posts to a local HTTP server, the in-process worker against the stock
forking worker, in the same run, rounds interleaved (issue 22, item 3: the worker issue asked 12×).

Run:  bin/with-test-services -- .venv/bin/python benchmarks/cheap_jobs.py [--jobs 3000] [--rounds 3] [--forking-jobs 300]

What it does, in the Redis database it is pointed at (it flushes that database before every round
and at the end):
- starts a webhook server as its own process (this script with `--serve`: a stdlib
  ThreadingHTTPServer that answers 200 "ok" to every POST and reports each post's arrival on
  CLOCK_MONOTONIC, and the text posted); the workers get `SLACK_WEBHOOK_URL` pointed at it;
- per round and setup (order rotated every round): flush the queue DB, start the workers and wait
  until they are registered, then enqueue the jobs one by one with `enqueue_slack_alert(text=…)`,
  the producer the project's own alerts use (a `jobs.tasks.slack.post_to_slack` job on the `slack`
  queue, a fresh random id each), and time from the first enqueue to the N-th distinct text at the
  server; then wait until every job is in the finished registry and count the failed ones;
  Redis `INFO commandstats` before and after (producer included), the workers' CPU (their process
  trees, work-horses included) and PSS right after the run;
  - `in-process`: 1 × `python manage.py rqworker email slack --with-scheduler` (the SlotWorker,
    slack's 10 slots as threads), as `email_path.py` starts it;
  - `forking`: 10 × `python manage.py rqworker slack --with-scheduler --worker-class
    jobs.runtime.worker.CeresWorker` (the stock way: a work-horse forked per job; 10 is the slack
    queue's concurrency in `jobs/config/policies.py`), with `--forking-jobs` jobs per round (300 by
    default): its rate is flat from the first jobs, a fork per job.
The ratio in-process ÷ forking is taken within each round.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _support import (
    Workers,
    command_delta,
    commandstats,
    cpu_seconds,
    finish,
    header,
    loadavg,
    markdown_table,
    med,
    prepared_services,
    rqworker_argv,
    spread,
    wait_registered,
    worker_env,
)

SETUPS = ("in-process", "forking")
TEXT_PREFIX = "bench cheap job "  # posts with another text (an SLO alarm) are counted apart


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per round for in-process (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per setup (default 3)")
    parser.add_argument("--forking-jobs", type=int, default=300,
                        help="jobs per round for `forking` (default 300; 0: --jobs): a fork per job is slow")  # fmt: skip
    parser.add_argument("--round-timeout", type=float, default=600, help="seconds before a round counts as stuck")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs (their path is printed)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the webhook server's process
    return parser.parse_args()


# --- the webhook server (its own process: its CPU is not the benchmark's) ------------------------


def serve() -> None:
    """Print `READY <port>`, then `P <monotonic> <text>` for each POST; stop when stdin closes."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the slots' sessions reuse their connections
        # Headers and body go out in two writes: with Nagle on, the body waits for the client's delayed
        # ACK (40 ms), which would make the server, not the worker, set the pace.
        disable_nagle_algorithm = True

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            moment = time.monotonic()
            try:
                text = json.loads(body)["text"]
            except (ValueError, KeyError, TypeError):
                text = "?"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            line = f"P {moment:.6f} {' '.join(str(text).split())}\n"
            with lock:  # one line per post, never interleaved
                sys.stdout.write(line)
                sys.stdout.flush()

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    sys.stdin.read()
    server.shutdown()


class Webhook:
    """The `--serve` process; a thread reads its lines into `posts`."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, start_new_session=True,
        )  # fmt: skip
        ready = self.process.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"the webhook server did not start: {ready}")
        self.url = f"http://127.0.0.1:{ready[1]}/services/bench"
        self.posts: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            _, moment, text = (line.rstrip("\n").split(" ", 2) + [""])[:3]
            with self._lock:
                self.posts.append((float(moment), text))

    def mark(self) -> int:
        with self._lock:
            return len(self.posts)

    def since(self, mark: int) -> list[tuple[float, str]]:
        with self._lock:
            return self.posts[mark:]

    def wait_distinct(self, mark: int, count: int, timeout: float) -> tuple[float | None, int]:
        """When the `count`-th distinct benchmark text since `mark` arrived (None if not within
        `timeout`), and how many had arrived."""
        seen, index, deadline = set(), mark, time.monotonic() + timeout
        while True:
            with self._lock:
                new, index = self.posts[index:], len(self.posts)
            for moment, text in new:
                if text.startswith(TEXT_PREFIX):
                    seen.add(text)
                    if len(seen) >= count:
                        return moment, len(seen)
            if time.monotonic() > deadline:
                return None, len(seen)
            time.sleep(0.01)

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()
            self.process.wait()


# --- one round of one setup ----------------------------------------------------------------------


def run_round(setup: str, conn, webhook: Webhook, n: int, log_dir: Path, timeout: float) -> dict:
    from jobs.config.policies import SLACK
    from jobs.enqueue import clients
    from jobs.enqueue.producers import enqueue_slack_alert

    conn.flushdb()
    # No email job runs here: emails, if any, go to the console.
    workers = Workers(log_dir, worker_env(0, EMAIL_URL="consolemail://", SLACK_WEBHOOK_URL=webhook.url))
    if setup == "forking":
        argv = rqworker_argv("slack", options=("--worker-class", "jobs.runtime.worker.CeresWorker"))
        procs = [workers.start(argv, "forking") for _ in range(SLACK.concurrency)]
        wait_registered(conn, "slack", SLACK.concurrency, timeout=180, processes=procs)
    else:
        procs = [workers.start(rqworker_argv("email", "slack"), "in-process")]
        wait_registered(conn, "slack", 1, processes=procs)
    time.sleep(1.0)  # let every process settle (a forking worker's scheduler child starts)

    queue = clients.queue(SLACK.name)
    mark = webhook.mark()
    stats0, cpu0, server_cpu0 = commandstats(conn), workers.cpu(), webhook.cpu()
    load = loadavg().split()[0]
    t0 = time.monotonic()
    created = sum(enqueue_slack_alert(text=f"{TEXT_PREFIX}{i}").created for i in range(n))
    enqueue_s = time.monotonic() - t0
    last, distinct = webhook.wait_distinct(mark, n, timeout=timeout)

    # Every job's end written (finished, or failed for good) before counting Redis commands.
    finished_key, failed_key = queue.finished_job_registry.key, queue.failed_job_registry.key
    polls, deadline = 0, time.monotonic() + 30
    while time.monotonic() < deadline:
        polls += 2
        finished, failed = conn.zcard(finished_key), conn.zcard(failed_key)
        if finished + failed >= n:
            break
        time.sleep(0.05)
    delta = command_delta(stats0, commandstats(conn))
    delta["zcard"] = delta.get("zcard", 0) - polls
    worker_cpu, server_cpu = workers.cpu() - cpu0, webhook.cpu() - server_cpu0
    pss, processes = workers.pss_mib()
    posts = webhook.since(mark)
    workers.stop()
    elapsed = (last - t0) if last is not None else timeout
    return {
        "setup": setup,
        "n": n,
        "jobs_per_s": distinct / elapsed,
        "complete": last is not None,
        "e2e_s": elapsed,
        "enqueue_per_s": n / enqueue_s,
        "created": created,
        "distinct": distinct,
        "posts": sum(1 for _, text in posts if text.startswith(TEXT_PREFIX)),
        "other_posts": [text for _, text in posts if not text.startswith(TEXT_PREFIX)],
        "finished": finished,
        "failed": failed,
        "worker_cpu_ms_per_job": worker_cpu * 1000 / max(distinct, 1),
        "server_cpu_ms_per_job": server_cpu * 1000 / max(distinct, 1),
        "redis_cmds_per_job": sum(delta.values()) / n,
        "pss_mib": pss,
        "processes": processes,
        "load": load,
        "errors": workers.errors(),
    }


# --- main ------------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    if args.serve:
        serve()
        return
    conn = prepared_services()
    info = header("Cheap jobs end to end (Slack posts to a local server)")
    sizes = {"in-process": args.jobs, "forking": args.forking_jobs or args.jobs}
    log_dir = Path(tempfile.mkdtemp(prefix="ceres-bench-cheap-"))
    webhook = Webhook()
    results: dict[str, list[dict]] = {setup: [] for setup in SETUPS}
    try:
        print(f"webhook server (http.server) pid {webhook.process.pid} at {webhook.url}")
        print(f"\n## {sizes['in-process']:,} jobs per round for in-process, {sizes['forking']:,} for forking, "
              f"{args.rounds} rounds", flush=True)  # fmt: skip
        for round_no in range(args.rounds):
            order = SETUPS[round_no % len(SETUPS) :] + SETUPS[: round_no % len(SETUPS)]
            for setup in order:
                result = run_round(setup, conn, webhook, sizes[setup], log_dir, args.round_timeout)
                results[setup].append(result)
                print(
                    f"round {round_no + 1} {setup:<10} {result['jobs_per_s']:7.1f} jobs/s  "
                    f"e2e {result['e2e_s']:6.2f} s  enqueue {result['enqueue_per_s']:6.0f} calls/s  "
                    f"worker CPU {result['worker_cpu_ms_per_job']:.2f} ms/job  "
                    f"server CPU {result['server_cpu_ms_per_job']:.2f} ms/job  "
                    f"Redis {result['redis_cmds_per_job']:.1f} cmds/job  "
                    f"PSS {result['pss_mib']:.0f} MiB ({result['processes']} processes)  "
                    f"{result['finished']}/{result['n']} finished, {result['failed']} failed, "
                    f"{result['posts']} posts  load {result['load']}"
                    + ("" if result["complete"] else "  INCOMPLETE")
                    + (f"  {len(result['other_posts'])} other posts" if result["other_posts"] else "")
                    + (f"  {len(result['errors'])} error lines in logs" if result["errors"] else ""),
                    flush=True,
                )
    finally:
        webhook.stop()
        conn.flushdb()

    report(args, info, results)
    other = [text for rows in results.values() for r in rows for text in r["other_posts"]]
    if other:
        print(f"\n{len(other)} posts that were not the benchmark's jobs; the first ones:")
        for text in other[:5]:
            print("  " + text[:300])
    finish([line for rows in results.values() for r in rows for line in r["errors"]], log_dir, args.keep_logs)
    print(f"\nload average at end: {loadavg()}")


def report(args, info, results) -> None:
    inproc, forking = results["in-process"], results["forking"]
    print("\n## Markdown\n")
    print(f"Machine: {info['machine']}. {info['versions']}.")
    print(f"Command: `{info['command']}` ({info['date']}).\n")
    print(f"`post_to_slack` jobs (`enqueue_slack_alert`) to a local HTTP server, {inproc[0]['n']:,} per round "
          f"for `in-process` (1 × `rqworker email slack`), {forking[0]['n']:,} for `forking` "
          f"(`rqworker slack --worker-class CeresWorker` × the queue's concurrency: {forking[0]['processes']} "
          "processes); jobs/s = distinct posts / (N-th post at the server − first enqueue); ratio within "
          "each round; CPU of the worker processes and their work-horses; Redis commands per job, the "
          "producer's included:\n")  # fmt: skip
    headers = ["round", "in-process jobs/s", "forking jobs/s", "in-process ÷ forking",
               "worker CPU ms/job, in-process / forking", "Redis cmds/job, in-process / forking",
               "PSS MiB, in-process / forking", "finished, failed"]  # fmt: skip
    rows = []
    for number, (a, b) in enumerate(zip(inproc, forking), 1):
        rows.append([
            str(number), f"{a['jobs_per_s']:.0f}", f"{b['jobs_per_s']:.0f}", f"{a['jobs_per_s'] / b['jobs_per_s']:.1f}×",
            f"{a['worker_cpu_ms_per_job']:.2f} / {b['worker_cpu_ms_per_job']:.2f}",
            f"{a['redis_cmds_per_job']:.1f} / {b['redis_cmds_per_job']:.1f}",
            f"{a['pss_mib']:.0f} / {b['pss_mib']:.0f}",
            f"{a['finished']}/{a['n']}, {a['failed']} · {b['finished']}/{b['n']}, {b['failed']}",
        ])  # fmt: skip
    ratios = [a["jobs_per_s"] / b["jobs_per_s"] for a, b in zip(inproc, forking)]
    rows.append([
        "median (min–max)" if len(ratios) > 1 else "median",
        spread([r["jobs_per_s"] for r in inproc]), spread([r["jobs_per_s"] for r in forking]),
        spread(ratios, "{:.1f}×"),
        f"{med([r['worker_cpu_ms_per_job'] for r in inproc]):.2f} / {med([r['worker_cpu_ms_per_job'] for r in forking]):.2f}",
        f"{med([r['redis_cmds_per_job'] for r in inproc]):.1f} / {med([r['redis_cmds_per_job'] for r in forking]):.1f}",
        f"{med([r['pss_mib'] for r in inproc]):.0f} / {med([r['pss_mib'] for r in forking]):.0f}",
        f"{sum(r['failed'] for r in inproc + forking)} failed in all",
    ])  # fmt: skip
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()

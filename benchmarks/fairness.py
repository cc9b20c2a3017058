"""Fairness between municipalities: how long one municipality's verification email waits while another
sends a burst, with the email queue's cap per municipality (`QueuePolicy.tenant_cap`) and without it.

Run:  bin/with-test-services -- .venv/bin/python benchmarks/fairness.py [--burst 2000] [--rounds 3]

In the database and Redis it is pointed at (it flushes that Redis database, and deletes its own
municipalities and users at the end): two municipalities, A and B; the in-process worker as the
Procfile starts it (`rqworker email slack`, 5 email slots) and a local SMTP sink (its own process).
Per round and setting (cap on, cap off; order rotated every round), for each SMTP server speed
(`--holds`: seconds the sink waits before answering each DATA, 0 = as fast as it can):
`--burst` verification emails for A (`enqueue_email_verify_many`, as a bulk resend does), then one
for B right away; B's delay is from its enqueue to its arrival at the sink, with the position of its
email among the arrivals; A's rate is its burst's emails/s. Each round uses users of its own.
"""

import argparse
import dataclasses
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
    med,
    prepared_services,
    rqworker_argv,
    spread,
    wait_registered,
    worker_env,
)

PREFIX = "fair"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=2000, help="A's emails per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per setting and speed (default 3)")
    parser.add_argument("--holds", default="0,0.05", help="comma-separated seconds the sink holds each DATA")
    parser.add_argument("--round-timeout", type=float, default=900, help="seconds before a round counts as stuck")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker's log (its path is printed)")
    return parser.parse_args()


def municipalities():
    from ceres_site.municipalities.models import Municipality

    a, _ = Municipality.objects.get_or_create(slug=f"{PREFIX}-a", defaults={"name": "Villa A"})
    b, _ = Municipality.objects.get_or_create(slug=f"{PREFIX}-b", defaults={"name": "Villa B"})
    return a, b


def users(municipality, tag: str, n: int) -> list[int]:
    from ceres_site.accounts.models import User

    prefix = f"{PREFIX}-{tag}-"
    User.objects.bulk_create(
        [User(username=f"{prefix}{i}@{municipality.slug}", email=f"{prefix}{i}@example.test", municipality=municipality)
         for i in range(n)], batch_size=2000,
    )  # fmt: skip
    return list(User.objects.filter(username__startswith=prefix).order_by("pk").values_list("pk", flat=True))


def set_cap(on: bool, cap: int) -> None:
    """The producers read the policy at every enqueue (the worker needs nothing: a job carries its cap)."""
    from jobs.config import policies

    policies.QUEUES["email"] = dataclasses.replace(policies.QUEUES["email"], tenant_cap=cap if on else 0)


def run_round(sink: Sink, a, b, tag: str, burst: int, hold: float, timeout: float) -> dict:
    from jobs.enqueue.producers import enqueue_email_verify, enqueue_email_verify_many

    a_ids, (b_id,) = users(a, f"{tag}-a", burst), users(b, f"{tag}-b", 1)
    b_address = f"{PREFIX}-{tag}-b-0@example.test"
    for _ in range(burst + 1 if hold else 0):
        sink.hold(hold)
    mark = sink.mark()
    t0 = time.monotonic()
    enqueue_email_verify_many(user_ids=a_ids, municipalities=dict.fromkeys(a_ids, a.pk))
    b_enqueued = time.monotonic()
    enqueue_email_verify(user_id=b_id, municipality=b.pk)
    last, seen = sink.wait_distinct(mark, burst + 1, timeout)
    if last is None:
        raise RuntimeError(f"round {tag}: {seen} of {burst + 1} emails within {timeout} s")
    arrivals = sink.since(mark)
    position, b_at = next((i, moment) for i, (moment, rcpts) in enumerate(arrivals) if b_address in rcpts)
    return {"b_delay": b_at - b_enqueued, "b_position": position + 1, "a_rate": burst / (last - t0)}


def main() -> None:
    args = parse_args()
    conn = prepared_services()
    from jobs.config.policies import EMAIL

    cap = EMAIL.tenant_cap
    holds = [float(hold) for hold in args.holds.split(",")]
    info = header("Fairness: B's verification email behind A's burst", {
        "burst": f"{args.burst} emails for A, then 1 for B", "rounds": str(args.rounds),
        "cap": f"{cap} jobs of one municipality queued or running (email queue, {EMAIL.concurrency} slots)",
        "sink holds": ", ".join(f"{hold:g} s" for hold in holds), "load before": loadavg(),
    })  # fmt: skip
    a, b = municipalities()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-fairness-"))
    sink = Sink()
    workers = Workers(log_dir, worker_env(sink.port))
    results: dict[tuple[float, str], list[dict]] = {}
    try:
        process = workers.start(rqworker_argv("email", "slack"), "in-process")
        wait_registered(conn, "email", 1, processes=[process])
        settings_ = ["cap", "no cap"]
        for hold in holds:
            for round_number in range(args.rounds):
                for setting in settings_[round_number % 2 :] + settings_[: round_number % 2]:
                    set_cap(setting == "cap", cap)
                    tag = f"{hold:g}-{round_number}-{setting.replace(' ', '')}".replace(".", "")
                    result = run_round(sink, a, b, tag, args.burst, hold, args.round_timeout)
                    results.setdefault((hold, setting), []).append(result)
                    print(f"hold {hold:g} s, round {round_number + 1}, {setting}: B waited {result['b_delay']:.3f} s "
                          f"(arrived {result['b_position']}.), A {result['a_rate']:.0f} emails/s", flush=True)  # fmt: skip
    finally:
        errors = workers.errors()
        workers.stop()
        sink.stop()
        cleanup()
    print()
    print("\n".join(f"- {key}: {value}" for key, value in info.items()))
    rows = []
    for (hold, setting), runs in results.items():
        rows.append([f"{hold:g} s", setting, spread([r["b_delay"] for r in runs], "{:.3f}"),
                     spread([r["b_position"] for r in runs]), f"{med([r['a_rate'] for r in runs]):.0f}"])  # fmt: skip
    print()
    print(
        markdown_table(
            ["SMTP hold per email", "setting", "B's delay s, median (min–max)", "B arrived n-th", "A emails/s"], rows
        )
    )
    finish(errors, log_dir, args.keep_logs)


def cleanup() -> None:
    from ceres_site.accounts.models import EmailDelivery, User, VerificationToken
    from ceres_site.municipalities.models import Municipality

    EmailDelivery.objects.filter(user__username__startswith=PREFIX).delete()
    VerificationToken.objects.filter(user__username__startswith=PREFIX).delete()
    User.objects.filter(username__startswith=PREFIX).delete()
    Municipality.objects.filter(slug__startswith=PREFIX).delete()


if __name__ == "__main__":
    main()

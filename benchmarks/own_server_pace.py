"""Two campaigns at once, one through the installation's mail server and one through a municipality's
own: each one's rate against its server's bulk limit (`jobs.mail.throttle`).

Run:  bin/with-test-services -- .venv/bin/python benchmarks/own_server_pace.py [--recipients 600] [--rate 6000]

In the database and Redis it is pointed at (it flushes that Redis database, and deletes its own
municipality and users at the end): two local SMTP sinks, the installation's and the municipality's own;
`--recipients` subscribers in the default municipality and as many in one with its own server (its
limits blank: the installation's `SMTP_RATE_PER_MINUTE` = `--rate`, so both servers allow the same);
the in-process worker as the Procfile starts it (every in-process queue). Per round, a newsletter to
each municipality, sent together; each campaign's emails/s, from the moment both were sent to its last
email's arrival at its sink, and that against its server's bulk limit (`--rate` × (1 −
`SMTP_TRANSACTIONAL_SHARE`) a minute). Run on a checkout from before the own pace (018bad7), both
campaigns took the installation's turns.
"""

import argparse
import os
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

PREFIX = "pace"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=600, help="subscribers per municipality (default 600)")
    parser.add_argument("--rate", type=int, default=6000, help="SMTP_RATE_PER_MINUTE of both servers (default 6000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker's log (its path is printed)")
    return parser.parse_args()


def subscribers(municipality, count: int) -> None:
    from django.utils import timezone

    from ceres_site.accounts.models import User

    now = timezone.now()
    User.objects.bulk_create(
        [User(username=f"{PREFIX}-{n}@{municipality.slug}", email=f"{PREFIX}-{n}@{municipality.slug}.example.test",
              municipality=municipality, email_verified_at=now) for n in range(count)], batch_size=2000,
    )  # fmt: skip


def rate_of(started: float, arrivals: list[tuple[float, tuple[str, ...]]]) -> float:
    """Emails/s from the moment both campaigns were sent to this one's last arrival (the sinks' clock is
    CLOCK_MONOTONIC too): a campaign that waits for the other's turns counts that wait."""
    return len(arrivals) / (max(moment for moment, _ in arrivals) - started)


def main() -> None:
    args = parse_args()
    os.environ["SMTP_RATE_PER_MINUTE"] = str(args.rate)  # this process publishes the own server's (blank) limits
    conn = prepared_services()
    from django.conf import settings

    from ceres_site.municipalities.models import Municipality
    from ceres_site.newsletters import campaigns
    from ceres_site.newsletters.models import Newsletter
    from jobs.config.policies import QUEUES

    bulk_per_second = args.rate * (1 - settings.SMTP_TRANSACTIONAL_SHARE) / 60
    info = header("Two campaigns at once: the installation's server and a municipality's own", {
        "recipients": f"{args.recipients} per campaign", "rounds": str(args.rounds),
        "limit": f"{args.rate}/min per server: {bulk_per_second:g} bulk emails/s each", "load before": loadavg(),
    })  # fmt: skip
    installation, own = Sink(), Sink()
    default = Municipality.objects.default()
    municipality, _ = Municipality.objects.update_or_create(slug=f"{PREFIX}-own", defaults={
        "name": "Villa Propia", "smtp_host": "127.0.0.1", "smtp_port": own.port, "smtp_use_tls": False,
    })  # fmt: skip
    subscribers(default, args.recipients)
    subscribers(municipality, args.recipients)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-own-pace-"))
    workers = Workers(log_dir, worker_env(installation.port, SMTP_RATE_PER_MINUTE=str(args.rate)))
    rates: dict[str, list[float]] = {"installation's server": [], "own server": []}
    try:
        in_process = [name for name, policy in QUEUES.items() if policy.in_process]
        process = workers.start(rqworker_argv(*in_process), "in-process")
        wait_registered(conn, "bulk", 1, processes=[process])
        for round_number in range(args.rounds):
            marks, started = (installation.mark(), own.mark()), time.monotonic()
            for town in (default, municipality):
                newsletter = Newsletter.objects.create(
                    subject=f"{PREFIX} {round_number} {town.slug}", body_text="Hola {{ name }}\n{{ unsubscribe_url }}",
                    municipality=town,
                )  # fmt: skip
                campaigns.send(newsletter, None)
            for (name, sink), mark in zip((("installation's server", installation), ("own server", own)), marks):
                last, seen = sink.wait_distinct(
                    mark, args.recipients, timeout=args.recipients / bulk_per_second * 4 + 60
                )
                if last is None:
                    raise RuntimeError(f"round {round_number + 1}: {seen} of {args.recipients} through the {name}")
                rates[name].append(rate_of(started, sink.since(mark)))
            print(f"round {round_number + 1}: " + ", ".join(f"{name} {values[-1]:.1f} emails/s"
                                                           for name, values in rates.items()), flush=True)  # fmt: skip
    finally:
        errors = workers.errors()
        workers.stop()
        installation.stop()
        own.stop()
        cleanup()
    print()
    print("\n".join(f"- {key}: {value}" for key, value in info.items()))
    print()
    rows = [[name, spread(values, "{:.1f}"), f"{med(values) / bulk_per_second:.0%}"] for name, values in rates.items()]
    print(markdown_table(["campaign through", "emails/s, median (min–max)", "of its server's bulk limit"], rows))
    finish(errors, log_dir, args.keep_logs)


def cleanup() -> None:
    from ceres_site.accounts.models import User
    from ceres_site.municipalities.models import Municipality
    from ceres_site.newsletters.models import Delivery, Newsletter

    Delivery.objects.filter(newsletter__subject__startswith=PREFIX).delete()
    Newsletter.objects.filter(subject__startswith=PREFIX).delete()
    User.objects.filter(username__startswith=PREFIX).delete()
    Municipality.objects.filter(slug__startswith=PREFIX).delete()


if __name__ == "__main__":
    main()

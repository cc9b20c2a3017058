"""What PostgreSQL spends on each verification email's statements: the server process's CPU per
statement (from /proc), for the recipient's read alone, the read that also issues the token (what a
verification email runs), and the delivery's record; each unprepared (as the worker sends them) and
prepared, and with the foreign-key checks off (`session_replication_role = replica`) to see their share.
The original (`../shared/bench/original/`) runs no statement at all: this is the part of our email
path's CPU per email that it never pays, on the same cores.

Run:  bin/with-test-services -- .venv/bin/python benchmarks/email_statements.py [--statements 2000] [--rounds 3]
It creates `--users` users `stmt<i>@example.test` and deletes them (their tokens and deliveries
with them) at the end. Rounds alternate the ways, so a busy machine slows all alike; medians printed.
"""

import argparse
import os
import statistics
import time

from _support import header, prepared_services

KINDS = ("select 1", "read", "read + token", "delivery")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--statements", type=int, default=2000, help="of each kind, per round and way")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=20000)
    args = parser.parse_args()
    prepared_services()
    header("PostgreSQL CPU per statement of the email path")

    import psycopg
    from django.db import connection
    from django.utils import timezone

    from ceres_site.accounts.models import User
    from ceres_site.accounts.tokens import token_for_key, token_values
    from jobs.tasks import email

    User.objects.filter(username__startswith="stmt").delete()
    users = [User(username=f"stmt{i}", email=f"stmt{i}@example.test", first_name="Ada") for i in range(args.users)]
    ids = [user.pk for user in User.objects.bulk_create(users, batch_size=5000)]
    connection.ensure_connection()
    pg = connection.connection
    backend = pg.execute("SELECT pg_backend_pid()").fetchone()[0]
    read = email.RECIPIENT.format(users=User._meta.db_table, already_sent=email.SENT_BY_THIS_JOB)
    read_and_issue = email.READ_AND_ISSUE.format(recipient=read)
    counter = iter(range(10**9))

    def server_cpu() -> float:
        fields = open(f"/proc/{backend}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(kind: str, prepare: bool) -> None:
        i = next(counter)
        user_id, key = ids[i % len(ids)], f"stmt{i}-{time.time_ns()}"
        cursor = psycopg.Cursor(pg)
        if kind == "select 1":
            cursor.execute("SELECT 1", prepare=prepare)
        elif kind == "read":
            cursor.execute(read, [key, user_id], prepare=prepare)
        elif kind == "read + token":
            cursor.execute(read_and_issue, [key, user_id, *token_values(user_id, token_for_key(key))], prepare=prepare)
        else:
            cursor.execute(email.DELIVERED, [user_id, "verify", key, timezone.now()], prepare=prepare)

    ways = [("unprepared", False, "origin"), ("prepared", True, "origin"), ("no FK checks", False, "replica")]
    figures: dict[tuple[str, str], list[float]] = {}
    for _round in range(args.rounds):
        for way, prepare, role in ways:
            pg.execute(f"SET session_replication_role = {role}")
            for kind in KINDS:
                before = server_cpu()
                for _ in range(args.statements):
                    run(kind, prepare)
                figures.setdefault((way, kind), []).append((server_cpu() - before) / args.statements * 1000)
    pg.execute("SET session_replication_role = origin")
    User.objects.filter(pk__in=ids).delete()

    print("PostgreSQL server CPU per statement (ms), median (min–max) of the rounds:\n")
    print("| statement | " + " | ".join(way for way, _p, _r in ways) + " |")
    print("| --- |" + " --- |" * len(ways))
    for kind in KINDS:
        cells = []
        for way, _p, _r in ways:
            values = figures[(way, kind)]
            cells.append(f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    per_email = statistics.median(figures[("unprepared", "read + token")]) + statistics.median(
        figures[("unprepared", "delivery")]
    )
    print(f"\nA verification email (read + token, delivery), unprepared: {per_email:.3f} ms of PostgreSQL CPU")


if __name__ == "__main__":
    main()

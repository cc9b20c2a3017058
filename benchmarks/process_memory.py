"""Memory (PSS, MiB) of the whole process set at idle: starts ecosystem/Procfile, waits, measures, stops.

Run:  bin/with-test-services -- .venv/bin/python benchmarks/process_memory.py
PSS shares each page among the processes that map it, so the figures add up to real memory.
"""

import os
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES, SETTLE = 5, 20  # seconds to let every process start and go idle


def children() -> dict[int, list[int]]:
    found = defaultdict(list)
    for row in subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.splitlines():
        pid, parent = map(int, row.split())
        found[parent].append(pid)
    return found


def tree(root: int) -> list[int]:
    kids, found, todo = children(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += kids.get(pid, [])
    return found


def pss_kib(pid: int) -> tuple[str, int]:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return "", 0
    return command, next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))


def main() -> None:
    env = {**os.environ, "PATH": f"{ROOT}/.venv/bin:{os.environ['PATH']}", "WEB_PORT": "18765", "DEBUG": "0"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    honcho = subprocess.Popen([sys.executable, "bin/procfile"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        time.sleep(SETTLE)
        totals, groups, counts = [], defaultdict(int), defaultdict(int)
        for _ in range(SAMPLES):
            measured = [pss_kib(pid) for pid in tree(honcho.pid)]
            totals.append(sum(kib for _, kib in measured))
            time.sleep(1)
        for command, kib in measured:
            kind = ("web" if "gunicorn" in command else "worker-isolated" if "rqworker maintenance" in command
                    else "worker" if "rqworker" in command else "scheduler" if "rqscheduler" in command
                    else "honcho")  # fmt: skip
            groups[kind] += kib
            counts[kind] += 1
        print(f"process set at idle: {len(measured)} processes, PSS median {statistics.median(totals) / 1024:.0f} MiB")
        for kind, kib in sorted(groups.items()):
            print(f"  {kind:<16} {kib / 1024:5.0f} MiB  {counts[kind]} processes")
    finally:
        honcho.send_signal(signal.SIGTERM)
        honcho.wait(timeout=120)


if __name__ == "__main__":
    main()

"""A local SMTP sink for the benchmarks, run as its own process so its CPU is its own.

    python benchmarks/_smtp_sink.py [--port 0]

Prints `READY <port>` once it listens on 127.0.0.1, then one line per message as soon as its DATA is
in (before any hold): `D <time.monotonic()> <recipient>[,<recipient>...]`. CLOCK_MONOTONIC is
system-wide, so the benchmark compares these times with its own. Reads commands on stdin:
`HOLD <seconds>` holds the answer to the next DATA that long (a slow server: the message is in, the
client still waits); `QUIT` (or end of input) stops it.
"""

import argparse
import asyncio
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self):
        self.holds: list[float] = []
        self.lock = threading.Lock()
        self.out = sys.stdout

    async def handle_DATA(self, server, session, envelope):
        moment = time.monotonic()
        self.out.write(f"D {moment:.6f} {','.join(envelope.rcpt_tos)}\n")
        self.out.flush()
        with self.lock:
            hold = self.holds.pop(0) if self.holds else 0.0
        if hold:
            await asyncio.sleep(hold)
        return "250 Message accepted"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=args.port or _free_port())
    controller.start()
    print(f"READY {controller.port}", flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "HOLD":
                with handler.lock:
                    handler.holds.append(float(words[1]))
            elif words[0] == "QUIT":
                break
    finally:
        controller.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()

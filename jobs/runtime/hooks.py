"""What the layers above the runtime add to every worker, registered at start-up by the app that owns
it (its `AppConfig.ready`), so the runtime calls it without importing it: the workers know nothing of
accounts or of SMTP.

- `EVERY_MINUTE`: run by the maintenance sweep, once a minute across all workers (the accounts'
  outbox of verification emails).
- `SLOT_IDLE`, `SLOT_END`: run by a slot thread with nothing to do, and by one that stops (the SMTP
  connection it keeps is closed).
- `BEFORE_THROTTLED_JOB`: each blocks a slot of a queue whose policy says `smtp_throttled` until it
  may take one more job (the SMTP limit); it gets the worker's stop event and raises
  `InterruptedError` when that is set first.
- `PACE`: each moves the jobs of a queue whose policy says `paced` whose turn has come (the SMTP limit
  of each municipality's own server) into that queue, and returns the seconds until the next turn
  (0: it moved some; None: nothing waits). An idle slot of the queue runs it before each dequeue.
- `HAD_TURN`: each says whether a job just taken from a `paced` queue had its turn; one that did not (a
  retry put straight in the queue) it sets aside to wait for it, and the slot leaves it.
"""

from collections.abc import Callable
from threading import Event

from rq.queue import Queue

EVERY_MINUTE: list[Callable[[], object]] = []
SLOT_IDLE: list[Callable[[], object]] = []
SLOT_END: list[Callable[[], object]] = []
BEFORE_THROTTLED_JOB: list[Callable[[Event], object]] = []
PACE: list[Callable[[str], float | None]] = []
HAD_TURN: list[Callable[[str, Queue], bool]] = []


def register(hooks: list, *functions: Callable) -> None:
    """Add `functions` to `hooks` once, however often an app's `ready` runs."""
    hooks.extend(function for function in functions if function not in hooks)

"""The forking queues' workers as one family of processes that share their memory.

`python manage.py rqworker maintenance files` loads Django once, then forks one worker per unit of
each queue's policy concurrency (1 + 2 here). Like gunicorn's preloaded workers, the children share
the parent's pages, so three workers cost about what one costs on its own. Each child is an
ordinary forking worker (`jobs.runtime.worker.CeresWorker`), which forks a work-horse per job.

- A child that exits (killed, crashed) is started again after `RESPAWN_DELAY`, so a worker that
  cannot start does not spin.
- SIGTERM or SIGINT to the parent is passed to every child once: they live in their own process
  group, so a signal sent to the parent's group (Ctrl-C, honcho) does not reach them twice. Each
  finishes its job (RQ's warm shutdown) and the parent exits 0 when all have. A later signal is
  passed on too: RQ's cold shutdown.
- A child whose parent died is sent SIGTERM by the kernel (`PR_SET_PDEATHSIG`): it finishes its job
  and exits, so a restarted parent does not run beside orphans.
"""

import ctypes
import gc
import logging
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)

RESPAWN_DELAY = 1.0  # seconds between a child's exit and its replacement
PR_SET_PDEATHSIG = 1


class Family:
    """Runs `members` (label → a function that runs one worker and returns its exit code) as children."""

    def __init__(self, members: dict[str, Callable[[], int | None]]):
        self.members = members
        self.children: dict[int, str] = {}  # pid → label
        self.stopping = False

    def run(self) -> int:
        gc.freeze()  # objects loaded so far stay untouched by the children's collections: shared pages stay shared
        previous = {sig: signal.signal(sig, self._pass_on) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for label in self.members:
                self._spawn(label)
            while self.children:
                pid, status = os.wait()
                ended = self.children.pop(pid, None)
                if ended is None or self.stopping:
                    continue
                log.warning("worker %s (pid %d) exited (%s); starting another", ended, pid, _describe(status))
                time.sleep(RESPAWN_DELAY)
                if not self.stopping:
                    self._spawn(ended)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _pass_on(self, signum, frame) -> None:
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _spawn(self, label: str) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid:
            self.children[pid] = label
            return
        code = 1
        try:
            os.setpgid(0, 0)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() == parent:  # else it died before prctl: nobody would stop us
                random.seed()
                code = self.members[label]() or 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"

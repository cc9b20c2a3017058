"""What the system is set to do, as plain data: queue policies, cron specs, the process set,
paused queues, the task names a job may carry, and the Django system checks over them.

The lowest layer: it imports no other part of `jobs` (and never rq's internals), so settings,
commands and every layer above read one source of truth.
"""

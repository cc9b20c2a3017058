"""Putting jobs into Redis: the held Redis clients and queues (`clients`), the one way a job is
enqueued once under its own id (`unique`), and the producers, one row per kind of job (`producers`).

May import `jobs.config`. Producers name tasks and callbacks by their names (`config.task_names`),
never by importing them.
"""

"""When a job fails: each attempt (`attempts`), a final failure archived as a dead letter and
alerted (`final`, `slack_texts`), staff retrying a dead letter (`dead_letters`), and the alarms of
crons and service levels (`alarms`).

May import `jobs.config`, `jobs.enqueue`, `jobs.observability` and `jobs.models`.
"""

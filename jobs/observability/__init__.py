"""What staff and monitors read: the dashboard's read model (`reads`), per-minute series and
counters (`series`, `metrics`), the health verdict (`health`) and a job's progress (`progress`).

May import `jobs.config`, `jobs.enqueue` and `jobs.models`. Reads only, except the counters jobs
write as they end.
"""

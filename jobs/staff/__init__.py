"""What staff do from Django admin: operations on jobs and queues (`operations`), their audit
trail (`audit`) and the dashboard's pages (`dashboard`).

May import `failures`, `observability`, `enqueue`, `config` and `models`; never the runtime or
the domain.
"""

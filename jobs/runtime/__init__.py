"""The processes that run jobs: the job class that refuses unregistered tasks (`job`), the forking
worker (`worker`), the in-process slot worker (`slots`, `slot_loop`, `slot_runner`), the family of
worker processes (`family`), the scheduler (`scheduler`), the reaper of dead workers (`reaper`), the
sweep of unreadable jobs (`unreadable`) and the hooks other apps plug in (`hooks`).

May import every layer under it (`failures`, `observability`, `mail`, `enqueue`, `config`,
`models`), never `jobs.tasks`, `jobs.staff` or the domain (`ceres_site`): the domain registers
what it needs run through `hooks`.
"""

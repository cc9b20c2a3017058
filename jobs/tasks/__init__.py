"""The functions jobs run (named in `jobs.config.task_names`): emails, newsletters, Slack posts,
uploaded files, crons.

The top layer: may import every layer of `jobs` and the domain (`ceres_site`) whose work it does.
"""

"""Maintenance queue tasks: thin wrappers over the functions the management commands call."""

from jobs.dead_letters import dead_letters_prune


def prune_dead_letters() -> str:
    return f"deleted {dead_letters_prune()} dead letters"

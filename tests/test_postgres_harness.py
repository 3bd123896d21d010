"""The throwaway PostgreSQL cluster the PostgreSQL tests run on (tests/postgres.py)."""

import psycopg


def test_each_test_gets_an_empty_database_of_its_own(database_url: str) -> None:
    with psycopg.connect(database_url) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        connection.execute("CREATE TABLE mine (n int)")


def test_databases_do_not_share_tables(database_url: str) -> None:
    with psycopg.connect(database_url) as connection:
        connection.execute("CREATE TABLE mine (n int)")  # no clash with the other test's

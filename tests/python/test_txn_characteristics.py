"""The transaction characteristics of the driver's implicit BEGIN
(Connection.isolation_level, readonly, deferrable) and the dialect's
isolation_level / postgresql_readonly / postgresql_deferrable on top of
them: a PostgreSQL bind's session settings last one transaction (README),
so SQLAlchemy's PGDialect way (SET SESSION CHARACTERISTICS, then COMMIT)
left every transaction at read committed; the level now travels on each
BEGIN, as psycopg2 sends it."""
import sqlite3

import pytest
import sqlalchemy as sa

import pgfixture
import sqlmux


@pytest.fixture(scope="module")
def pg():
    return pgfixture.shared()


def _show(con):
    return tuple(con.execute("SHOW " + name).fetchone()[0]
                 for name in ("transaction_isolation", "transaction_read_only", "transaction_deferrable"))


def test_pg_driver_begins_with_its_characteristics(pg):
    with pg.database() as db, pgfixture.pg_daemon(pg, db) as d:
        pgfixture.create_accounts(pg, db)
        con = sqlmux.connect("sqlmux://127.0.0.1:%d/pg" % d.port)
        assert con.isolation_level is None and _show(con) == ("read committed", "off", "off")
        con.rollback()
        con.isolation_level = "serializable"
        assert con.isolation_level == "SERIALIZABLE"
        assert _show(con) == ("serializable", "off", "off")
        con.commit()
        assert _show(con) == ("serializable", "off", "off"), "the level lasts beyond one transaction"
        con.rollback()
        con.isolation_level = "REPEATABLE_READ"
        con.readonly = True
        assert _show(con) == ("repeatable read", "on", "off")
        con.rollback()
        con.isolation_level, con.deferrable = "SERIALIZABLE", True
        assert _show(con) == ("serializable", "on", "on")
        with pytest.raises(sqlmux.OperationalError) as e:
            con.execute("CREATE TABLE t (x int)")
        assert e.value.code == "READONLY" and e.value.sqlstate == "25006", e.value
        con.rollback()
        con.isolation_level, con.readonly, con.deferrable = None, False, False
        assert _show(con) == ("read committed", "off", "off")
        con.rollback()
        with pytest.raises(sqlmux.ProgrammingError):
            con.isolation_level = "DEFERRED"
        # Two transactions at REPEATABLE READ see one snapshot each.
        other = sqlmux.connect("sqlmux://127.0.0.1:%d/pg" % d.port, autocommit=True)
        con.isolation_level = "REPEATABLE READ"
        assert con.execute("SELECT count(*) FROM accounts").fetchone()[0] == 0
        other.execute("INSERT INTO accounts (name) VALUES ('new')")
        assert con.execute("SELECT count(*) FROM accounts").fetchone()[0] == 0
        con.commit()
        assert con.execute("SELECT count(*) FROM accounts").fetchone()[0] == 1
        con.close()
        other.close()


def test_pg_dialect_isolation_level_and_readonly(pg):
    with pg.database() as db, pgfixture.pg_daemon(pg, db) as d:
        eng = sa.create_engine("sqlmux://127.0.0.1:%d/pg" % d.port)
        with eng.connect() as conn:
            assert conn.get_isolation_level() == "READ COMMITTED"
            for level in ("READ UNCOMMITTED", "REPEATABLE READ", "SERIALIZABLE"):
                conn.execution_options(isolation_level=level)
                assert conn.get_isolation_level() == level
                assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == level.lower()
        eng2 = sa.create_engine("sqlmux://127.0.0.1:%d/pg" % d.port, isolation_level="SERIALIZABLE")
        with eng2.connect() as conn:
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "serializable"
        with eng.connect().execution_options(postgresql_readonly=True, postgresql_deferrable=True) as conn:
            assert conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on"
            assert conn.exec_driver_sql("SHOW transaction_deferrable").scalar() == "on"
        with eng.connect() as conn:
            assert conn.get_isolation_level() == "READ COMMITTED", "a pooled connection's level is reset"
            assert conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "off"
        eng.dispose()
        eng2.dispose()


def test_sqlite_isolation_level_is_the_begin_kind(daemon, url):
    con = sqlmux.connect(url)
    path = daemon.db_path("app.db")

    def writer_blocked():
        db = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            db.close()

    con.execute("SELECT count(*) FROM test1").fetchall()
    assert not writer_blocked(), "a deferred transaction that only read"
    con.rollback()
    con.isolation_level = "immediate"
    con.execute("SELECT count(*) FROM test1").fetchall()
    assert writer_blocked(), "BEGIN IMMEDIATE takes the write lock"
    con.rollback()
    assert not writer_blocked()
    with pytest.raises(sqlmux.ProgrammingError):
        con.isolation_level = "SERIALIZABLE"
    with pytest.raises(sqlmux.NotSupportedError):
        con.readonly = True
    con.close()

"""An ORM session of one SQLAlchemy engine (one sqlmux URL, no bind keys)
writing objects of a SQLite bind and a PostgreSQL bind and committing once
(issue 16): both rows are committed, or, when the PostgreSQL part cannot be
prepared, neither; a rollback leaves nothing; begin_nested() is a savepoint
on every participant."""
import pytest
import sqlalchemy as sa
from sqlalchemy import orm

import pgfixture

Base = orm.declarative_base()


class Paint(Base):
    __tablename__ = "test1"
    id = sa.Column(sa.Integer, primary_key=True)
    color = sa.Column(sa.String(64))


class Item(Base):
    __tablename__ = "items"
    id = sa.Column(sa.Integer, primary_key=True)
    color = sa.Column(sa.String(64))


@pytest.fixture(scope="module")
def pg():
    return pgfixture.shared()


def test_xact_pg_sqla_session_commits_two_kinds_of_bind(pg):
    with pg.database() as db:
        pg.psql(["CREATE TABLE items (id integer PRIMARY KEY, color varchar(64))",
                 "CREATE TABLE tags (name text, UNIQUE (name) DEFERRABLE INITIALLY DEFERRED)"],
                db=db, user=pgfixture.USER)
        with pgfixture.pg_daemon(pg, db, tables=(("items", None), ("tags", None))) as d:
            eng = sa.create_engine("sqlmux://127.0.0.1:%d" % d.port, future=True)
            with orm.Session(eng) as s:
                s.add_all([Paint(id=1, color="red"), Item(id=1, color="red")])
                s.commit()
            assert d.file_query("app.db", "SELECT id, color FROM test1") == [(1, "red")]
            assert pg.psql("SELECT id, color FROM items", db=db) == [["1", "red"]]
            # Both rows in one flush, a rollback: nothing anywhere.
            with orm.Session(eng) as s:
                s.add_all([Paint(id=2, color="blue"), Item(id=2, color="blue")])
                s.flush()
                assert s.execute(sa.text("SELECT count(*) FROM items")).scalar() == 2
                s.rollback()
            assert d.file_query("app.db", "SELECT count(*) FROM test1") == [(1,)]
            assert pg.psql("SELECT count(*) FROM items", db=db) == [["1"]]
            # begin_nested(): the savepoint's rows go, the rest commits.
            with orm.Session(eng) as s:
                s.add(Paint(id=3, color="kept"))
                s.add(Item(id=3, color="kept"))
                s.flush()
                nested = s.begin_nested()
                s.add_all([Paint(id=4, color="undone"), Item(id=4, color="undone")])
                s.flush()
                nested.rollback()
                s.commit()
            assert d.file_query("app.db", "SELECT id FROM test1 ORDER BY id") == [(1,), (3,)]
            assert pg.psql("SELECT id FROM items ORDER BY id", db=db) == [["1"], ["3"]]
            # begin_nested() before the PostgreSQL bind's first statement:
            # it joins inside the savepoint, whose rollback undoes its rows.
            with orm.Session(eng) as s:
                s.add(Paint(id=6, color="kept"))
                s.flush()
                nested = s.begin_nested()
                s.add(Item(id=6, color="undone"))
                s.flush()
                nested.rollback()
                s.add(Item(id=7, color="kept"))
                s.commit()
            assert d.file_query("app.db", "SELECT id FROM test1 ORDER BY id") == [(1,), (3,), (6,)]
            assert pg.psql("SELECT id FROM items ORDER BY id", db=db) == [["1"], ["3"], ["7"]]
            # A PostgreSQL part that fails at PREPARE (a deferred unique
            # constraint): the commit raises, nothing of it anywhere.
            with orm.Session(eng) as s:
                s.add(Paint(id=5, color="x"))
                s.execute(sa.text("INSERT INTO tags (name) VALUES ('dup')"))
                s.execute(sa.text("INSERT INTO tags (name) VALUES ('dup')"))
                with pytest.raises(sa.exc.IntegrityError):
                    s.commit()
            assert d.file_query("app.db", "SELECT count(*) FROM test1 WHERE id = 5") == [(0,)]
            assert pg.psql("SELECT count(*) FROM tags", db=db) == [["0"]]
            assert pg.psql("SELECT count(*) FROM pg_prepared_xacts WHERE database = '%s'" % db,
                           db="postgres") == [["0"]]
            eng.dispose()

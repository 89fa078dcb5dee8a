"""The driver and the dialect against a PostgreSQL bind, what SQLAlchemy's
compliance suite found (issue 17): parameters of date, time, timestamp,
interval and numeric types whose type PostgreSQL cannot infer ("SELECT ?",
"? IS NULL") are cast by the dialect; arrays come back as lists, as
psycopg2 gives them (reflected unique constraints use int2[]); rowcount of
UPDATE ... RETURNING is the rows changed."""
import datetime
import decimal

import pytest
import sqlalchemy as sa

import pgfixture
import sqlmux

CATALOGS = (("gadgets", None), ("pg_*", None), ("pg_catalog.*", None), ("information_schema.*", None))


@pytest.fixture(scope="module")
def pg():
    return pgfixture.shared()


def test_pg_arrays_as_lists(pg):
    with pg.database() as db, pgfixture.pg_daemon(pg, db, tables=()) as d:
        con = sqlmux.connect("sqlmux://127.0.0.1:%d/pg" % d.port)
        row = con.execute("SELECT ARRAY[1, 2]::int2[], ARRAY['a b', '\"x\\', NULL, 'NULL', ''], "
                          "ARRAY[[1.5, NULL], [2, 3]]::float8[], '{}'::int8[], ARRAY[true, false], "
                          "'[0:1]={7,8}'::int4[], NULL::text[]").fetchone()
        assert row == ([1, 2], ["a b", '"x\\', None, "NULL", ""],
                       [[1.5, None], [2.0, 3.0]], [],
                       [True, False], "[0:1]={7,8}", None)
        con.close()


def test_pg_dialect_casts_untyped_parameters(pg):
    with pg.database() as db, pgfixture.pg_daemon(pg, db, tables=CATALOGS) as d:
        eng = sa.create_engine("sqlmux://127.0.0.1:%d/pg" % d.port, future=True)
        md = sa.MetaData()
        gadgets = sa.Table("gadgets", md, sa.Column("id", sa.Integer, primary_key=True),
                           sa.Column("day", sa.Date), sa.Column("price", sa.Numeric(6, 2)),
                           sa.Column("name", sa.String(20)), sa.UniqueConstraint("name", "day", name="uq_nd"))
        md.create_all(eng)
        day = datetime.date(2012, 10, 15)
        at = datetime.datetime(2012, 10, 15, 12, 57, 18, 396)
        with eng.begin() as c:
            # Values of a parameter alone, whose type only the bind knows.
            assert c.execute(sa.select(sa.literal(day))).scalar() == day
            assert c.execute(sa.select(sa.literal(at))).scalar() == at
            assert c.execute(sa.select(sa.literal(at.time()))).scalar() == at.time()
            assert c.execute(sa.select(sa.literal(datetime.timedelta(days=1, seconds=5)))).scalar() == \
                datetime.timedelta(days=1, seconds=5)
            v = c.execute(sa.select(sa.literal(decimal.Decimal("15.7563"), sa.Numeric(10, 4)))).scalar()
            assert v == decimal.Decimal("15.7563") and isinstance(v, decimal.Decimal)
            # ? IS NULL: SQLSTATE 42P18 without a cast.
            assert c.execute(sa.select(sa.literal(1)).where(sa.bindparam("d", None, type_=sa.Date).is_(None))
                             ).scalar() == 1
            c.execute(gadgets.insert(), [{"day": day, "price": decimal.Decimal("1.25"), "name": n}
                                         for n in ("a", "b", "c")])
            # IN with a list of dates (expanded parameters, each cast).
            n = c.execute(sa.select(sa.func.count()).where(gadgets.c.day.in_([day, day]))).scalar()
            assert n == 3
            r = c.execute(gadgets.update().where(gadgets.c.day == day).values(name=gadgets.c.name + "Z")
                          .return_defaults())
            assert r.rowcount == 3
        assert sa.inspect(eng).get_unique_constraints("gadgets") == [{"name": "uq_nd", "column_names": ["name", "day"]}]
        eng.dispose()


def test_pg_rowcount_of_returning(pg):
    with pg.database() as db, pgfixture.pg_daemon(pg, db, tables=(("rc", None),)) as d:
        con = sqlmux.connect("sqlmux://127.0.0.1:%d/pg" % d.port, autocommit=True)
        con.execute("CREATE TABLE rc (id int, x int)")
        cur = con.execute("INSERT INTO rc VALUES (1, 1), (2, 2), (3, 3) RETURNING id")
        assert cur.rowcount == 3 and cur.fetchone() == (1,) and cur.fetchall() == [(2,), (3,)]
        cur = con.execute("UPDATE rc SET x = x + 1 WHERE id > ? RETURNING id, x", (1,))
        assert cur.rowcount == 2 and sorted(cur.fetchall()) == [(2, 3), (3, 4)]
        cur = con.execute("DELETE FROM rc RETURNING id")
        assert cur.rowcount == 3 and cur.fetchmany(2) == [(1,), (2,)] and cur.fetchmany(5) == [(3,)]
        # Named parameters beside PostgreSQL's :: casts.
        assert con.execute("SELECT :a::int4 + 1, ':a'::text", {"a": "41"}).fetchone() == (42, ":a")
        # A SELECT still streams: rowcount -1 as before.
        assert con.execute("SELECT 1").rowcount == -1
        con.close()

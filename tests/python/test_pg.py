"""The driver and the dialect against a PostgreSQL bind (a private cluster,
tests/integration/pgfixture.py): PostgreSQL's types as psycopg2 gives them
(numeric as Decimal, dates and times, bool, bytea), SQLSTATEs on errors,
and the dialect choosing PostgreSQL SQL for a postgresql bind."""
import datetime
import decimal

import pytest

import pgfixture
import sqlmux


@pytest.fixture(scope="module")
def pg():
    return pgfixture.shared()


def test_pg_types_and_errors(pg):
    with pg.database() as db, pgfixture.pg_daemon(pg, db, tables=(("pgt", None),)) as d:
        con = sqlmux.connect("sqlmux://127.0.0.1:%d/pg" % d.port)
        assert con.backend == "postgresql"
        con.execute("CREATE TABLE pgt (id serial PRIMARY KEY, n numeric(12,3), f float8, b bool, "
                    "d date, ts timestamp, tz timestamptz, t time, iv interval, raw bytea, s text UNIQUE)")
        con.commit()
        ts = datetime.datetime(2024, 2, 29, 13, 45, 1, 123456)
        con.execute("INSERT INTO pgt (n, f, b, d, ts, tz, t, iv, raw, s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (decimal.Decimal("12.345"), float("nan"), True, ts.date(), ts,
                     ts.replace(tzinfo=datetime.timezone.utc), ts.time(), datetime.timedelta(days=1, hours=2),
                     bytes(range(256)), "a\tb\n\U0001F600"))
        con.execute("INSERT INTO pgt (f, b, s) VALUES (?, ?, ?)", (float("-inf"), False, "x"))
        con.commit()
        rows = con.execute("SELECT n, f, b, d, ts, tz, t, iv, raw, s, id FROM pgt ORDER BY id").fetchall()
        r = rows[0]
        assert r[0] == decimal.Decimal("12.345") and isinstance(r[0], decimal.Decimal)
        assert r[1] != r[1]  # NaN
        assert r[2] is True and r[3] == ts.date() and r[4] == ts
        assert r[5] == ts.replace(tzinfo=datetime.timezone.utc) and r[6] == ts.time()
        assert r[7] == datetime.timedelta(days=1, hours=2)
        assert r[8] == bytes(range(256)) and r[9] == "a\tb\n\U0001F600" and r[10] == 1
        assert rows[1][1] == float("-inf") and rows[1][2] is False
        with pytest.raises(sqlmux.IntegrityError) as e:
            con.execute("INSERT INTO pgt (s) VALUES (?)", ("x",))
        assert e.value.code == "CONSTRAINT" and e.value.sqlstate == "23505"
        con.rollback()
        with pytest.raises(sqlmux.ProgrammingError) as e:
            con.execute("SELECT nosuchcolumn FROM pgt")
        assert e.value.sqlstate == "42703"
        con.rollback()
        with pytest.raises(sqlmux.DataError):
            con.execute("SELECT ?::int4", ("x",))
        con.rollback()
        con.close()


def test_pg_dialect(pg):
    import sqlalchemy as sa
    # PostgreSQL's catalogs mapped to the bind: until the daemon routes a
    # statement naming no mapped table to the session's bind (issue 14), the
    # dialect's reflection queries of pg_class & co. would go to default.
    catalogs = (("things", None), ("pg_*", None), ("pg_catalog.*", None), ("information_schema.*", None))
    with pg.database() as db, pgfixture.pg_daemon(pg, db, tables=catalogs) as d:
        eng = sa.create_engine("sqlmux://127.0.0.1:%d/pg" % d.port, future=True)
        assert eng.dialect.name == "postgresql" and eng.dialect.driver == "sqlmux"
        md = sa.MetaData()
        things = sa.Table("things", md, sa.Column("id", sa.Integer, primary_key=True),
                          sa.Column("price", sa.Numeric(10, 2)), sa.Column("at", sa.DateTime(timezone=True)),
                          sa.Column("name", sa.String(20), index=True))
        md.create_all(eng)
        now = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        with eng.begin() as c:
            r = c.execute(things.insert().values(price=decimal.Decimal("9.99"), at=now, name="nut"))
            assert r.inserted_primary_key == (1,)  # RETURNING, as PostgreSQL does it
            with c.begin_nested() as sp:
                c.execute(things.insert().values(name="gone"))
                sp.rollback()
        with eng.connect() as c:
            assert c.execute(sa.select(things.c.price, things.c.at, things.c.name)).all() == \
                [(decimal.Decimal("9.99"), now, "nut")]
            # PostgreSQL SQL: ILIKE is compiled as such
            assert c.execute(sa.select(things.c.id).where(things.c.name.ilike("NU%"))).scalar() == 1
        insp = sa.inspect(eng)
        assert "things" in insp.get_table_names()
        assert [col["name"] for col in insp.get_columns("things")] == ["id", "price", "at", "name"]
        assert [i["column_names"] for i in insp.get_indexes("things")] == [["name"]]

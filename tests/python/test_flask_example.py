"""examples/flask: the note's app with Flask-SQLAlchemy and Flask-Migrate
through sqlmux, on the example's own sqlmux.ini, which has no [tables]
entry: each bind's tables are created through that bind's URL and the
daemon routes them by its catalogs (issue 14). The app runs in child
processes of /usr/bin/python3 (cwd examples/flask, SQLMUX_URL set), as a
user runs it; the databases are checked with the sqlite3 module."""
import os
import re
import subprocess
import sys

import harness
from conftest import child_env

EXAMPLE = os.path.join(harness.REPO, "examples", "flask")


def example_daemon():
    """The example's sqlmux.ini, on a free port and a temp data_dir."""
    with open(os.path.join(EXAMPLE, "sqlmux.ini")) as f:
        text = f.read()
    assert not re.search(r"(?m)^\[tables\]", text), "the example needs no [tables] section"
    text = re.sub(r"(?m)^listen = .*$", "listen = 127.0.0.1:{port}", text)
    text = re.sub(r"(?m)^data_dir = .*$", "data_dir = {data_dir}", text)
    return harness.Daemon(config=text)


def run_app(d, code, cwd=EXAMPLE, args=None, timeout=120):
    """Run python code (or `flask ARGS` when args) with the example app
    importable; its stdout, failing the test when it fails."""
    env = dict(os.environ, SQLMUX_URL="sqlmux://127.0.0.1:%d" % d.port, FLASK_APP=os.path.join(EXAMPLE, "app.py"))
    env["PYTHONPATH"] = EXAMPLE + os.pathsep + env.get("PYTHONPATH", "")
    child_env(env)
    argv = [sys.executable, "-m", "flask"] + args if args else [sys.executable, "-c", code]
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=timeout)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 0, "%s failed:\n%s\n%s" % (argv[2:], out, err)
    return out + err


ORM = """
from app import app, db, Test1, Test2, Test3
with app.app_context():
    db.create_all()
    db.session.add_all([Test1(), Test1(color='green'), Test2(), Test3(), Test3(color='pink')])
    db.session.commit()
    assert sorted(t.color for t in Test1.query.all()) == ['green', 'red']
    assert [t.color for t in Test2.query.all()] == ['red']
    assert [t.color for t in Test3.query.order_by(Test3.id)] == ['blue', 'pink']
    # update, delete
    t = db.session.get(Test2, 1)
    t.color = 'yellow'
    db.session.delete(Test1.query.filter_by(color='green').one())
    db.session.commit()
    # rollback
    db.session.add(Test2(color='gone'))
    db.session.flush()
    assert Test2.query.count() == 2
    db.session.rollback()
    assert [t.color for t in Test2.query.all()] == ['yellow']
    print('ORM-OK')
"""

NESTED = """
from app import app, db, Test1
with app.app_context():
    db.session.add(Test1(color='outer'))
    nested = db.session.begin_nested()
    db.session.add(Test1(color='inner'))
    nested.rollback()
    db.session.commit()
    db.session.add(Test1(color='after'))
    db.session.commit()
    print(sorted(t.color for t in Test1.query.all()))
"""


def test_flask_sqlalchemy_orm_through_sqlmux():
    d = example_daemon()
    try:
        assert "ORM-OK" in run_app(d, ORM)
        # rows landed in their own bind's file
        assert d.file_query("app.db", "SELECT color FROM test1") == [("red",)]
        assert d.file_query("second.db", "SELECT color FROM test2") == [("yellow",)]
        assert d.file_tables("app.db") == ["test1"] and d.file_tables("second.db") == ["test2"]
        # the in-memory bind is the daemon's: a second app process sees its rows
        out = run_app(d, "from app import app, Test3\nwith app.app_context():\n"
                         "    print(sorted(t.color for t in Test3.query.all()))")
        assert out.strip() == "['blue', 'pink']"
    finally:
        d.cleanup()


def test_flask_begin_nested_savepoint():
    """db.session.begin_nested(): a SAVEPOINT rolled back inside a
    transaction. The later commit must land (the daemon's SAVEPOINT
    tracking, issue 13 item 1)."""
    d = example_daemon()
    try:
        run_app(d, "from app import app, db\nwith app.app_context():\n    db.create_all()")
        out = run_app(d, NESTED)
        assert out.strip().splitlines()[-1] == "['after', 'outer']", out
        assert d.file_query("app.db", "SELECT color FROM test1 ORDER BY color") == [("after",), ("outer",)]
    finally:
        d.cleanup()


def test_flask_migrate_multidb_through_sqlmux(tmp_path):
    d = example_daemon()
    try:
        run_app(d, None, cwd=str(tmp_path), args=["db", "init", "--multidb"])
        out = run_app(d, None, cwd=str(tmp_path), args=["db", "migrate", "-m", "tests"])
        versions = list((tmp_path / "migrations" / "versions").glob("*.py"))
        assert len(versions) == 1, out
        script = versions[0].read_text()
        for table in ("test1", "test2", "test3"):
            assert "op.create_table('%s'" % table in script, script
        run_app(d, None, cwd=str(tmp_path), args=["db", "upgrade"])
        rev = re.search(r"^revision = '(\w+)'", script, re.M).group(1)
        # each bind has its tables and its own version table, alembic_version
        assert d.file_query("app.db", "SELECT version_num FROM alembic_version") == [(rev,)]
        assert d.file_query("second.db", "SELECT version_num FROM alembic_version") == [(rev,)]
        assert d.file_tables("app.db") == ["alembic_version", "test1"], d.file_tables("app.db")
        assert d.file_tables("second.db") == ["alembic_version", "test2"], d.file_tables("second.db")
        out = run_app(d, "import sqlmux, os\nc = sqlmux.connect(os.environ['SQLMUX_URL'] + '/memory_db')\n"
                         "print(c.execute('SELECT version_num FROM alembic_version').fetchall())\n"
                         "print(c.execute(\"SELECT name FROM sqlite_master WHERE name = 'test3'\").fetchall())")
        assert out.split("\n")[:2] == ["[('%s',)]" % rev, "[('test3',)]"], out
        # a second upgrade has nothing to do
        run_app(d, None, cwd=str(tmp_path), args=["db", "upgrade"])
    finally:
        d.cleanup()

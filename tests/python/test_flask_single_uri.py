"""examples/flask/single_uri.py: the note's app with ONE
SQLALCHEMY_DATABASE_URI and no bind keys, on sqlmux_single.ini whose
[tables] section maps each table to its bind (issue 17's last part). One
engine and one session reach every bind: db.create_all() creates each table
in its bind, a commit is one transaction across binds (all or nothing), and
the note's last section works: Nuts (memory_db) with a foreign key to Tree
(default), a relationship and db.session.query(Nuts).join(Tree). The app
runs in child processes of /usr/bin/python3 as a user runs it; the files
are checked with the sqlite3 module."""
import os
import re
import subprocess
import sys

import harness
from conftest import child_env

EXAMPLE = os.path.join(harness.REPO, "examples", "flask")


def single_daemon():
    """sqlmux_single.ini on a free port and a temp data_dir."""
    with open(os.path.join(EXAMPLE, "sqlmux_single.ini")) as f:
        text = f.read()
    text = re.sub(r"(?m)^listen = .*$", "listen = 127.0.0.1:{port}", text)
    text = re.sub(r"(?m)^data_dir = .*$", "data_dir = {data_dir}", text)
    return harness.Daemon(config=text)


def run_app(d, code, timeout=120):
    """Run python code with single_uri importable as `app`; its stdout and
    stderr, failing the test when it fails."""
    env = dict(os.environ, SQLMUX_URL="sqlmux://127.0.0.1:%d" % d.port)
    env["PYTHONPATH"] = EXAMPLE + os.pathsep + env.get("PYTHONPATH", "")
    child_env(env)
    code = "from single_uri import app, db, Test1, Test2, Test3, Tree, Nuts\n" + code
    p = subprocess.run([sys.executable, "-c", code], cwd=EXAMPLE, env=env, capture_output=True, timeout=timeout)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 0, "failed:\n%s\n%s" % (out, err)
    return out + err


def file_tables(d, name):
    """The file's tables but the daemon's marker table sqlmux_xact."""
    return [t for t in d.file_tables(name) if t != "sqlmux_xact"]


def counts(d):
    """Rows per table, read through the daemon (memory_db has no file)."""
    with harness.Conn(d.addr) as c:
        r = c.request("SELECT (SELECT count(*) FROM test1), (SELECT count(*) FROM test2), "
                      "(SELECT count(*) FROM test3), (SELECT count(*) FROM tree), (SELECT count(*) FROM nuts)")
        assert r.status == "+OK rows=1", r
        return tuple(int(v) for v in r.rows[0])


CREATE = """
with app.app_context():
    db.create_all()
    print('CREATED')
"""

REFLECT = """
import sqlalchemy
with app.app_context():
    i = sqlalchemy.inspect(db.engine)
    print([(f['referred_table'], f['constrained_columns'], f['referred_columns']) for f in i.get_foreign_keys('nuts')])
    print(sorted(x['name'] for x in i.get_indexes('nuts')))
"""


def check_tables(d):
    """test1 and tree in app.db, test2 in second.db, test3 and nuts in
    memory_db (through the daemon); all of them empty."""
    assert file_tables(d, "app.db") == ["test1", "tree"], d.file_tables("app.db")
    assert file_tables(d, "second.db") == ["test2"], d.file_tables("second.db")
    with harness.Conn(d.addr) as c:
        c.request(".use memory_db")
        r = c.request("SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sqlmux_xact' ORDER BY name")
        harness.expect_rows(r, [["nuts"], ["test3"]])
        r = c.request("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix_%' ORDER BY name")
        harness.expect_rows(r, [["ix_nuts_type"]])
    assert d.file_query("app.db", "SELECT name FROM sqlite_master WHERE type = 'index' "
                                  "AND name LIKE 'ix_%'") == [("ix_tree_name",)]
    assert counts(d) == (0, 0, 0, 0, 0)


def test_create_all_lands_in_mapped_binds():
    """db.create_all() runs in one transaction (SQLAlchemy's engine.begin()):
    PRAGMA main.table_info of each table, then CREATE TABLE and CREATE
    INDEX of each in its bind, the foreign key nuts -> tree across binds
    among them (tests/integration/test_xbind_flask_found.py)."""
    d = single_daemon()
    try:
        assert "CREATED" in run_app(d, CREATE)
        check_tables(d)
        # the foreign key across binds is kept (unenforced) for reflection
        with harness.Conn(d.addr) as c:
            c.request(".use memory_db")
            r = c.request("PRAGMA foreign_key_list(nuts)")
            assert [row[2:5] for row in r.rows] == [["tree", "tree_name", "name"]], r
        # a second run finds every table where it lives
        assert "CREATED" in run_app(d, CREATE)
        check_tables(d)
        # SQLAlchemy's reflection through the one URL sees the relationship
        out = run_app(d, REFLECT).strip().splitlines()
        assert out[-2:] == ["[('tree', ['tree_name'], ['name'])]", "['ix_nuts_type']"], out
    finally:
        d.cleanup()


ORM = """
with app.app_context():
    db.create_all()
    # one commit writing every bind: a transaction across binds
    oak = Tree(name='oak')
    db.session.add_all([Test1(), Test1(color='green'), Test2(), Test3(), Test3(color='pink'),
                        oak, Tree(name='walnut'), Nuts(type='acorn', tree=oak),
                        Nuts(type='acorn2', tree_name='oak'), Nuts(type='walnut', tree_name='walnut'),
                        Nuts(type='loose')])
    db.session.commit()
    print('COMMIT-OK')
"""

QUERY = """
with app.app_context():
    assert sorted(t.color for t in Test1.query.all()) == ['green', 'red']
    assert [t.color for t in Test2.query.all()] == ['red']
    assert [t.color for t in Test3.query.order_by(Test3.id)] == ['blue', 'pink']
    # the note's join across databases
    rows = db.session.query(Nuts).join(Tree).order_by(Nuts.type).all()
    assert [(n.type, n.tree_name) for n in rows] == [('acorn', 'oak'), ('acorn2', 'oak'), ('walnut', 'walnut')], rows
    rows = db.session.query(Nuts.type, Tree.id).join(Tree).filter(Tree.name == 'walnut').all()
    assert rows == [('walnut', 2)], rows
    # the relationship loads across binds, both ways, lazily and joined
    db.session.expunge_all()
    oak = Tree.query.filter_by(name='oak').one()
    assert sorted(n.type for n in oak.nuts) == ['acorn', 'acorn2']
    assert Nuts.query.filter_by(type='walnut').one().tree.name == 'walnut'
    assert Nuts.query.filter_by(type='loose').one().tree is None
    t = Tree.query.options(db.joinedload(Tree.nuts)).filter_by(name='walnut').one()
    assert [n.type for n in t.nuts] == ['walnut']
    n = Nuts.query.options(db.selectinload(Nuts.tree)).filter_by(type='acorn').one()
    assert n.tree.name == 'oak'
    print('QUERY-OK')
"""

UPDATE = """
with app.app_context():
    # update and delete in several binds, one commit
    Test2.query.one().color = 'yellow'
    db.session.delete(Test1.query.filter_by(color='green').one())
    oak = Tree.query.filter_by(name='oak').one()
    oak.nuts.append(Nuts(type='acorn3'))
    db.session.delete(Nuts.query.filter_by(type='loose').one())
    db.session.commit()
    # a bulk update across binds: the nuts of walnut trees
    Nuts.query.filter(Nuts.tree_name.in_(db.session.query(Tree.name).filter(Tree.name.like('wal%')))) \
        .update({'type': 'big walnut'}, synchronize_session=False)
    db.session.commit()
    print(sorted(n.type for n in Nuts.query.join(Tree)))
"""


def test_orm_across_binds_one_session():
    d = single_daemon()
    try:
        assert "COMMIT-OK" in run_app(d, ORM)
        assert counts(d) == (2, 1, 2, 2, 4)
        assert d.file_query("app.db", "SELECT color FROM test1 ORDER BY id") == [("red",), ("green",)]
        assert d.file_query("app.db", "SELECT name FROM tree ORDER BY id") == [("oak",), ("walnut",)]
        assert d.file_query("second.db", "SELECT color FROM test2") == [("red",)]
        # a second process sees it all: memory_db is the daemon's
        assert "QUERY-OK" in run_app(d, QUERY)
        out = run_app(d, UPDATE)
        assert out.strip().splitlines()[-1] == "['acorn', 'acorn2', 'acorn3', 'big walnut']", out
        assert d.file_query("app.db", "SELECT color FROM test1") == [("red",)]
        assert d.file_query("second.db", "SELECT color FROM test2") == [("yellow",)]
        assert counts(d) == (1, 1, 2, 2, 4)
    finally:
        d.cleanup()


ROLLBACK = """
from sqlalchemy.exc import IntegrityError
with app.app_context():
    db.create_all()
    db.session.add_all([Test1(color='t1'), Tree(name='elm')])
    db.session.commit()
    # rollback after writes to every bind: nothing of it stays
    db.session.add_all([Test1(color='gone'), Test2(color='gone'), Test3(color='gone'),
                        Tree(name='gone'), Nuts(type='gone', tree_name='elm')])
    db.session.flush()
    assert db.session.query(Nuts).join(Tree).count() == 1
    assert Test2.query.count() == 1 and Test3.query.count() == 1
    db.session.rollback()
    assert Test1.query.count() == 1 and Test2.query.count() == 0 and Test3.query.count() == 0
    assert Tree.query.count() == 1 and Nuts.query.count() == 0
    # a commit that fails (a duplicate tree name, flushed last) leaves nothing
    db.session.add(Test2(color='lost'))
    db.session.add(Nuts(type='lost', tree_name='elm'))
    db.session.flush()
    db.session.add(Tree(name='elm'))
    try:
        db.session.commit()
    except IntegrityError as e:
        print('FAILED', type(e).__name__)
    db.session.rollback()
    assert Test2.query.count() == 0 and Nuts.query.count() == 0 and Tree.query.count() == 1
    print('ROLLBACK-OK')
"""


def test_rollback_and_failed_commit_leave_nothing():
    d = single_daemon()
    try:
        out = run_app(d, ROLLBACK)
        assert "FAILED IntegrityError" in out and "ROLLBACK-OK" in out, out
        assert counts(d) == (1, 0, 0, 1, 0)
        assert d.file_query("second.db", "SELECT count(*) FROM test2") == [(0,)]
    finally:
        d.cleanup()


NESTED = """
with app.app_context():
    db.create_all()
    db.session.add_all([Test1(color='outer'), Tree(name='ash')])
    nested = db.session.begin_nested()
    db.session.add_all([Test2(color='inner'), Test3(color='inner'), Nuts(type='inner', tree_name='ash')])
    db.session.flush()
    assert db.session.query(Nuts).join(Tree).count() == 1
    nested.rollback()
    with db.session.begin_nested():
        db.session.add_all([Test3(color='kept'), Nuts(type='kept', tree_name='ash')])
    db.session.commit()
    print(sorted((n.type, n.tree.name) for n in db.session.query(Nuts).join(Tree)))
    print(sorted(t.color for t in Test3.query))
"""


def test_begin_nested_across_binds():
    d = single_daemon()
    try:
        out = run_app(d, NESTED)
        assert out.strip().splitlines()[-2:] == ["[('kept', 'ash')]", "['kept']"], out
        assert counts(d) == (1, 0, 1, 1, 1)
        assert d.file_query("app.db", "SELECT color FROM test1") == [("outer",)]
        assert d.file_query("second.db", "SELECT count(*) FROM test2") == [(0,)]
    finally:
        d.cleanup()

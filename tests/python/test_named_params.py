"""The `named` paramstyle, as the sqlite3 module takes it: execute(sql,
mapping) with :name parameters (issue 17), against the real daemon. Names
inside string literals, quoted identifiers, comments and PostgreSQL's ::
casts are not parameters."""
import pytest

import sqlmux


def test_named_parameters(url):
    con = sqlmux.connect(url + "/second_db", autocommit=True)
    con.execute('CREATE TABLE named_t (id INTEGER PRIMARY KEY, "a:b" TEXT, n INTEGER)')
    con.execute('INSERT INTO named_t ("a:b", n) VALUES (:s, :n)', {"n": 7, "s": "x:y"})
    con.executemany("INSERT INTO named_t (\"a:b\", n) VALUES (:s, :n)",
                    [{"s": "two", "n": 2}, {"s": "three", "n": 3, "unused": 0}])
    rows = con.execute("SELECT \"a:b\", n, ':n', /* :n */ :n * 2 -- :nothere\n FROM named_t WHERE n = :n",
                       {"n": 7}).fetchall()
    assert rows == [("x:y", 7, ":n", 14)]
    # The same name twice, reused statement text (cached conversion).
    for v in (2, 3):
        assert con.execute("SELECT :v + :v, :v * 3", {"v": v}).fetchone() == (2 * v, 3 * v)
    with pytest.raises(sqlmux.ProgrammingError) as e:
        con.execute("SELECT :missing", {"other": 1})
    assert ":missing" in str(e.value)
    with pytest.raises(sqlmux.ProgrammingError):
        con.execute("SELECT ?", {"x": 1})
    # Sequences still take ?.
    assert con.execute("SELECT ?", (5,)).fetchone() == (5,)
    con.close()

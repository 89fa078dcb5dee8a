"""Values: every kind of value round-trips through INSERT + SELECT, both as SQL
literals and as parameters, in PostgreSQL COPY text form; headers carry the
declared types."""

from harness import Daemon, Raw, TestFailure, eq, expect_ok, expect_rows, expect_status

INF = float("inf")
ALL_BYTES = bytes(range(256))
UNI = "h\u00e9llo \u2603 \U0001d11e \u4e2d\u6587"

# (name, SQL literal, Python value for parameters, decoded field, typeof(),
#  raw field bytes or None when only float(raw) == value is checked)
CASES = [
    ("NULL", "NULL", None, None, "null", b"\\N"),
    ("empty string", "''", "", "", "text", b""),
    ("text NULL", "'NULL'", "NULL", "NULL", "text", b"NULL"),
    ("text \\N", "'\\N'", "\\N", "\\N", "text", b"\\\\N"),
    ("tab", "char(9)", "\t", "\t", "text", b"\\t"),
    ("newline", "char(10)", "\n", "\n", "text", b"\\n"),
    ("carriage return", "char(13)", "\r", "\r", "text", b"\\r"),
    ("backslash", "'\\'", "\\", "\\", "text", b"\\\\"),
    ("mixed escapes", "'a' || char(9) || 'b' || char(10) || 'c' || char(13) || 'd\\e'",
     "a\tb\nc\rd\\e", "a\tb\nc\rd\\e", "text", b"a\\tb\\nc\\rd\\\\e"),
    ("text \\x41", "'\\x41'", "\\x41", "\\x41", "text", b"\\\\x41"),
    ("text with NUL", "CAST(X'610062' AS TEXT)", "a\x00b", "a\x00b", "text", b"a\\0b"),
    ("unicode", "'%s'" % UNI, UNI, UNI, "text", UNI.encode()),
    ("quote", "'it''s'", "it's", "it's", "text", b"it's"),
    ("blob 00ff", "X'00FF'", b"\x00\xff", b"\x00\xff", "blob", b"\\x00ff"),
    ("empty blob", "X''", b"", b"", "blob", b"\\x"),
    ("all 256 bytes", "X'%s'" % ALL_BYTES.hex(), ALL_BYTES, ALL_BYTES, "blob",
     b"\\x" + ALL_BYTES.hex().encode()),
    ("zero", "0", 0, "0", "integer", b"0"),
    ("negative", "-42", -42, "-42", "integer", b"-42"),
    ("int64 max", "9223372036854775807", 2**63 - 1, "9223372036854775807", "integer",
     b"9223372036854775807"),
    ("int64 min", "(-9223372036854775807 - 1)", -2**63, "-9223372036854775808", "integer",
     b"-9223372036854775808"),
    ("0.1", "0.1", 0.1, "0.1", "real", b"0.1"),
    ("1.0", "1.0", 1.0, "1.0", "real", b"1.0"),
    ("100.0", "100.0", 100.0, "100.0", "real", b"100.0"),
    ("-2.5", "-2.5", -2.5, "-2.5", "real", b"-2.5"),
    ("1e300", "1e300", 1e300, "1e+300", "real", b"1e+300"),
    ("pi shortest", "3.141592653589793", 3.141592653589793, "3.141592653589793", "real",
     b"3.141592653589793"),
    ("inf", "9e999", INF, "inf", "real", b"inf"),
    ("-inf", "-9e999", -INF, "-inf", "real", b"-inf"),
    ("1.5e-7", "1.5e-7", 1.5e-7, None, "real", None),
    ("1e16", "1e16", 1e16, None, "real", None),
    ("-1e-300", "-1e-300", -1e-300, None, "real", None),
    ("2^53+1 as real", "9007199254740993.0", 9007199254740992.0, None, "real", None),
]


def _check_field(name, raw_field, decoded, want_dec, want_raw, want_val, problems):
    if want_raw is not None:
        if raw_field != want_raw:
            problems.append("%s: raw field %r, want %r" % (name, raw_field, want_raw))
        if decoded != want_dec:
            problems.append("%s: decoded %r, want %r" % (name, decoded, want_dec))
    else:
        try:
            ok = float(raw_field) == want_val and (b"." in raw_field or b"e" in raw_field)
        except ValueError:
            ok = False
        if not ok:
            problems.append("%s: raw field %r does not read back as %r (or lacks '.'/'e')"
                            % (name, raw_field, want_val))


def _select_and_check(c, label, problems):
    r = c.request("SELECT id, v, typeof(v) FROM vals ORDER BY id")
    expect_status(r, "+OK rows=%d" % len(CASES))
    for i, (name, _lit, val, dec, typ, raw) in enumerate(CASES):
        row = r.rows[i]
        line = r.raw[1 + i]
        fields = line[1:].split(b"\t")
        if row[0] != str(i + 1):
            problems.append("%s: id %r" % (name, row[0]))
        _check_field("%s %s" % (label, name), fields[1], row[1], dec, raw, val, problems)
        if row[2] != typ:
            problems.append("%s %s: typeof %r, want %r" % (label, name, row[2], typ))


def _setup(c):
    expect_status(c.request("CREATE TABLE vals (id INTEGER PRIMARY KEY, v)"), "+OK changes=0")


def _report(problems):
    if problems:
        raise TestFailure("%d value problem(s):\n  " % len(problems) + "\n  ".join(problems))


def test_literals_round_trip(d):
    c = d.connect()
    _setup(c)
    for i, (name, lit, *_rest) in enumerate(CASES, 1):
        r = c.request("INSERT INTO vals (id, v) VALUES (%d, %s)" % (i, lit))
        expect_status(r, "+OK changes=1 last_id=%d" % i)
    p = []
    _select_and_check(c, "literal", p)
    _report(p)


def test_inline_parameters_round_trip(d):
    c = d.connect()
    _setup(c)
    for i, (name, _lit, val, *_rest) in enumerate(CASES, 1):
        r = c.inline("INSERT INTO vals (id, v) VALUES (?, ?)", [i, val])
        expect_status(r, "+OK changes=1 last_id=%d" % i)
    p = []
    _select_and_check(c, "?param", p)
    _report(p)


def test_bulk_parameters_round_trip(d):
    c = d.connect()
    _setup(c)
    for i, (name, _lit, val, *_rest) in enumerate(CASES, 1):
        r = c.bulk("INSERT INTO vals (id, v)\nVALUES ($id, $v)", [i, val])
        expect_status(r, "+OK changes=1 last_id=%d" % i)
    p = []
    _select_and_check(c, "$param", p)
    _report(p)


def test_parameters_echo(d):
    c = d.connect()
    p = []
    for name, _lit, val, dec, typ, raw in CASES:
        r = c.inline("SELECT v, typeof(v) AS t FROM (SELECT ? AS v)", [val])
        if r.status != "+OK rows=1" or r.columns != [("v", ""), ("t", "")]:
            p.append("%s: %r" % (name, r))
            continue
        _check_field("echo " + name, r.raw[1][1:].split(b"\t")[0], r.rows[0][0], dec, raw, val, p)
        if r.rows[0][1] != typ:
            p.append("echo %s: typeof %r, want %r" % (name, r.rows[0][1], typ))
    _report(p)


def test_blob_all_bytes_into_file_bind(d):
    c = d.connect()
    expect_status(c.request("CREATE TABLE audit_blobs (id INTEGER PRIMARY KEY, b BLOB)"),
                  "+OK changes=0")
    expect_status(c.inline("INSERT INTO audit_blobs (b) VALUES (?)", [ALL_BYTES]),
                  "+OK changes=1 last_id=1")
    expect_status(c.bulk("INSERT INTO audit_blobs (b) VALUES (?)", [ALL_BYTES[::-1]]),
                  "+OK changes=1 last_id=2")
    r = c.request("SELECT b, length(b) FROM audit_blobs ORDER BY id")
    expect_rows(r, [[ALL_BYTES, "256"], [ALL_BYTES[::-1], "256"]],
                [("b", "BLOB"), ("length(b)", "")])
    eq(d.file_query("second.db", "SELECT b FROM audit_blobs ORDER BY id"),
       [(ALL_BYTES,), (ALL_BYTES[::-1],)], "blobs in second.db")


def test_uppercase_hex_parameter(d):
    c = d.connect()
    # "an even number of hex digits": upper-case digits are hex digits too.
    expect_rows(c.inline("SELECT hex(?) AS h", [Raw(b"b00FFaB")]), [["00FFAB"]])


def test_declared_types_in_header(d):
    c = d.connect()
    expect_status(c.request("CREATE TABLE typed (i INTEGER, r REAL, t TEXT, b BLOB, "
                            "v VARCHAR(10), n NUMERIC(10,2), x)"), "+OK changes=0")
    expect_ok(c.request("INSERT INTO typed VALUES (1, 2.5, 't', X'01', 'v', 3, NULL)"))
    r = c.request("SELECT i, r, t, b, v, n, x, i + 1 AS expr, typed.t AS alias FROM typed")
    expect_rows(r, [["1", "2.5", "t", b"\x01", "v", "3", None, "2", "t"]],
                [("i", "INTEGER"), ("r", "REAL"), ("t", "TEXT"), ("b", "BLOB"),
                 ("v", "VARCHAR(10)"), ("n", "NUMERIC(10,2)"), ("x", ""), ("expr", ""),
                 ("alias", "TEXT")])
    eq(r.raw[0], b"*i\tINTEGER\tr\tREAL\tt\tTEXT\tb\tBLOB\tv\tVARCHAR(10)\tn\tNUMERIC(10,2)"
                 b"\tx\t\texpr\t\talias\tTEXT", "raw header")
    r = c.request("SELECT * FROM test3")
    eq(r.raw[0], b"*id\tINTEGER\tcolor\tVARCHAR(64)", "test3 header")


def test_column_names_escaped(d):
    c = d.connect()
    r = c.request('SELECT 1 AS "a\tb", 2 AS "c\\d", 3 AS "\u00e9"')
    expect_rows(r, [["1", "2", "3"]], [("a\tb", ""), ("c\\d", ""), ("\u00e9", "")])
    eq(r.raw[0], b"*a\\tb\t\tc\\\\d\t\t\xc3\xa9\t", "raw header")
    r = c.bulk('SELECT 1 AS "x\ny", 2 AS "p\rq"')
    expect_rows(r, [["1", "2"]], [("x\ny", ""), ("p\rq", "")])
    eq(r.raw[0], b"*x\\ny\t\tp\\rq\t", "raw header")


def test_empty_and_null_fields_in_a_row(d):
    c = d.connect()
    r = c.request("SELECT '' AS a, NULL AS b, '' AS c, 'NULL' AS d, '\\N' AS e")
    eq(r.raw, [b"*a\t\tb\t\tc\t\td\t\te\t", b"=\t\\N\t\tNULL\t\\\\N", b"+OK rows=1"], "raw")
    eq(r.rows, [["", None, "", "NULL", "\\N"]], "rows")


def test_bad_parameter_lines(d):
    c = d.connect()
    bad = [b"zfoo", b"b0", b"bzz", b"b0g", b"iabc", b"i", b"i12x", b"i9223372036854775808",
           b"rabc", b"r", b"rnan", b"t\\q", b"x"]
    p = []
    for line in bad:
        r = c.inline("SELECT ? AS v", [Raw(line)])
        if r.err_code != "PROTO":
            p.append("parameter line %r: want -ERR PROTO, got %r" % (line, r))
        r = c.request(".ping")
        if r.raw != [b"+OK"]:
            p.append("after %r: stream out of step, .ping got %r" % (line, r))
    _report(p)


def test_int_and_real_edge_parameters(d):
    c = d.connect()
    expect_rows(c.inline("SELECT ? + 0 AS a", [Raw(b"i-0")]), [["0"]])
    expect_rows(c.inline("SELECT ? AS a", [Raw(b"r3.25")]), [["3.25"]])
    expect_rows(c.inline("SELECT ? AS a", [Raw(b"r-1e300")]), [["-1e+300"]])
    expect_rows(c.inline("SELECT ? AS a", [Raw(b"rinf")]), [["inf"]])
    expect_rows(c.inline("SELECT ? AS a", [Raw(b"i-9223372036854775808")]),
                [["-9223372036854775808"]])


def test_text_parameter_not_interpreted(d):
    # A parameter is data: SQL syntax inside it does nothing.
    c = d.connect()
    evil = "x'); DROP TABLE test1; --"
    expect_status(c.inline("INSERT INTO test1 (color) VALUES (?)", [evil]),
                  "+OK changes=1 last_id=1")
    expect_status(c.bulk("INSERT INTO test1 (color) VALUES (?)", [evil]),
                  "+OK changes=1 last_id=2")
    expect_rows(c.request("SELECT color FROM test1 ORDER BY id"), [[evil], [evil]])
    eq(d.file_tables("app.db"), ["test1"], "app.db tables")
    eq(d.file_query("app.db", "SELECT color FROM test1"), [(evil,), (evil,)])


def test_last_id_not_from_another_session():
    # last_id is "the rowid of the last row it inserted": a statement that
    # inserts nothing must not report a rowid some other client inserted on
    # the same pooled connection (pool_size 1 makes them share it).
    with Daemon(bind_opts={"second_db": {"pool_size": "1"}}) as d:
        _last_id_check(d)


def _last_id_check(d):
    a = d.connect()
    expect_status(a.request("INSERT INTO test2 (id, color) VALUES (77, 'a')"), "+OK changes=1 last_id=77")
    bad = []
    for i in range(8):
        b = d.connect()
        r = expect_ok(b.request("INSERT INTO test2 (color) SELECT color FROM test2 WHERE 0"))
        if r.facts.get("changes") != "0" or r.facts.get("last_id") not in (None, "0"):
            bad.append(r.status)
        r = expect_ok(b.request("INSERT INTO test2 (id, color) VALUES (77, 'b') "
                                "ON CONFLICT (id) DO UPDATE SET color = excluded.color"))
        if r.facts.get("last_id") not in (None, "0", "77"):
            bad.append(r.status)
        b.close()
    if bad:
        raise TestFailure("statements that inserted no row reported another session's "
                          "last_id: %r" % bad)

"""sqlmux: a PEP 249 (DB-API 2.0) driver for the sqlmux daemon.

    import sqlmux
    con = sqlmux.connect("sqlmux://127.0.0.1:7654/second_db")
    cur = con.cursor()
    cur.execute("INSERT INTO test2 (color) VALUES (?)", ("green",))
    con.commit()
    for id, color in cur.execute("SELECT id, color FROM test2"):
        print(id, color)

The wire work (libsqlmux) and the decoding of rows run in the C extension
sqlmux._sqlmux; this module is the PEP 249 surface: URLs, transactions,
cursors, the exception hierarchy and the type conversions that are not
hot paths.

Rows stream: a cursor holds the one row it is on (the C extension steps a
libsqlmux streaming result), so iterating over a cursor, or calling
fetchone()/fetchmany(), keeps memory flat whatever the number of rows;
fetchall() of course holds them all. Running another statement on the same
connection while a cursor still has rows to give reads those rows into that
cursor first (the connection carries one response at a time).

Transactions work as PEP 249 and the sqlite3 module say: unless autocommit
is on, the first statement after connect(), commit() or rollback() is
preceded by BEGIN; commit() and rollback() end it. SQL that begins or ends
a transaction itself (BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK) is
followed too, so in_transaction stays true to the daemon; SAVEPOINT,
RELEASE and ROLLBACK TO work inside the transaction.

The implicit BEGIN carries the connection's transaction characteristics,
as psycopg2's set_session() does: isolation_level ("SERIALIZABLE", ...
on a PostgreSQL bind; "DEFERRED", "IMMEDIATE" or "EXCLUSIVE" on a SQLite
bind), readonly and deferrable (PostgreSQL). They go on every BEGIN rather
than into the server's session (SET SESSION CHARACTERISTICS), since a
PostgreSQL bind's session state lasts one transaction (README, PostgreSQL
binds).
"""

import collections.abc
import datetime
import decimal
import os
import re
import time
import urllib.parse
import uuid

from . import _sqlmux

apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"
__version__ = _sqlmux.libsqlmux_version

DEFAULT_PORT = 7654


# ---- Exceptions (PEP 249) ------------------------------------------------

class Warning(Exception):  # noqa: A001 (the name PEP 249 asks for)
    pass


class Error(Exception):
    """Every error of the driver. code: the daemon's -ERR code ("SQL",
    "CONSTRAINT", ...) or libsqlmux's ("CONNECTION", "NOREPLY", ...) or the
    driver's ("CLOSED", "RANGE", "TYPE", "INUSE"); sqlstate (also pgcode):
    a PostgreSQL bind's SQLSTATE, else None."""

    def __init__(self, message="", code=None, sqlstate=None):
        super().__init__(message)
        self.code = code
        self.sqlstate = sqlstate
        self.pgcode = sqlstate

    def __str__(self):
        msg = super().__str__()
        return "%s %s" % (self.code, msg) if self.code else msg


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class NotSupportedError(DatabaseError):
    pass


class NotPermittedError(DatabaseError):
    """-ERR NOPERM (the user's grants do not allow it) and -ERR DENIED (the
    daemon refuses it for safety, or PostgreSQL's insufficient_privilege)."""


_CODE_CLASS = {
    "CONSTRAINT": IntegrityError,
    "BUSY": OperationalError, "TIMEOUT": OperationalError, "CONNLOST": OperationalError,
    "UNAVAILABLE": OperationalError, "QUEUEFULL": OperationalError, "MAXCLIENTS": OperationalError,
    "SHUTDOWN": OperationalError, "INTERRUPTED": OperationalError, "FULL": OperationalError,
    "IOERR": OperationalError, "READONLY": OperationalError, "NOMEM": OperationalError,
    "CONNECTION": OperationalError, "NOREPLY": OperationalError, "CANCELLED": OperationalError,
    "AUTH": OperationalError, "NOAUTH": OperationalError, "CONFIG": OperationalError,
    "SQL": OperationalError,  # as the sqlite3 module; a SQLSTATE refines it below
    "TOOBIG": DataError, "MISMATCH": DataError, "RANGE": DataError,
    "CORRUPT": DatabaseError, "MIGRATION": DatabaseError,
    "NOPERM": NotPermittedError, "DENIED": NotPermittedError,
    "SYNTAX": ProgrammingError, "MULTI": ProgrammingError, "PARAMS": ProgrammingError,
    "CROSSBIND": ProgrammingError, "TXNBIND": ProgrammingError, "NOBIND": ProgrammingError,
    "UNKNOWN": ProgrammingError, "ARGS": ProgrammingError, "PROTO": ProgrammingError,
    "TOOLONG": ProgrammingError, "CLOSED": ProgrammingError, "TYPE": ProgrammingError,
    "INUSE": ProgrammingError,
    "MISUSE": InterfaceError, "BADREPLY": InterfaceError,
    "INTERNAL": InternalError,
}

# PostgreSQL SQLSTATE classes, as psycopg2 maps them.
_SQLSTATE_CLASS = {
    "0A": NotSupportedError, "21": ProgrammingError, "22": DataError, "23": IntegrityError,
    "24": InternalError, "25": InternalError, "26": InternalError, "27": OperationalError,
    "28": OperationalError, "2B": InternalError, "2D": InternalError, "2F": InternalError,
    "34": ProgrammingError, "3B": InternalError, "3D": ProgrammingError, "3F": ProgrammingError,
    "40": OperationalError, "42": ProgrammingError, "44": ProgrammingError, "53": OperationalError,
    "54": OperationalError, "55": OperationalError, "57": OperationalError, "58": OperationalError,
    "XX": InternalError,
}

_SQLSTATE_RE = re.compile(r"\(SQLSTATE ([0-9A-Z]{5})\)\s*$")


def _error(code, message):
    """The exception for a -ERR code and message (the C extension raises
    what this returns)."""
    m = _SQLSTATE_RE.search(message)
    sqlstate = m.group(1) if m else None
    cls = _CODE_CLASS.get(code, DatabaseError)
    if sqlstate is not None and code in ("SQL", "DENIED", "MISMATCH", "BUSY"):
        if sqlstate == "42501":
            cls = NotPermittedError
        else:
            cls = _SQLSTATE_CLASS.get(sqlstate[:2], cls)
    return cls(message, code, sqlstate)


# ---- Types (PEP 249) -----------------------------------------------------

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime
Binary = bytes


def DateFromTicks(ticks):
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks):
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks):
    return Timestamp(*time.localtime(ticks)[:6])


class _TypeSet(frozenset):
    """Compares equal to a description's type_code when it holds it."""

    def __eq__(self, other):
        if isinstance(other, str):
            return other.split("(")[0].strip().lower() in self
        return frozenset.__eq__(self, other)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = frozenset.__hash__


STRING = _TypeSet({"text", "varchar", "char", "character", "bpchar", "name", "clob", "json", "jsonb",
                   "uuid", "character varying", "nvarchar", "nchar", "string"})
BINARY = _TypeSet({"blob", "bytea"})
NUMBER = _TypeSet({"integer", "int", "int2", "int4", "int8", "bigint", "smallint", "real", "float",
                   "float4", "float8", "double", "double precision", "numeric", "decimal", "oid",
                   "boolean", "bool"})
DATETIME = _TypeSet({"date", "time", "timetz", "timestamp", "timestamptz", "datetime", "interval"})
ROWID = _TypeSet({"rowid", "oid"})


def _adapt(value):
    """A parameter of a type the C extension does not take itself, as one it
    does (text, mostly)."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat(" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return "%d days %d seconds %d microseconds" % (value.days, value.seconds, value.microseconds)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise ProgrammingError("unsupported parameter type %s" % type(value).__name__, "TYPE")


def _pg_date(s):
    try:
        return datetime.date.fromisoformat(s)
    except ValueError:
        return s  # infinity, BC dates: as PostgreSQL wrote them


def _pg_timestamp(s):
    try:
        return datetime.datetime.fromisoformat(s)
    except ValueError:
        return s


def _pg_time(s):
    try:
        return datetime.time.fromisoformat(s)
    except ValueError:
        return s


_INTERVAL_RE = re.compile(
    r"^(?:(?P<y>[-+]?\d+) years? ?)?(?:(?P<mo>[-+]?\d+) mons? ?)?(?:(?P<d>[-+]?\d+) days? ?)?"
    r"(?:(?P<sign>[-+])?(?P<h>\d+):(?P<mi>\d+):(?P<s>\d+(?:\.\d+)?))?$")


def _pg_interval(s):
    """PostgreSQL's interval output (IntervalStyle postgres) as a timedelta;
    a month counts 30 days and a year 365, as psycopg2 does."""
    m = _INTERVAL_RE.match(s)
    if m is None:
        return s
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    days = int(g.get("y", 0)) * 365 + int(g.get("mo", 0)) * 30 + int(g.get("d", 0))
    secs = int(g.get("h", 0)) * 3600 + int(g.get("mi", 0)) * 60 + float(g.get("s", 0))
    if g.get("sign") == "-":
        secs = -secs
    return datetime.timedelta(days=days, seconds=secs)


def _pg_numeric(s):
    return decimal.Decimal(s)


def _pg_array_parse(s, elem):
    """PostgreSQL's text form of an array, "{1,2}", "{{a,"b c"},{NULL,\\"}}",
    as nested lists (as psycopg2 gives them), each element through elem;
    None for NULL. Text it does not read (bounds "[0:1]={...}") stays
    text."""
    if not s.startswith("{"):
        return s
    stack = [[]]
    i, n = 1, len(s)
    while i < n:
        ch = s[i]
        if ch == "{":
            stack.append([])
            i += 1
        elif ch == "}":
            done = stack.pop()
            if not stack:
                return done if i == n - 1 else s
            stack[-1].append(done)
            i += 1
        elif ch == ",":
            i += 1
        elif ch == '"':
            out = []
            i += 1
            while i < n and s[i] != '"':
                if s[i] == "\\":
                    i += 1
                out.append(s[i:i + 1])
                i += 1
            stack[-1].append(elem("".join(out)))
            i += 1
        else:
            j = i
            while j < n and s[j] not in ",}":
                j += 1
            tok = s[i:j].strip()
            stack[-1].append(None if tok == "NULL" else elem(tok))
            i = j
    return s


def _pg_array(elem):
    return lambda s: _pg_array_parse(s, elem)


def _pg_bool(s):
    return s == "t"


_PG_ARRAYS = {"_int2": int, "_int4": int, "_int8": int, "_oid": int, "_float4": float, "_float8": float,
              "_bool": _pg_bool, "_numeric": _pg_numeric, "_text": str, "_varchar": str, "_bpchar": str,
              "_name": str, "_char": str}

_PG_CONV = {
    "int2": _sqlmux.CONV_INT, "int4": _sqlmux.CONV_INT, "int8": _sqlmux.CONV_INT, "oid": _sqlmux.CONV_INT,
    "float4": _sqlmux.CONV_FLOAT, "float8": _sqlmux.CONV_FLOAT, "bool": _sqlmux.CONV_BOOL,
    "numeric": _pg_numeric, "date": _pg_date, "timestamp": _pg_timestamp,
    "timestamptz": _pg_timestamp, "time": _pg_time, "timetz": _pg_time, "interval": _pg_interval,
}
_PG_CONV.update((name, _pg_array(elem)) for name, elem in _PG_ARRAYS.items())


def _sqlite_conv(decl):
    """SQLite's type affinity rules (datatype3.html 3.1) for a declared
    type: text columns give str, the others int/float when the text is
    one (an expression has no declared type: the same)."""
    d = decl.upper()
    if "INT" in d:
        return _sqlmux.CONV_INT
    if "CHAR" in d or "CLOB" in d or "TEXT" in d:
        return _sqlmux.CONV_TEXT
    if "REAL" in d or "FLOA" in d or "DOUB" in d:
        return _sqlmux.CONV_FLOAT
    return _sqlmux.CONV_AUTO


_conv_cache = {}


def _converters_for(types, kind):
    key = (types, kind)
    convs = _conv_cache.get(key)
    if convs is None:
        if kind == "postgresql":
            convs = tuple(_PG_CONV.get(t, _sqlmux.CONV_TEXT) for t in types)
        else:
            convs = tuple(_sqlite_conv(t) for t in types)
        if len(_conv_cache) > 1024:
            _conv_cache.clear()
        _conv_cache[key] = convs
    return convs


_sqlmux.set_hooks(_error, _adapt, _converters_for)


# ---- URLs -----------------------------------------------------------------

def parse_url(url):
    """Split a driver URL into (libsqlmux URL, bind or None, options).

    sqlmux://[USER[:PASSWORD]@]HOST[:PORT][/BIND][?OPTIONS]
    sqlmuxs://[USER[:PASSWORD]@]HOST[:PORT][/BIND][?OPTIONS]  (TLS)
    sqlmux://[USER[:PASSWORD]@]/[BIND]?socket=PATH[&OPTIONS]   (unix socket)
    unix://PATH[?user=USER&password=PASSWORD]                 (libsqlmux's)

    OPTIONS: user, password (percent-encoded, as in libsqlmux), socket,
    bind, timeout (seconds), and libsqlmux's TLS options: tls=require,
    tls=insecure or tls=off, tls_ca=, tls_cert=, tls_key= (file paths,
    percent-decoded here; $SQLMUX_TLS_CA, $SQLMUX_TLS_CERT and
    $SQLMUX_TLS_KEY stand in for the paths not given). Other options are
    returned for the caller.
    """
    if url is None or url == "":
        url = os.environ.get("SQLMUX_URL") or "sqlmux://127.0.0.1:%d" % DEFAULT_PORT
    if url.startswith("unix://"):
        return url, None, {}
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme not in ("sqlmux", "sqlmuxs"):
        raise InterfaceError("not a sqlmux URL: %r (want sqlmux://HOST:PORT/BIND or sqlmuxs://...)" % url,
                             "MISUSE")
    opts = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    bind = parts.path.strip("/") or opts.pop("bind", None) or None
    if bind is not None:
        bind = urllib.parse.unquote(bind)
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    auth = []
    if userinfo:
        user, _, password = userinfo.partition(":")
        auth.append("user=" + user)
        if _:
            auth.append("password=" + password)
    # user/password options stay percent-encoded: libsqlmux decodes them.
    raw_q = dict(p.split("=", 1) if "=" in p else (p, "") for p in parts.query.split("&") if p)
    for k in ("user", "password"):
        opts.pop(k, None)
        if k in raw_q:
            auth.append("%s=%s" % (k, raw_q[k]))
    # TLS options go to libsqlmux, which takes paths as written (no %XX).
    # On a unix socket they reach libsqlmux too, which refuses them there.
    if scheme == "sqlmuxs" and "tls" not in opts:
        opts["tls"] = "require"
    for k in _TLS_OPTIONS:
        v = opts.pop(k, None)
        if v is None:
            continue
        if "&" in v:
            raise InterfaceError("%s=%r: libsqlmux takes no '&' in a TLS option" % (k, v), "MISUSE")
        auth.append("%s=%s" % (k, v))
    socket = opts.pop("socket", None)
    if socket is not None:
        lib = "unix://" + socket
    else:
        lib = "sqlmux://" + (hostport or "127.0.0.1:%d" % DEFAULT_PORT)
    if auth:
        lib += "?" + "&".join(auth)
    return lib, bind, opts


_TLS_OPTIONS = ("tls", "tls_ca", "tls_cert", "tls_key")


# ---- Connections and cursors ---------------------------------------------

# The first keyword of a statement, after blanks and comments.
_FIRST_WORDS_RE = re.compile(r"(?:\s+|--[^\n]*\n?|/\*.*?\*/)*([A-Za-z]+)(?:\s+([A-Za-z]+))?", re.S)
_NO_TXN = frozenset({"VACUUM"})


_sql_cache = {}  # SQL text -> (_txn_effect, _returns_changes), the hot path's


def _sql_facts(sql):
    """(_txn_effect(sql), _returns_changes(sql)), remembered per text."""
    facts = _sql_cache.get(sql)
    if facts is None:
        facts = (_txn_effect(sql), _returns_changes(sql))
        if len(_sql_cache) > 1024:
            _sql_cache.clear()
        _sql_cache[sql] = facts
    return facts


def _txn_effect(sql):
    """What a statement does to the transaction: "begin", "end", "none"
    (needs no BEGIN before it: the statement is itself transaction control
    or cannot run in one), or None (an ordinary statement)."""
    m = _FIRST_WORDS_RE.match(sql)
    if m is None:
        return None
    w = m.group(1).upper()
    second = (m.group(2) or "").upper()
    if w == "BEGIN" or (w == "START" and second == "TRANSACTION"):
        return "begin"
    if w in ("COMMIT", "END", "ABORT") or (w == "ROLLBACK" and second != "TO"):
        return "end"
    if w in _NO_TXN:
        return "none"
    return None


_PG_LEVELS = ("READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE")
_SQLITE_LEVELS = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")


class Connection:
    """A connection to sqlmuxd (see connect())."""

    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    def __init__(self, url=None, *, bind=None, user=None, password=None, timeout=None, autocommit=False):
        lib_url, url_bind, opts = parse_url(url)
        if timeout is None:
            timeout = float(opts.get("timeout", 0) or 0)
        self._conn = _sqlmux.Conn(lib_url, user, password, int(timeout * 1000))
        self.bind = bind or url_bind
        if self.bind is not None:
            self._conn.command(".use " + self.bind)
        self.backend = self._bind_kind(self.bind or "default")
        self._conn.kind = self.backend
        self._autocommit = bool(autocommit)
        self.in_transaction = False
        self._isolation_level = None
        self._readonly = False
        self._deferrable = False
        self._begin = "BEGIN"

    def _bind_kind(self, name):
        """"postgresql" or "sqlite": what the daemon's .binds says the bind
        is (sqlite and sqlite-memory are both "sqlite")."""
        for row in self._conn.command(".binds"):
            if row[0] == name:
                return "postgresql" if row[1] == "postgresql" else "sqlite"
        return "sqlite"

    # autocommit, as the sqlite3 module's: turning it on commits an open
    # transaction.
    @property
    def autocommit(self):
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value):
        value = bool(value)
        if value and not self._autocommit and self.in_transaction:
            self.commit()
        self._autocommit = value

    # The transaction characteristics of the implicit BEGIN, from the next
    # transaction on (the one open, if any, keeps its own).
    @property
    def isolation_level(self):
        """None (the server's default), or on a PostgreSQL bind "READ
        UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE",
        on a SQLite bind "DEFERRED", "IMMEDIATE", "EXCLUSIVE": the words of
        the implicit BEGIN."""
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, value):
        if value is not None:
            value = " ".join(str(value).replace("_", " ").upper().split())
            levels = _PG_LEVELS if self.backend == "postgresql" else _SQLITE_LEVELS
            if value not in levels:
                raise ProgrammingError("isolation_level must be None or one of %s" % ", ".join(levels), "MISUSE")
        self._isolation_level = value
        self._set_begin()

    @property
    def readonly(self):
        """PostgreSQL: transactions begin READ ONLY."""
        return self._readonly

    @readonly.setter
    def readonly(self, value):
        self._readonly = self._pg_only(value, "readonly")
        self._set_begin()

    @property
    def deferrable(self):
        """PostgreSQL: transactions begin DEFERRABLE (with SERIALIZABLE and
        readonly, PostgreSQL's wait for a safe snapshot)."""
        return self._deferrable

    @deferrable.setter
    def deferrable(self, value):
        self._deferrable = self._pg_only(value, "deferrable")
        self._set_begin()

    def _pg_only(self, value, name):
        value = bool(value)
        if value and self.backend != "postgresql":
            raise NotSupportedError("%s is a PostgreSQL bind's transaction characteristic" % name, "MISUSE")
        return value

    def _set_begin(self):
        words = ["BEGIN"]
        if self._isolation_level is not None:
            words += ["ISOLATION LEVEL"] if self.backend == "postgresql" else []
            words.append(self._isolation_level)
        if self._readonly:
            words.append("READ ONLY")
        if self._deferrable:
            words.append("DEFERRABLE")
        self._begin = " ".join(words)

    @property
    def tls(self):
        """"TLSv1.3 TLS_AES_256_GCM_SHA384" (protocol and cipher) on a TLS
        connection (sqlmuxs://, ?tls=require), None on plain text."""
        return self._check().tls

    @property
    def closed(self):
        return self._conn is None or self._conn.closed

    def _check(self):
        if self._conn is None:
            raise ProgrammingError("the connection is closed", "CLOSED")
        return self._conn

    def _run(self, sql, params):
        """Send one statement, with BEGIN first when one is due. Returns the
        C Result."""
        conn = self._check()
        effect = _sql_facts(sql)[0]
        if effect is None and not self._autocommit and not self.in_transaction:
            conn.execute(self._begin)
            self.in_transaction = True
        try:
            result = conn.execute(sql, params)
        finally:
            if effect == "end":
                self.in_transaction = False
        if effect == "begin":
            self.in_transaction = True
        return result

    def command(self, line):
        """Run a dot-command (".tables", ".route SQL", ...): its rows as a
        list of tuples of str."""
        return self._check().command(line).fetchmany(-1)

    def cursor(self):
        return Cursor(self)

    def execute(self, sql, params=None):
        """A new cursor's execute(), as the sqlite3 module offers."""
        return self.cursor().execute(sql, params)

    def executemany(self, sql, seq_of_params):
        return self.cursor().executemany(sql, seq_of_params)

    def commit(self):
        conn = self._check()
        if self.in_transaction:
            conn.execute("COMMIT")
            self.in_transaction = False

    def rollback(self):
        conn = self._check()
        if self.in_transaction:
            self.in_transaction = False
            conn.execute("ROLLBACK")

    def close(self):
        """Close; an open transaction is rolled back by the daemon."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # As the sqlite3 module and psycopg2: commit or roll back, stay open.
        if self._conn is None:
            return False
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# Named parameters (:name, as the sqlite3 module takes them with a
# mapping): the ones outside string literals, quoted identifiers, comments,
# PostgreSQL's $$ strings and :: casts.
_NAMED_RE = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|\$\$.*?\$\$|::"""
                       r"""|:([A-Za-z_][A-Za-z0-9_]*)""", re.S)
_named_cache = {}


def _named_to_qmark(sql, mapping):
    """(qmark SQL, parameter tuple) for SQL with :name parameters and a
    mapping of their values."""
    conv = _named_cache.get(sql)
    if conv is None:
        names = []

        def sub(m):
            if m.group(1) is None:
                return m.group(0)
            names.append(m.group(1))
            return "?"

        conv = (_NAMED_RE.sub(sub, sql), tuple(names))
        if len(_named_cache) > 1024:
            _named_cache.clear()
        _named_cache[sql] = conv
    qsql, names = conv
    if not names and mapping and "?" in qsql:
        raise ProgrammingError("parameters given as a mapping, but the SQL has ? (pass a sequence)", "TYPE")
    try:
        return qsql, tuple(mapping[n] for n in names)
    except KeyError as e:
        raise ProgrammingError("no value for the parameter :%s" % e.args[0], "PARAMS") from None


def _returns_changes(sql):
    m = _FIRST_WORDS_RE.match(sql)
    return m is not None and m.group(1).upper() in ("INSERT", "UPDATE", "DELETE", "REPLACE")


_desc_cache = {}  # columns -> description


class _Rows:
    """Rows read ahead, with a streaming Result's fetch methods."""

    def __init__(self, rows):
        self.rows = rows
        self.pos = 0

    def fetchone(self):
        if self.pos >= len(self.rows):
            return None
        self.pos += 1
        return self.rows[self.pos - 1]

    def fetchmany(self, n):
        end = len(self.rows) if n < 0 else self.pos + n
        out = self.rows[self.pos:end]
        self.pos += len(out)
        return out

    def close(self):
        self.rows = []
        self.pos = 0

    def __iter__(self):
        return self

    def __next__(self):
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row


class Cursor:
    """A PEP 249 cursor. Iterating over it streams the rows (the rows of
    INSERT, UPDATE or DELETE ... RETURNING are read at execute(), to count
    them)."""

    def __init__(self, connection):
        self.connection = connection
        self.arraysize = 1
        self._result = None
        self.description = None
        self.rowcount = -1
        self.lastrowid = None
        self._closed = False

    def _check(self):
        if self._closed:
            raise ProgrammingError("the cursor is closed", "CLOSED")
        self.connection._check()

    def _reset(self):
        if self._result is not None:
            self._result.close()
            self._result = None
        self.description = None
        self.rowcount = -1

    def execute(self, sql, params=None):
        self._check()
        self._reset()
        if params is not None and not isinstance(params, (tuple, list)):
            if isinstance(params, collections.abc.Mapping):
                sql, params = _named_to_qmark(sql, params)
            else:
                params = tuple(params)
        r = self.connection._run(sql, params)
        cols = r.columns
        if cols:
            desc = _desc_cache.get(cols)
            if desc is None:
                desc = tuple((name, decl, None, None, None, None, None) for name, decl in cols)
                if len(_desc_cache) > 1024:
                    _desc_cache.clear()
                _desc_cache[cols] = desc
            self.description = desc
        self.rowcount = r.changes
        if r.last_id is not None:
            self.lastrowid = r.last_id
        self._result = r if cols else None
        if cols and _sql_facts(sql)[1]:
            # INSERT/UPDATE/DELETE ... RETURNING: rowcount is the rows
            # changed, known once they are read (as psycopg2 has them).
            self._result = _Rows(r.fetchmany(-1))
            self.rowcount = len(self._result.rows)
        return self

    def executemany(self, sql, seq_of_params):
        self._check()
        self._reset()
        total = 0
        for params in seq_of_params:
            self.execute(sql, params)
            if self.rowcount > 0:
                total += self.rowcount
        self.rowcount = total
        self._result = None
        self.description = None
        return self

    def _res(self):
        self._check()
        if self._result is None:
            raise ProgrammingError("no result to fetch: execute() a statement that returns rows", "MISUSE")
        return self._result

    def fetchone(self):
        return self._res().fetchone()

    def fetchmany(self, size=None):
        return self._res().fetchmany(self.arraysize if size is None else size)

    def fetchall(self):
        return self._res().fetchmany(-1)

    def __iter__(self):
        # The C Result itself: a for loop steps it with no Python-level
        # call per row (next() on the cursor works too).
        return iter(self._res())

    def __next__(self):
        row = self._res().fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self):
        if self._result is not None:
            self._result.close()
            self._result = None
        self._closed = True

    def setinputsizes(self, sizes):
        pass

    def setoutputsize(self, size, column=None):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def connect(url=None, *, bind=None, user=None, password=None, timeout=None, autocommit=False):
    """Connect to sqlmuxd and return a Connection.

    url: see parse_url(); None means $SQLMUX_URL, else
    sqlmux://127.0.0.1:7654. bind: a bind to .use (the URL's path says the
    same). user, password: the login, in place of the URL's and of
    $SQLMUX_USER/$SQLMUX_PASSWORD (which libsqlmux reads otherwise).
    timeout: seconds for the connect and every later wait (None or 0:
    none). autocommit: each statement commits by itself (no implicit
    BEGIN).
    """
    return Connection(url, bind=bind, user=user, password=password, timeout=timeout, autocommit=autocommit)


def _register_dialect():
    """Make create_engine("sqlmux://...") work after `import sqlmux`, also
    without the installed entry point."""
    import sys
    if "sqlalchemy" not in sys.modules:
        return  # the dist-info's entry point registers it (see the Makefile)
    from sqlalchemy.dialects import registry
    registry.register("sqlmux", "sqlmux.dialect", "SQLmuxDialect")
    registry.register("sqlmux.sqlmux", "sqlmux.dialect", "SQLmuxDialect")
    registry.register("sqlmuxs", "sqlmux.dialect", "SQLmuxDialect")
    registry.register("sqlmuxs.sqlmux", "sqlmux.dialect", "SQLmuxDialect")


_register_dialect()

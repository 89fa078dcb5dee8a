"""The SQLAlchemy 1.4 dialect for sqlmux: create_engine("sqlmux://HOST:PORT/BIND").

A sqlmux bind is a SQLite database or a PostgreSQL one, and SQL must be
compiled for it. The URL alone does not say which, so SQLmuxDialect asks
the daemon (its .binds command) when the engine is created, and the engine
gets SQLmuxDialect_sqlite (a subclass of SQLAlchemy's own SQLiteDialect) or
SQLmuxDialect_postgresql (of PGDialect): compilation, DDL, reflection and
types are theirs; this module only fits the sqlmux DB-API driver under
them. `?backend=sqlite` or `?backend=postgresql` in the URL skips the
question (no connection at create_engine() time).

URL: sqlmux://[USER[:PASSWORD]@]HOST[:PORT][/BIND][?socket=PATH&timeout=SECONDS]
(without a BIND the connection uses the daemon's default bind), or
sqlmuxs://... for TLS, with the driver's tls=, tls_ca=, tls_cert= and
tls_key= options in the query. USER and PASSWORD may also come from
$SQLMUX_USER and $SQLMUX_PASSWORD.
"""

import decimal
import urllib.parse

from sqlalchemy import exc
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.postgresql.base import INTERVAL, PGDialect, _ColonCast
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import default
from sqlalchemy.sql.elements import TypeClause

import sqlmux


def _driver_url(url):
    """(driver URL, connect kwargs) for an SQLAlchemy URL."""
    query = dict(url.query)
    query.pop("backend", None)
    host = url.host or "127.0.0.1"
    if ":" in host:
        host = "[%s]" % host
    netloc = "%s:%d" % (host, url.port or sqlmux.DEFAULT_PORT)
    path = "/" + urllib.parse.quote(url.database, safe="") if url.database else "/"
    qs = urllib.parse.urlencode(query)
    kwargs = {}
    if url.username:
        kwargs["user"] = url.username
    if url.password is not None:
        kwargs["password"] = str(url.password)
    scheme = "sqlmuxs" if url.drivername.split("+")[0] == "sqlmuxs" else "sqlmux"
    return "%s://%s%s%s" % (scheme, netloc, path, "?" + qs if qs else ""), kwargs


class _SQLmuxMixin:
    driver = "sqlmux"
    supports_statement_cache = True

    @classmethod
    def dbapi(cls):
        return _DBAPI(cls._sqlite_version_info)

    _sqlite_version_info = (3, 40, 1)

    def create_connect_args(self, url):
        driver_url, kwargs = _driver_url(url)
        return [driver_url], kwargs

    def is_disconnect(self, e, connection, cursor):
        code = getattr(e, "code", None)
        return code in ("CONNECTION", "NOREPLY", "CANCELLED", "BADREPLY", "CLOSED", "CONNLOST")

    # autocommit is the driver's (no implicit BEGIN), as pysqlite's and
    # psycopg2's AUTOCOMMIT are theirs.
    def _set_autocommit(self, connection, level):
        dbapi_connection = getattr(connection, "dbapi_connection", connection)
        dbapi_connection.autocommit = level == "AUTOCOMMIT"
        return level == "AUTOCOMMIT"


class _DBAPI:
    """The sqlmux module, plus sqlite_version_info for SQLiteDialect."""

    def __init__(self, sqlite_version_info):
        self.sqlite_version_info = sqlite_version_info

    def __getattr__(self, name):
        return getattr(sqlmux, name)


class SQLmuxDialect_sqlite(_SQLmuxMixin, SQLiteDialect):
    """A SQLite bind behind sqlmux."""

    supports_statement_cache = True  # SQLAlchemy wants it on each class
    default_paramstyle = "qmark"

    def _get_server_version_info(self, connection):
        return self.dbapi.sqlite_version_info

    def get_isolation_level(self, connection):
        if getattr(connection, "autocommit", False):
            return "AUTOCOMMIT"
        return "SERIALIZABLE"

    def set_isolation_level(self, connection, level):
        if not self._set_autocommit(connection, level):
            # SERIALIZABLE is what a SQLite bind gives; READ UNCOMMITTED
            # (a PRAGMA that would change a pooled connection) is refused.
            if level.replace("_", " ") != "SERIALIZABLE":
                super().set_isolation_level(connection, level)

    def on_connect(self):
        if self.isolation_level is None:
            return None

        def connect(conn):
            self.set_isolation_level(conn, self.isolation_level)

        return connect


class _PGNumeric(sqltypes.Numeric):
    """Numeric results: the driver returns Decimal for numeric and float for
    float4/float8; give what the type asks for."""

    def bind_processor(self, dialect):
        return None

    def result_processor(self, dialect, coltype):
        if self.asdecimal:
            scale = self._effective_decimal_return_scale

            def process(value):
                if isinstance(value, float):
                    return decimal.Decimal(repr(value) if scale is None else "%.*f" % (scale, value))
                return value

            return process

        def to_float(value):
            if isinstance(value, decimal.Decimal):
                return float(value)
            return value

        return to_float


class _PGFloat(_PGNumeric, sqltypes.Float):
    pass


# Parameters reach PostgreSQL as text of unknown type (psycopg2 writes
# literals into the SQL instead, asyncpg and pg8000 cast): a parameter
# whose type PostgreSQL cannot infer ("SELECT ?", "? IS NULL") would be
# text or SQLSTATE 42P18. The types whose values travel as text are
# rendered with a cast, ?::date, as pg8000's dialect does for arrays.
class _BindCast:
    def bind_expression(self, bindvalue):
        return _ColonCast(bindvalue, self)


class _PGNumericCast(_PGNumeric):
    """?::numeric, without the column's precision and scale (a parameter
    is not rounded or refused before it reaches the column)."""

    def bind_expression(self, bindvalue):
        cast = _ColonCast(bindvalue, self)
        cast.typeclause = TypeClause(sqltypes.NUMERIC())
        return cast


class _PGDate(_BindCast, sqltypes.Date):
    pass


class _PGDateTime(_BindCast, sqltypes.DateTime):
    pass


class _PGTime(_BindCast, sqltypes.Time):
    pass


class _PGInterval(_BindCast, INTERVAL):
    @classmethod
    def adapt_emulated_to_native(cls, interval, **kw):
        return cls(precision=interval.second_precision)


class SQLmuxDialect_postgresql(_SQLmuxMixin, PGDialect):
    """A PostgreSQL bind behind sqlmux."""

    supports_statement_cache = True
    default_paramstyle = "qmark"
    colspecs = dict(PGDialect.colspecs)
    colspecs.update({sqltypes.Numeric: _PGNumericCast, sqltypes.Float: _PGFloat, sqltypes.Date: _PGDate,
                     sqltypes.DateTime: _PGDateTime, sqltypes.Time: _PGTime, sqltypes.Interval: _PGInterval,
                     INTERVAL: _PGInterval})

    # The level goes on the driver's implicit BEGIN (BEGIN ISOLATION LEVEL
    # ..., as psycopg2 does), not into SET SESSION CHARACTERISTICS as
    # PGDialect's would: a PostgreSQL bind's session settings last one
    # transaction. get_isolation_level() asks the server inside a
    # transaction, so it reports what the transactions really get.
    def set_isolation_level(self, connection, level):
        if not self._set_autocommit(connection, level):
            level = level.replace("_", " ")
            if level not in self._isolation_lookup:
                raise exc.ArgumentError("Invalid value '%s' for isolation_level. Valid isolation levels for %s are %s"
                                        % (level, self.name, ", ".join(self._isolation_lookup)))
            dbapi_connection = getattr(connection, "dbapi_connection", connection)
            dbapi_connection.autocommit = False
            # As psycopg2's set_isolation_level(): an open transaction
            # (get_isolation_level()'s, say) ends, so the level holds now.
            dbapi_connection.rollback()
            dbapi_connection.isolation_level = level

    def get_isolation_level(self, connection):
        if getattr(connection, "autocommit", False):
            return "AUTOCOMMIT"
        return super().get_isolation_level(connection)

    # postgresql_readonly and postgresql_deferrable execution options.
    def set_readonly(self, connection, value):
        connection.readonly = value

    def get_readonly(self, connection):
        return connection.readonly

    def set_deferrable(self, connection, value):
        connection.deferrable = value

    def get_deferrable(self, connection):
        return connection.deferrable

    def do_ping(self, dbapi_connection):
        return default.DefaultDialect.do_ping(self, dbapi_connection)


_KIND_CACHE = {}
_SQLITE_CLASSES = {}  # SQLite version -> dialect class


class SQLmuxDialect(SQLmuxDialect_sqlite):
    """The entry point: get_dialect_cls() asks the daemon what the URL's
    bind is and returns the SQLite or PostgreSQL dialect."""

    supports_statement_cache = True

    @classmethod
    def get_dialect_cls(cls, url):
        kind = url.query.get("backend")
        key = str(url)
        if kind is None and key in _KIND_CACHE:
            kind, version = _KIND_CACHE[key]
        elif kind is None:
            driver_url, kwargs = _driver_url(url)
            conn = sqlmux.connect(driver_url, autocommit=True, **kwargs)
            try:
                kind = conn.backend
                version = None
                if kind == "sqlite":
                    version = conn.execute("SELECT sqlite_version()").fetchone()[0]
            finally:
                conn.close()
            _KIND_CACHE[key] = (kind, version)
        else:
            version = None
        if kind == "postgresql":
            return SQLmuxDialect_postgresql
        if kind != "sqlite":
            raise ValueError("sqlmux URL: backend must be sqlite or postgresql, not %r" % kind)
        if version is None:
            return SQLmuxDialect_sqlite
        info = tuple(int(x) for x in version.split(".")[:3])
        if info not in _SQLITE_CLASSES:
            _SQLITE_CLASSES[info] = type("SQLmuxDialect_sqlite", (SQLmuxDialect_sqlite,),
                                         {"_sqlite_version_info": info, "supports_statement_cache": True})
        return _SQLITE_CLASSES[info]


dialect = SQLmuxDialect

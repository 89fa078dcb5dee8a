"""What SQLite (and PostgreSQL) offer, for SQLAlchemy's compliance suite: one
class for both runs of a backend (sqlmux and SQLAlchemy's own pysqlite or
psycopg2), so their results compare.
Features a sqlmux SQLite bind refuses for safety (temporary objects,
ATTACHed schemas) stay closed in both runs."""

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements


class Requirements(SuiteRequirements):
    @property
    def savepoints(self):
        return exclusions.open()

    @property
    def autocommit(self):
        return exclusions.open()

    @property
    def isolation_level(self):
        return exclusions.open()

    def get_isolation_levels(self, config):
        if config.db.dialect.name == "postgresql":
            return {"default": "READ COMMITTED",
                    "supported": ["SERIALIZABLE", "READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ",
                                  "AUTOCOMMIT"]}
        return {"default": "SERIALIZABLE", "supported": ["SERIALIZABLE", "AUTOCOMMIT"]}

    @property
    def server_side_cursors(self):
        # The suite's ServerSideCursorsTest tells a server-side cursor by
        # the driver's name (psycopg2, asyncpg, pg8000, ...: a TODO of
        # SQLAlchemy's says it is unusable by third-party dialects). sqlmux's
        # cursors always stream; the tests are off in both runs.
        return exclusions.closed()

    @property
    def json_type(self):
        return exclusions.open()

    @property
    def datetime_microseconds(self):
        return exclusions.open()

    @property
    def schemas(self):
        return exclusions.closed()

    @property
    def temp_table_reflection(self):
        return exclusions.closed()

    @property
    def temporary_tables(self):
        return exclusions.closed()

    @property
    def temporary_views(self):
        return exclusions.closed()

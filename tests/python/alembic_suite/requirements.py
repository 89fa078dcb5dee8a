"""What a SQLite bind offers, for Alembic's suite: one class for both runs
(sqlmux and SQLAlchemy's pysqlite on a plain file), so their results
compare. What a sqlmux SQLite bind refuses for safety (temporary objects,
ATTACHed schemas) stays closed in both runs, as in ../sqla/requirements.py."""

from alembic.testing.requirements import SuiteRequirements
from sqlalchemy.testing import exclusions


class Requirements(SuiteRequirements):
    @property
    def schemas(self):
        return exclusions.closed()

    @property
    def temp_table_reflection(self):
        return exclusions.closed()

    @property
    def temporary_tables(self):
        return exclusions.closed()

# Alembic's test suite for dialects (alembic.testing.suite), with the sqlmux
# dialect registered: SQLAlchemy's pytest plugin, as Alembic's own
# tests/conftest.py loads it. Run by tests/python/sqla_suite.py alembic,
# which starts the daemon and passes --dburi.
import pytest
from sqlalchemy.dialects import registry

registry.register("sqlmux", "sqlmux.dialect", "SQLmuxDialect")
registry.register("sqlmux.sqlmux", "sqlmux.dialect", "SQLmuxDialect")

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F401,F403

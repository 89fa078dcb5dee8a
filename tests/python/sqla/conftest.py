# SQLAlchemy's dialect compliance suite (README.dialects.rst of SQLAlchemy):
# its pytest plugin, with the sqlmux dialect registered. Run by
# tests/python/sqla_suite.py, which starts the daemon and passes --dburi.
import pytest
from sqlalchemy.dialects import registry

registry.register("sqlmux", "sqlmux.dialect", "SQLmuxDialect")
registry.register("sqlmux.sqlmux", "sqlmux.dialect", "SQLmuxDialect")

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F401,F403

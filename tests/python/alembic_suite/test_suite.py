# Every test of Alembic's suite for dialects.
from alembic.testing.suite import *  # noqa: F401,F403

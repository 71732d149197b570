"""Shared fixtures: an app on SQLite or PostgreSQL, on a clock the test controls.

PostgreSQL tests use the server on 127.0.0.1:5432 (user postgres, trust auth). Each test session creates its own
database and drops it at the end. Without a server those tests are skipped, and the summary says so, unless
REMIT_REQUIRE_POSTGRES=1 (as in CI), where an unreachable server is an error.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from remit.adapters.db.engine import make_engine, migrate
from remit.adapters.db.tables import metadata
from remit.bootstrap import Remit, read_engine
from remit.domain.clock import FixedClock

PG_ADMIN_URL = os.environ.get("REMIT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("REMIT_REQUIRE_POSTGRES") == "1"


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), connect_timeout=3):
            return None
    except Exception as exc:  # any failure to connect means "no server here"
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    problem = _pg_available()
    if problem is not None:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (REMIT_REQUIRE_POSTGRES=1) but unreachable: {problem}")
        pytest.skip(f"PostgreSQL tests skipped: no server on 127.0.0.1:5432 ({problem})")
    import psycopg

    name = f"remit_test_{uuid.uuid4().hex[:12]}"
    admin = PG_ADMIN_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return str(path)


def _empty_tables(app: Remit) -> None:
    with app.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, tmp_path: object, _sqlite_template: str) -> Iterator[Remit]:
    """A migrated, empty Remit on each database, on a fixed clock at 2026-01-01T00:00Z."""
    clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    if request.param == "sqlite":
        import shutil
        from pathlib import Path

        path = Path(str(tmp_path)) / "remit.db"
        shutil.copy(_sqlite_template, path)
        remit = Remit(make_engine(f"sqlite:///{path}"), clock)
    else:
        engine = make_engine(request.getfixturevalue("postgres_url"))
        remit = Remit(engine, clock, read_engine(engine))  # as bootstrap() builds it
        _empty_tables(remit)
    yield remit
    remit.dispose()


@pytest.fixture
def sqlite_app(tmp_path: object, _sqlite_template: str) -> Iterator[Remit]:
    """SQLite only: for tests of logic that does not depend on the database."""
    import shutil
    from pathlib import Path

    path = Path(str(tmp_path)) / "remit.db"
    shutil.copy(_sqlite_template, path)
    remit = Remit(make_engine(f"sqlite:///{path}"), FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    yield remit
    remit.engine.dispose()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if any("PostgreSQL tests skipped" in str(getattr(r, "longrepr", "")) for r in skipped):
        terminalreporter.write_line(
            "NOTE: PostgreSQL tests were SKIPPED (no server on 127.0.0.1:5432). CI runs them.", yellow=True
        )

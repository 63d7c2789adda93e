"""Developer sessions: `nox` runs tests, lint and typecheck; `nox -s NAME` runs one.

Every session installs the project into its own virtualenv with the extra it needs, so
`pip install nox && nox` works on a fresh clone. Arguments after `--` reach the tool:
`nox -s tests -- -k mailbox -x`.
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
LINT_PATHS = ["actors", "queueing", "tests", "examples", "bench", "noxfile.py"]

nox.options.sessions = ["tests", "lint", "typecheck"]
# No `python=` pin: sessions use the interpreter that runs nox, so CI chooses the Python.
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite, without the slow soak/stress tests (`nox -s slow` runs those) and
    the chaos scenarios (`nox -s chaos`), on two pytest-xdist workers (`--dist loadfile`:
    each worker starts its own private redis-servers, each test has its own Redis key
    prefix and RabbitMQ queue prefix). Serially: `nox -s tests -- -n 0`."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        *("-n", "2", "--dist", "loadfile"),
        *("-m", "not slow and not docs and not browser and not chaos"),
        *session.posargs,
    )


@nox.session
def slow(session: nox.Session) -> None:
    """Run only the tests marked `slow` (soak, stress; the chaos scenarios: `nox -s chaos`)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """Run the chaos scenarios (tests/chaos: worker and client processes killed or stopped,
    private redis-servers killed, stopped or flushed, foreign entries, SQLite files, a cut
    RabbitMQ connection) and print one table of what each kept; the table is also written
    to bench/results/chaos.md (docs/reliability.md quotes it)."""
    session.install("-e", ".[test,redis,amqp,cli]")
    table = ROOT / "bench" / "results" / "chaos.md"
    session.run(
        "pytest",
        "-m",
        "chaos",
        "tests/chaos",
        "tests/redis/test_backend_outage.py",  # the web developers' backend outage (issue 11)
        *session.posargs,
        env={"QUEUEING_CHAOS_TABLE": str(table)},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("-e", ".[lint]")
    paths = [p for p in LINT_PATHS if (ROOT / p).exists()]
    session.run("ruff", "check", *paths, *session.posargs)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on both packages."""
    session.install("-e", ".[lint]")
    session.run("mypy", "--strict", "actors", "queueing", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site; any warning (a broken link, a bad reference) fails."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def docs_browser(session: nox.Session) -> None:
    """Build the site and read it in headless Chromium at 1280 px (the `docs` tests): no
    code cut off, the home page on the queues, the API reference whole. Needs Chromium
    (`apt-get install chromium`; playwright cannot download browsers everywhere)."""
    session.install("-e", ".[docs,test]", "playwright")
    session.run("pytest", "-m", "docs", *session.posargs)


@nox.session
def dashboard_browser(session: nox.Session) -> None:
    """Drive the web dashboard in headless Chromium (the `browser` tests): the page shows
    the queues and a failed task, a requeue from the page works. With
    QUEUEING_SCREENSHOTS=docs/images it refreshes the docs' screenshots. Needs Chromium, as
    `docs_browser` does."""
    session.install("-e", ".[dashboard,test]", "playwright")
    session.run("pytest", "-m", "browser", *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Run every program in examples/, each in its own process; any failure fails."""
    session.install("-e", ".[examples,redis,cli,dashboard]")
    programs = sorted((ROOT / "examples").glob("*.py"))
    if not programs:
        session.error("no examples found in examples/")
    for program in programs:
        session.log(f"running {program.relative_to(ROOT)}")
        session.run("python", str(program))


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark in bench/ (pass `-- --quick` for small sizes)."""
    session.install("-e", ".[bench,redis,amqp,cli]")
    for program in sorted((ROOT / "bench").glob("*_bench.py")):
        session.log(f"running {program.relative_to(ROOT)}")
        session.run("python", str(program), *session.posargs)


@nox.session
def bench_sqlite(session: nox.Session) -> None:
    """SQLite broker benchmark against Huey's SQLite storage (`-- --quick` for a short run).
    Huey goes into its own environment under .bench-venv/ (from bench/requirements-huey.txt),
    never into this session's."""
    session.install("-e", ".[bench,cli]")
    session.run("python", str(ROOT / "bench" / "sqlite_bench.py"), *session.posargs)


@nox.session
def bench_redis(session: nox.Session) -> None:
    """Redis broker benchmark against streaq, taskiq, arq, dramatiq and Celery on a private
    redis-server (`-- --quick` for a short run). The peers go into their own environments
    under .bench-venv/ (from bench/requirements-peers.txt), never into this session's."""
    session.install("-e", ".[bench,redis,cli]")
    session.run("python", str(ROOT / "bench" / "redis_bench.py"), *session.posargs)


@nox.session
def bench_amqp(session: nox.Session) -> None:
    """RabbitMQ broker benchmark against dramatiq and Celery on the machine's RabbitMQ and a
    private redis-server (`-- --quick` for a short run); then how late delayed tasks start.
    The peers go into their own environment, .bench-venv/amqp-peers (from
    bench/requirements-amqp-peers.txt), never into this session's."""
    session.install("-e", ".[bench,amqp,cli]")
    session.run("python", str(ROOT / "bench" / "amqp_bench.py"), *session.posargs)
    session.run("python", str(ROOT / "bench" / "amqp_delay_bench.py"), *session.posargs)

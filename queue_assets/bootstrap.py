"""`queue-assets init`: pgmq, the queues and the hub schema, idempotently.

pgmq always comes from pgmq itself: `CREATE EXTENSION pgmq` where the server offers it, otherwise
the SQL install bundled in the official `pgmq` package. The hub's schema comes from the ordered
migrations in `sql/`, each recorded in `hub.schema_migrations` with its checksum. Everything runs
under one advisory lock, so concurrent `init`s serialise instead of racing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql

from . import db
from .db import one_row
from .names import validate_queue_name
from .queues import ALL_STATIC_QUEUES

MIN_PGMQ = (1, 11, 0)
_INIT_LOCK_KEY = 0x5141_494E  # "QAIN": serialises concurrent `queue-assets init`
_SQL_INSTALL_COMMENT = "pgmq {version} (SQL install from the pgmq Python package, by queue_assets)"


class BootstrapError(RuntimeError):
    """Bootstrap cannot go on; the message says why and what to do."""


@dataclass
class BootstrapReport:
    pgmq_version: str = ""
    pgmq_method: str = ""
    actions: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def summary(self) -> str:
        head = f"pgmq {self.pgmq_version} ({self.pgmq_method})"
        if not self.actions:
            return f"{head}; nothing to do: pgmq, queues and hub schema are already up to date"
        return head + "\n" + "\n".join(f"  + {a}" for a in self.actions)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def migrations_dir() -> Path:
    """The copy of `sql/` shipped in the wheel (`queue_assets/sql`); in a checkout, the top-level `sql/`."""
    packaged = Path(str(resources.files("queue_assets") / "sql"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


def load_migrations(directory: Path | None = None) -> list[tuple[str, str, str]]:
    """(version, checksum, text) for each `NNN_name.sql`, in order. Finding none is an error: an install
    without its migrations would otherwise "succeed" and leave the hub without its schema."""
    directory = migrations_dir() if directory is None else Path(directory)
    out = []
    for path in sorted(directory.glob("[0-9][0-9][0-9]_*.sql")):
        text = path.read_text(encoding="utf-8")
        out.append((path.stem, hashlib.sha256(text.encode()).hexdigest(), text))
    if not out:
        raise BootstrapError(
            f"no migrations (NNN_name.sql) found in {directory}: this install of queue_assets lacks its "
            "hub schema. Install it from a wheel built by `uv build` (which ships them as queue_assets/sql) "
            "or run it from a checkout that has sql/."
        )
    return out


def ensure_database(url: str) -> bool:
    """Create the database named in `url` if the server lacks it. Returns whether it was created."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    name = info.get("dbname")
    try:
        db.connect(url).close()
        return False
    except db.DatabaseUnavailable as exc:
        if "does not exist" not in str(exc) or not name:
            raise
    admin = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    with db.connection(admin, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
        except psycopg.errors.DuplicateDatabase:
            return False
    return True


def ensure_pgmq(conn: psycopg.Connection, report: BootstrapReport) -> None:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgmq'").fetchone()
    if row:
        _check_version(row[0], "installed extension")
        report.pgmq_version, report.pgmq_method = row[0], "extension"
        return
    (has_schema,) = one_row(conn.execute("SELECT to_regnamespace('pgmq') IS NOT NULL"), "the pgmq schema")
    if has_schema:
        (comment,) = one_row(
            conn.execute("SELECT obj_description('pgmq'::regnamespace, 'pg_namespace')"), "the pgmq comment"
        )
        (has_topics,) = one_row(
            conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'pgmq' AND p.proname = 'send_topic')"
            ),
            "whether pgmq.send_topic exists",
        )
        if not has_topics:
            raise BootstrapError(
                "the pgmq schema in this database is older than pgmq 1.11 (it has no pgmq.send_topic); "
                "queue_assets needs pgmq >= 1.11 for topic fan-out. Upgrade pgmq (ALTER EXTENSION pgmq "
                "UPDATE, or reinstall its SQL) and run `queue-assets init` again."
            )
        version = (
            (comment or "").split(" ")[1] if (comment or "").startswith("pgmq ") else "unknown (>= 1.11)"
        )
        report.pgmq_version, report.pgmq_method = version, "sql install"
        return
    available = conn.execute(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'pgmq'"
    ).fetchone()
    if available:
        _check_version(available[0], "extension offered by the server")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgmq")
        report.pgmq_version, report.pgmq_method = available[0], "extension"
        report.actions.append(f"CREATE EXTENSION pgmq (version {available[0]})")
        return
    import pgmq  # imported here: it pulls in SQLAlchemy, which the CLI's quick commands do without

    version = pgmq.get_embedded_sql_version()
    _check_version(version, "SQL bundled in the pgmq package")
    # The bundled install runs its script inside a transaction of its own on our connection.
    conn.commit()
    pgmq.install_pgmq_from_sql(conn=conn)
    conn.execute(
        sql.SQL("COMMENT ON SCHEMA pgmq IS {}").format(
            sql.Literal(_SQL_INSTALL_COMMENT.format(version=version))
        )
    )
    report.pgmq_version, report.pgmq_method = version, "sql install"
    report.actions.append(f"installed pgmq {version} from the SQL bundled in the pgmq package")


def _check_version(version: str, where: str) -> None:
    if _version_tuple(version) < MIN_PGMQ:
        raise BootstrapError(
            f"pgmq {version} ({where}) is too old: queue_assets needs pgmq >= "
            f"{'.'.join(map(str, MIN_PGMQ))} for topics (pgmq.send_topic / pgmq.bind_topic). "
            "Upgrade the extension (ALTER EXTENSION pgmq UPDATE) and run `queue-assets init` again."
        )


def ensure_queues(conn: psycopg.Connection, queues: tuple[str, ...], report: BootstrapReport) -> None:
    existing = {r[0] for r in conn.execute("SELECT queue_name FROM pgmq.meta")}
    for queue in queues:
        validate_queue_name(queue)
        if queue not in existing:
            conn.execute("SELECT pgmq.create(%s)", (queue,))
            report.actions.append(f"created queue {queue}")


def apply_migrations(
    conn: psycopg.Connection,
    report: BootstrapReport,
    migrations: list[tuple[str, str, str]] | None = None,
) -> None:
    """Apply the migrations not yet recorded in `hub.schema_migrations` (`load_migrations()` by default)."""
    if migrations is None:
        migrations = load_migrations()
    conn.execute("CREATE SCHEMA IF NOT EXISTS hub")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS hub.schema_migrations ("
        " version text PRIMARY KEY, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied: dict[str, str] = dict(
        conn.execute("SELECT version, checksum FROM hub.schema_migrations").fetchall()
    )
    for version, checksum, text in migrations:
        if version in applied:
            if applied[version] != checksum:
                raise BootstrapError(
                    f"migration {version} was changed after it was applied (checksum differs). "
                    "Migrations are append-only: put the change in a new numbered file under sql/."
                )
            continue
        conn.execute(text)
        conn.execute(
            "INSERT INTO hub.schema_migrations (version, checksum) VALUES (%s, %s)", (version, checksum)
        )
        report.actions.append(f"applied migration {version}")


def bootstrap(url: str, *, extra_steps=(), migrations: Path | None = None) -> BootstrapReport:
    """Bring the shared_queue database to the state the hub needs. Safe to run any number of times.

    `migrations` is the folder of `NNN_name.sql` files; by default `migrations_dir()`.
    """
    # Before anything touches the database: an install without its migrations stops here, loudly.
    migration_list = load_migrations(migrations)
    report = BootstrapReport()
    if ensure_database(url):
        report.actions.append("created database " + str(psycopg.conninfo.conninfo_to_dict(url).get("dbname")))
    with db.connection(url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_INIT_LOCK_KEY,))
        conn.commit()
        try:
            ensure_pgmq(conn, report)
            conn.commit()
            with conn.transaction():
                ensure_queues(conn, ALL_STATIC_QUEUES, report)
            with conn.transaction():
                apply_migrations(conn, report, migration_list)
            for step in extra_steps:
                with conn.transaction():
                    step(conn, report)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_INIT_LOCK_KEY,))
            conn.commit()
    return report

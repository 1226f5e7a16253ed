"""Settings from the environment, validated once at start.

Names follow the seeds (`SHARED_QUEUE_*`); the hub's own knobs are `QUEUE_ASSETS_*`. Every bad
value is reported together, each naming the variable and the reason, and no error ever shows a
password (every shown value goes through `redact.redact`).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import quote, urlsplit

from .envparse import EnvReader
from .envparse import choice as _choice
from .envparse import int_range as _int_range
from .envparse import parse_bool as _bool
from .horizons import SDK_RETRY_HORIZON_S
from .redact import redact, register_secret, secrets_in

SHARED_QUEUE_DATABASE = "shared_queue"
DAGSTER_DATABASE = "dagster"


class SettingsError(ValueError):
    """One or more environment variables hold a bad value."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid settings:\n  - " + "\n  - ".join(problems))


def project_root() -> Path:
    """The source checkout this package runs from, or the working directory when installed."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


@dataclass(frozen=True)
class DbParts:
    """The shared_queue server as given in parts (`SHARED_QUEUE_HOST` ...); the password stays in
    `SHARED_QUEUE_PASSWORD` (the resource takes it as `dg.EnvVar`)."""

    host: str
    port: int
    user: str
    database: str
    has_password: bool


@dataclass(frozen=True)
class Settings:
    db_url: str | None
    """Explicit shared_queue URL; None means the embedded server."""
    dagster_db_url: str | None
    enabled: bool = True
    poll_ms: int = 1000
    batch_size: int = 500
    retention_days: int = 90
    dlq_retention_days: int = 365
    max_attempts: int = 5
    max_message_bytes: int = 1_048_576
    visibility_timeout_s: int = 60
    run_max_messages: int = 200_000
    run_max_seconds: int = 30
    run_linger_s: int = 10
    stale_after_s: int = 3600
    ledger_retention_days: int = 90
    """hub.ingest_ledger: the de-duplication window (docs/operations.md, Retention)."""
    observations_retention_days: int = 365
    """hub.pattern_observations: also the aggregation's window (it ranks the rows that are kept)."""
    artifacts_retention_days: int = 365
    code_analyses_retention_days: int = 90
    heartbeats_retention_days: int = 30
    ingest_backoff_base_s: int = 10
    """Ingest sensor: wait after the first failed run of a queue, doubled per further failure."""
    ingest_backoff_cap_s: int = 600
    retry_delay_s: int = 30
    """First retry delay of the scheduled jobs' steps (then doubling); queue_assets/retries.py."""
    llm_provider: str = "queue"
    """Pattern enrichment (issue 12): queue (llm_requests -> hub_llm_results), openai (an
    OpenAI-compatible server: OPENAI_BASE_URL, QUEUE_ASSETS_LLM_MODEL, OPENAI_API_KEY; read by
    patterns.providers when a run starts) or off."""
    llm_max_per_hour: int = 100
    llm_timeout_s: int = 300
    llm_max_attempts: int = 3
    llm_reply_wait_s: int = 30
    """A run that sent llm_requests ingests their replies itself for up to this long after the newest
    (ingest.replies.ReplyWaiter); 0: leave them to hub_llm_results' own run."""
    pattern_approval: str = "off"
    """off, or required: an enriched pattern waits for a person (approval_requests -> hub_approval_responses)."""
    data_dir: Path = Path(".queue_assets")
    db_parts: DbParts | None = None
    """Set when `db_url` was composed from `SHARED_QUEUE_HOST` etc. rather than `SHARED_QUEUE_DB_URL`."""
    queue_thresholds: str = ""
    """`QUEUE_ASSETS_QUEUE_THRESHOLDS` as given (JSON; `operations.thresholds` parses it when used)."""
    demo: bool = False
    """`QUEUE_ASSETS_DEMO=1` (set by `queue-assets dev`): the demo's lineage sensor starts running."""

    @property
    def embedded(self) -> bool:
        return self.db_url is None

    @property
    def dagster_home(self) -> Path:
        """The project's Dagster home (`queue-assets dev`, and `dagster dev` through `.env`)."""
        return self.data_dir / "dagster_home"

    def describe(self) -> dict[str, str]:
        """The settings for display, with passwords redacted."""
        out = {}
        for f in fields(self):
            if f.name == "db_parts":
                continue
            value = getattr(self, f.name)
            if f.name in ("db_url", "dagster_db_url"):
                value = redact(value) if value else "(embedded)"
            out[f.name] = str(value)
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = EnvReader(env)
        get = reader.get

        db_url = get("SHARED_QUEUE_DB_URL", _postgres_url, None)
        if db_url is None and any(
            env.get(k) for k in ("SHARED_QUEUE_HOST", "SHARED_QUEUE_PORT", "SHARED_QUEUE_USER")
        ):
            host = get("SHARED_QUEUE_HOST", _hostname, "localhost")
            port = get("SHARED_QUEUE_PORT", _int_range(1, 65535), 5432)
            user = get("SHARED_QUEUE_USER", _identifier_text, "postgres")
            password = env.get("SHARED_QUEUE_PASSWORD", "")
            database = get("SHARED_QUEUE_DATABASE", _identifier_text, SHARED_QUEUE_DATABASE)
            db_url = compose_db_url(host, port, user, password, database)
            db_parts = DbParts(host, port, user, database, has_password=bool(password))
        else:
            db_parts = None
        data_dir = Path(env.get("QUEUE_ASSETS_DATA_DIR") or project_root() / ".queue_assets")
        settings = cls(
            db_url=db_url,
            dagster_db_url=get("DAGSTER_PG_URL", _dagster_url, None),
            enabled=get("SHARED_QUEUE_ENABLED", _bool, True),
            poll_ms=get("SHARED_QUEUE_POLL_MS", _int_range(50, 3_600_000), 1000),
            batch_size=get("SHARED_QUEUE_BATCH_SIZE", _int_range(1, 10_000), 500),
            retention_days=get("SHARED_QUEUE_RETENTION_DAYS", _int_range(1, 36_500), 90),
            dlq_retention_days=get("SHARED_QUEUE_DLQ_RETENTION_DAYS", _int_range(1, 36_500), 365),
            max_attempts=get("QUEUE_ASSETS_MAX_ATTEMPTS", _int_range(1, 1000), 5),
            max_message_bytes=get("QUEUE_ASSETS_MAX_MESSAGE_BYTES", _int_range(256, 256 * 2**20), 2**20),
            visibility_timeout_s=get("QUEUE_ASSETS_VISIBILITY_TIMEOUT_S", _int_range(5, 86_400), 60),
            run_max_messages=get("QUEUE_ASSETS_RUN_MAX_MESSAGES", _int_range(1, 100_000_000), 200_000),
            run_max_seconds=get("QUEUE_ASSETS_RUN_MAX_SECONDS", _int_range(1, 86_400), 30),
            run_linger_s=get("QUEUE_ASSETS_RUN_LINGER_S", _int_range(0, 3600), 10),
            stale_after_s=get("QUEUE_ASSETS_STALE_AFTER_S", _int_range(10, 30 * 86_400), 3600),
            ledger_retention_days=get("QUEUE_ASSETS_RETENTION_LEDGER_DAYS", _int_range(1, 36_500), 90),
            observations_retention_days=get(
                "QUEUE_ASSETS_RETENTION_OBSERVATIONS_DAYS", _int_range(1, 36_500), 365
            ),
            artifacts_retention_days=get("QUEUE_ASSETS_RETENTION_ARTIFACTS_DAYS", _int_range(1, 36_500), 365),
            code_analyses_retention_days=get(
                "QUEUE_ASSETS_RETENTION_CODE_ANALYSES_DAYS", _int_range(1, 36_500), 90
            ),
            heartbeats_retention_days=get(
                "QUEUE_ASSETS_RETENTION_HEARTBEATS_DAYS", _int_range(1, 36_500), 30
            ),
            ingest_backoff_base_s=get("QUEUE_ASSETS_INGEST_BACKOFF_BASE_S", _int_range(1, 86_400), 10),
            ingest_backoff_cap_s=get("QUEUE_ASSETS_INGEST_BACKOFF_CAP_S", _int_range(1, 7 * 86_400), 600),
            retry_delay_s=get("QUEUE_ASSETS_RETRY_DELAY_S", _int_range(0, 3600), 30),
            llm_provider=get("QUEUE_ASSETS_LLM_PROVIDER", _llm_provider, "queue"),
            llm_max_per_hour=get("QUEUE_ASSETS_LLM_MAX_PER_HOUR", _int_range(0, 1_000_000), 100),
            llm_timeout_s=get("QUEUE_ASSETS_LLM_TIMEOUT_S", _int_range(1, 86_400), 300),
            llm_max_attempts=get("QUEUE_ASSETS_LLM_MAX_ATTEMPTS", _int_range(1, 100), 3),
            llm_reply_wait_s=get("QUEUE_ASSETS_LLM_REPLY_WAIT_S", _int_range(0, 3600), 30),
            pattern_approval=get("QUEUE_ASSETS_PATTERN_APPROVAL", _choice("off", "required"), "off"),
            data_dir=data_dir,
            db_parts=db_parts,
            queue_thresholds=get("QUEUE_ASSETS_QUEUE_THRESHOLDS", str, ""),
            demo=get("QUEUE_ASSETS_DEMO", lambda raw: raw == "1", False),
        )
        problems = reader.problems + _cross_checks(settings)
        if problems:
            raise SettingsError(problems)
        return settings


def compose_db_url(host: str, port: int, user: str, password: str, database: str) -> str:
    """The shared_queue URL from its parts (`SHARED_QUEUE_HOST`, `_PORT`, `_USER`, `_PASSWORD`,
    `_DATABASE`); the password is registered with `redact` first."""
    register_secret(password)
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return f"postgresql://{auth}@{host}:{port}/{database}"


@functools.cache
def code_location_settings() -> Settings:
    """The settings the code location loads with, read from the environment once per process.

    `queue_assets.definitions` builds every definition and resource from this one object (and
    `retries.retry_policy` its delays); runs read theirs once when they start, through the
    `shared_queue` resource. Code below takes the values it needs as arguments.
    """
    return Settings.from_env()


def dedupe_floor_s(visibility_timeout_s: int) -> float:
    """The shortest ledger window that still catches every redelivery and SDK retry (seconds).

    A message is redelivered at the latest a visibility timeout after it was read, and the SDK
    re-sends a keyed message at the latest `SDK_RETRY_HORIZON_S` after its first attempt.
    """

    return visibility_timeout_s + SDK_RETRY_HORIZON_S


def _cross_checks(s: Settings) -> list[str]:
    """Problems that involve two settings at once (each names the variable to change)."""
    problems = []
    floor = dedupe_floor_s(s.visibility_timeout_s)
    if s.ledger_retention_days * 86_400 < floor:
        problems.append(
            f"QUEUE_ASSETS_RETENTION_LEDGER_DAYS={s.ledger_retention_days!r}: the ingest ledger is the "
            f"de-duplication window and must outlast a redelivery and the SDK's retries: the visibility "
            f"timeout ({s.visibility_timeout_s} s, QUEUE_ASSETS_VISIBILITY_TIMEOUT_S) plus the SDK's retry "
            f"horizon ({floor - s.visibility_timeout_s:.0f} s) = {floor:.0f} s; "
            f"use at least {-(-int(floor) // 86_400)} days"
        )
    if s.ingest_backoff_cap_s < s.ingest_backoff_base_s:
        problems.append(
            f"QUEUE_ASSETS_INGEST_BACKOFF_CAP_S={s.ingest_backoff_cap_s!r}: the cap must not be shorter than "
            f"QUEUE_ASSETS_INGEST_BACKOFF_BASE_S ({s.ingest_backoff_base_s})"
        )
    return problems


# SQLAlchemy-style names for PostgreSQL, converted; any other `+driver` is refused (psycopg 3 and
# libpq take only `postgresql://` and `postgres://`, and echo a URL they cannot parse in full,
# password included).
_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg")


def libpq_url(url: str) -> str:
    """`url` as psycopg 3 / libpq take it: `postgresql+psycopg2://`, `postgresql+psycopg://` and
    `postgres://` become `postgresql://`; anything else is returned unchanged."""
    return re.sub(r"(?i)^(?:postgres|postgresql\+psycopg2?)://", "postgresql://", url)


def _postgres_url(raw: str, scheme: str = "postgresql") -> str:
    """A PostgreSQL URL with its scheme set to `scheme`, checked the way libpq will read it."""
    register_secret(*secrets_in(raw))  # masked in every error from here on, whatever its form
    try:
        parts = urlsplit(raw)
    except ValueError:
        raise ValueError("not a URL; expected postgresql://user@host:port/database") from None
    if parts.scheme.lower() not in _POSTGRES_SCHEMES:
        driver = parts.scheme.partition("+")[2]
        why = (
            f"the driver {driver!r} is not supported"
            if parts.scheme.lower().startswith(("postgresql+", "postgres+"))
            else f"scheme {parts.scheme!r} is not PostgreSQL"
        )
        raise ValueError(
            f"{why}; expected postgresql://user@host:port/database (postgres://, "
            "postgresql+psycopg2:// and postgresql+psycopg:// are accepted and converted)"
        )
    if not parts.path.strip("/"):
        raise ValueError("the URL names no database; expected postgresql://user@host:port/database")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("the port is not a number between 0 and 65535") from None
    url = f"{scheme}://{raw.split('://', 1)[1]}"
    import psycopg  # here, not at the top: `queue-assets --help` reads the settings module too

    try:
        psycopg.conninfo.conninfo_to_dict(libpq_url(url))
    except psycopg.ProgrammingError as exc:  # libpq's words may quote the URL: redacted
        raise ValueError(f"libpq cannot read it: {redact(str(exc).strip(), secrets_in(raw))}") from None
    return url


def _dagster_url(raw: str) -> str:
    # dagster-postgres speaks psycopg2: with psycopg 3 installed, SQLAlchemy would pick it for
    # `postgresql://` and Dagster's `NOTIFY run_events` fails (see DESIGN).
    return _postgres_url(raw, scheme="postgresql+psycopg2")


def _hostname(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._:\-/]+", raw):
        raise ValueError("not a host name or address")
    return raw


def _identifier_text(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$\-]{0,62}", raw):
        raise ValueError("not a valid PostgreSQL name")
    return raw


def _llm_provider(raw: str) -> str:
    return _choice("queue", "openai", "off")(raw)

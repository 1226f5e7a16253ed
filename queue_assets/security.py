"""Least-privilege PostgreSQL roles for producers (the Singularity instances).

The hub itself connects as the owner of the `shared_queue` database; instances do not. They connect
as their own login role, `instance_<id>` (`instance_role_for`), which is a member of one group role,
`queue_assets_producer` (NOLOGIN). What each may do, and why it is enough:

- the group may CONNECT to the `shared_queue` database, use schema `pgmq`, EXECUTE the pgmq
  functions a producer calls, and INSERT into the three ingest queues' tables (`pgmq.q_pattern_messages`,
  `pgmq.q_learned_patterns`, `pgmq.q_instance_heartbeat`) plus SELECT on their `msg_id` column only,
  because `pgmq.send` is `INSERT ... RETURNING msg_id` and RETURNING needs SELECT on what it returns.
  It cannot read the messages in those queues (no SELECT on `message`, no UPDATE for `pgmq.read`);
- each instance role may SELECT, UPDATE and DELETE in its own inbox `pgmq.q_inbox_<id>` (what
  `pgmq.read`, `pgmq.set_vt`, `pgmq.delete` and `pgmq.archive` need), and SELECT and INSERT in that
  inbox's archive `pgmq.a_inbox_<id>` (`pgmq.archive` moves a message there);
- the group may use schema `hub_api` and EXECUTE its functions (the pattern query API, sql/011):
  they are SECURITY DEFINER with a fixed search_path, so they read `hub.patterns` and send to
  `pattern_discovery` for the caller, who has no right on either. Nothing else.

pgmq's functions are SECURITY INVOKER, so the table privileges above are what is checked: no
other queue, no archive but its own, no `hub.*` table (schema `hub` grants nothing to PUBLIC), no
`pgmq.create`/`bind_topic`/`send_topic` (they need CREATE on `pgmq` or access to
`pgmq.topic_bindings`). Dagster's database stops accepting connections from PUBLIC
(`restrict_database_connect`), so only its owner, superusers and roles granted CONNECT get in.
Never make a producer a member of `pg_monitor`: pgmq's install grants that role SELECT on every
queue table.

`ensure_producer_role` is a `bootstrap(url, extra_steps=...)` step (idempotent; `queue-assets init`
runs it). `grant_instance` makes one instance's login role (`queue-assets grant-instance`, in
`queue_assets/cli/roles.py`), and
`grant_inbox_access` is the hook the fan-out calls after it creates an inbox, so an inbox created
later (or dropped and created again) gets its owner's grants. Role names are validated and composed
with `psycopg.sql.Identifier`; a password is hashed (SCRAM-SHA-256) on the client, so the clear text
never reaches the server, its statement log, or an error text.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from .db import one_row
from .names import PRODUCER_ROLE, InvalidNameError, inbox_queue_for, validate_instance_id
from .queues import CONSUMED_QUEUES
from .redact import redact

INSTANCE_ROLE_PREFIX = "instance_"
# The pgmq functions a producer calls, with the helpers they call in turn (EXECUTE is checked on
# nested calls too). Granted explicitly so producers keep working where a DBA has revoked PUBLIC's
# default EXECUTE on schema pgmq.
PRODUCER_FUNCTIONS = (
    "send",
    "send_batch",
    "_send_batch",
    "_validate_batch_params",
    "format_table_name",
    "read",
    "read_with_poll",
    "set_vt",
    "archive",
    "delete",
    "pop",
)
_ROLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_QUEUE_SET_TABLES = (("q", "SELECT, UPDATE, DELETE"), ("a", "SELECT, INSERT"))


class SecurityError(RuntimeError):
    """A role or grant could not be set up; the message says why and what to do (never a password)."""


@dataclass
class GrantReport:
    """What `grant_instance` / `ensure_producer_role` changed (empty when everything was in place)."""

    actions: list[str] = field(default_factory=list)


def instance_role_for(instance_id: str) -> str:
    """The login role of an instance: `instance_` + the id lower-cased, `-` mapped to `_`.

    The same mapping as its inbox (`inbox_queue_for`), so two ids that share an inbox share a role.
    """
    validate_instance_id(instance_id)
    return _checked_role(INSTANCE_ROLE_PREFIX + instance_id.lower().replace("-", "_"))


def _checked_role(name: str) -> str:
    if not _ROLE_RE.fullmatch(name):
        raise InvalidNameError(
            f"role name {name[:70]!r} is not allowed: lower-case letters, digits and '_', starting with a "
            "letter, at most 63 characters"
        )
    return name


def _role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def _create_role(conn: psycopg.Connection, role: str, options: sql.Composable) -> bool:
    """CREATE ROLE unless it exists; False when it already did. Roles are cluster-wide, so an init
    on another database of the same server may create it at the same moment: that is not an error."""
    if _role_exists(conn, role):
        return False
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE ROLE {} ").format(sql.Identifier(role)) + options)
    except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
        return False
    except psycopg.errors.InsufficientPrivilege as exc:
        raise SecurityError(
            f"cannot create role {role!r}: {_first_line(exc)}. Run `queue-assets init` as a role with "
            "CREATEROLE (or as a superuser), or have a DBA create it."
        ) from None
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)


def _queue_table(prefix: str, queue: str) -> sql.Identifier:
    return sql.Identifier("pgmq", f"{prefix}_{queue}")


def _table_exists(conn: psycopg.Connection, prefix: str, queue: str) -> bool:
    name = f"pgmq.{prefix}_{queue}"
    return one_row(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)), f"whether {name} exists")[0]


def _function_signatures(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " WHERE p.pronamespace = 'pgmq'::regnamespace AND p.proname = ANY(%s) ORDER BY 1",
        (list(PRODUCER_FUNCTIONS),),
    ).fetchall()
    return [r[0] for r in rows]


def ensure_producer_role(conn: psycopg.Connection, report=None, *, group: str = PRODUCER_ROLE) -> GrantReport:
    """Create the NOLOGIN group role and give it exactly what a producer needs in this database.

    Idempotent: grants are only issued (and reported) when missing. Works as a bootstrap step
    (`report` is the `BootstrapReport`, whose `actions` get one line per change).
    """
    _checked_role(group)
    out = GrantReport()
    role = sql.Identifier(group)
    if _create_role(conn, group, sql.SQL("NOLOGIN")):
        out.actions.append(f"created group role {group} (NOLOGIN) for producers")
    (dbname,) = one_row(conn.execute("SELECT current_database()"), "current_database()")
    if not _holds_directly(conn, _DATABASE_ACL, dbname, group, "c"):
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname), role))
        out.actions.append(f"granted {group} CONNECT on database {dbname}")
    if not _has(conn, "has_schema_privilege(%s, 'pgmq', 'USAGE')", group):
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pgmq TO {}").format(role))
        out.actions.append(f"granted {group} USAGE on schema pgmq")
    missing_fns = [
        sig for sig in _function_signatures(conn) if not _holds_directly(conn, _FUNCTION_ACL, sig, group, "X")
    ]
    for sig in missing_fns:
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(sig), role))
    if missing_fns:
        out.actions.append(
            f"granted {group} EXECUTE on {len(missing_fns)} pgmq functions (send, read, archive, ...)"
        )
    sendable = []
    for queue in CONSUMED_QUEUES:
        table = f"pgmq.q_{queue}"
        if not _table_exists(conn, "q", queue):
            raise SecurityError(
                f"queue {queue!r} does not exist yet; run `queue-assets init` (it creates it first)"
            )
        if not (
            _has(conn, "has_table_privilege(%s, %s, 'INSERT')", group, table)
            and _has(conn, "has_column_privilege(%s, %s, 'msg_id', 'SELECT')", group, table)
        ):
            conn.execute(sql.SQL("GRANT INSERT ON {} TO {}").format(_queue_table("q", queue), role))
            conn.execute(sql.SQL("GRANT SELECT (msg_id) ON {} TO {}").format(_queue_table("q", queue), role))
            sendable.append(queue)
    if sendable:
        out.actions.append(f"granted {group} send on {', '.join(sendable)}")
    # The pattern query API (sql/011): SECURITY DEFINER functions, so EXECUTE is all a producer needs.
    if _has(conn, "to_regnamespace('hub_api') IS NOT NULL") and not _has(
        conn, "has_function_privilege(%s, 'hub_api.query_pattern(text, text)', 'EXECUTE')", group
    ):
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA hub_api TO {}").format(role))
        conn.execute(sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA hub_api TO {}").format(role))
        out.actions.append(f"granted {group} EXECUTE on the pattern query API (schema hub_api)")
    # PostgreSQL < 15 lets PUBLIC create objects in schema public; nobody but the owner should here.
    if _has(conn, "has_schema_privilege('public', 'public', 'CREATE')"):
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        out.actions.append("revoked CREATE on schema public from PUBLIC")
    if _has(conn, "has_schema_privilege('public', 'hub', 'USAGE')"):
        conn.execute("REVOKE ALL ON SCHEMA hub FROM PUBLIC")
        out.actions.append("revoked PUBLIC's access to schema hub")
    if report is not None:
        report.actions.extend(out.actions)
    return out


def _has(conn: psycopg.Connection, expr: str, *args: str) -> bool:
    """A `has_*_privilege` check (these count PUBLIC's grants and role memberships too)."""
    return bool(one_row(conn.execute(sql.SQL("SELECT " + expr), args), expr)[0])  # noqa: S608 - fixed expressions


def _holds_directly(conn: psycopg.Connection, acl_query: str, obj: str, role: str, priv: str) -> bool:
    """Whether `role` itself appears in the object's ACL with `priv` (a letter, e.g. `c`, `X`).

    Used where PUBLIC holds the privilege by default: the grant must be the role's own, so that it
    survives a DBA revoking PUBLIC's.
    """
    (acl,) = one_row(conn.execute(acl_query, (obj,)), f"the ACL of {obj}")
    for item in acl or ():
        grantee, _, rest = item.partition("=")
        if grantee.strip('"') == role and priv in rest.split("/")[0]:
            return True
    return False


_DATABASE_ACL = "SELECT datacl::text[] FROM pg_database WHERE datname = %s"
_FUNCTION_ACL = "SELECT proacl::text[] FROM pg_proc WHERE oid = %s::regprocedure"


def grant_inbox_access(conn: psycopg.Connection, instance_id: str) -> bool:
    """Give an instance's login role its inbox (read, set_vt, delete, archive); the fan-out's hook.

    Call it after creating an inbox, in the same transaction. Does nothing (returns False) when the
    instance has no login role yet, or when its inbox does not exist; `grant_instance` applies it
    then. GRANT is idempotent, so calling it again is harmless.
    """
    role = instance_role_for(instance_id)
    inbox = inbox_queue_for(instance_id)
    if not _role_exists(conn, role) or not _table_exists(conn, "q", inbox):
        return False
    for prefix, privileges in _QUEUE_SET_TABLES:
        if _table_exists(conn, prefix, inbox):
            conn.execute(
                sql.SQL("GRANT " + privileges + " ON {} TO {}").format(  # noqa: S608 - fixed privilege lists
                    _queue_table(prefix, inbox), sql.Identifier(role)
                )
            )
    return True


def grant_instance(
    conn: psycopg.Connection,
    instance_id: str,
    *,
    password: str | None = None,
    login: bool = True,
    group: str = PRODUCER_ROLE,
) -> GrantReport:
    """Create (or update) the login role of one instance: member of the producer group, owner of
    nothing, with access to its own inbox only. The inbox queue is created if it does not exist
    yet (the fan-out binds it to the hub's topics once the instance sends heartbeats).

    `password` (optional) is hashed with SCRAM-SHA-256 on the client. Runs in the caller's
    transaction; `ensure_producer_role` must have run in this database (`queue-assets init`).
    """
    role = instance_role_for(instance_id)
    inbox = inbox_queue_for(instance_id)
    out = GrantReport()
    if not _role_exists(conn, group):
        raise SecurityError(f"group role {group!r} does not exist; run `queue-assets init` first")
    options = sql.SQL("LOGIN" if login else "NOLOGIN")
    if _create_role(conn, role, options):
        out.actions.append(f"created role {role} ({'LOGIN' if login else 'NOLOGIN'})")
    if password is not None:
        if not password:
            raise SecurityError(f"the password for role {role!r} is empty")
        hashed = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), sql.Literal(hashed))
        )
        out.actions.append(f"set the password of {role}")
    member = conn.execute(
        "SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member"
        " WHERE g.rolname = %s AND r.rolname = %s",
        (group, role),
    ).fetchone()
    if not member:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise SecurityError(
                f"cannot make {role!r} a member of {group!r}: {_first_line(exc)}. The user running this needs "
                f"ADMIN OPTION on {group} (GRANT {group} TO <that user> WITH ADMIN OPTION) or to be a superuser"
            ) from None
        out.actions.append(f"made {role} a member of {group}")
    if not _table_exists(conn, "q", inbox):
        conn.execute("SELECT pgmq.create(%s)", (inbox,))
        out.actions.append(f"created inbox queue {inbox}")
    if not _has(conn, "has_table_privilege(%s, %s, 'UPDATE')", role, f"pgmq.q_{inbox}"):
        out.actions.append(f"granted {role} read/archive/delete on its inbox {inbox}")
    grant_inbox_access(conn, instance_id)
    return out


def drop_instance_role(conn: psycopg.Connection, instance_id: str) -> bool:
    """Revoke everything an instance's role holds in this database and drop the role.

    Its inbox queue stays (the fan-out decides about inboxes). Returns False when there was no
    such role. Raises `SecurityError` when the role still holds privileges in another database.
    """
    role = instance_role_for(instance_id)
    if not _role_exists(conn, role):
        return False
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
    try:
        with conn.transaction():
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise SecurityError(
            f"role {role!r} still holds privileges elsewhere ({_first_line(exc)}); run this in each "
            "database that lists it, then again here"
        ) from None
    return True


def restrict_database_connect(url: str) -> list[str]:
    """Stop PUBLIC from connecting to the database `url` names (Dagster's), keeping its user in.

    The connecting user is granted CONNECT first, so a Dagster that connects as a non-owner keeps
    working. Returns what changed ([] when nothing had to). Raises `SecurityError` when the user
    may not change the database's privileges.
    """
    from . import db

    with db.connection(url, autocommit=True) as conn:
        dbname, user = db.one_row(
            conn.execute("SELECT current_database(), current_user"), "current_database(), current_user"
        )
        (public_connects,) = db.one_row(
            conn.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", (dbname,)),
            "whether PUBLIC may connect",
        )
        if not public_connects:
            return []
        ident = sql.Identifier(dbname)
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(ident, sql.Identifier(user))
                )
                conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(ident))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise SecurityError(
                f"cannot restrict connections to database {dbname!r}: {_first_line(exc)}. Run as its owner "
                f"or a superuser, or run: REVOKE CONNECT ON DATABASE {dbname} FROM PUBLIC"
            ) from None
    return [f"revoked CONNECT on database {dbname} from PUBLIC (kept for {user})"]


def bootstrap_steps(dagster_url: str | None = None):
    """The `extra_steps` for `bootstrap.bootstrap`: the producer role, and (when Dagster's database
    URL is known) closing Dagster's database to PUBLIC."""

    from .bootstrap import BootstrapError

    def producer_role(conn, report) -> None:
        try:
            ensure_producer_role(conn, report)
        except SecurityError as exc:
            raise BootstrapError(str(exc)) from None

    if not dagster_url:
        return (producer_role,)

    def dagster_database(conn, report) -> None:
        try:
            report.actions.extend(restrict_database_connect(dagster_url))
        except SecurityError as exc:
            print(f"queue-assets: warning: {exc}", file=sys.stderr)

    return (producer_role, dagster_database)

"""`queue-assets grant-instance` / `revoke-instance`: an instance's least-privilege login role.

What the roles may do, and the SQL that sets them up, is in `queue_assets.security`.
"""

from __future__ import annotations

import os

from ..names import PRODUCER_ROLE, inbox_queue_for
from ..queues import CONSUMED_QUEUES
from ..redact import register_secret
from .errors import fail

# `security` and `db` (psycopg) are imported by the commands, not for `queue-assets --help`.


def add_subcommands(sub) -> None:
    g = sub.add_parser(
        "grant-instance",
        help="create an instance's least-privilege login role (member of "
        f"{PRODUCER_ROLE}, its own inbox only)",
    )
    g.add_argument("instance_id")
    g.add_argument(
        "--password-env",
        metavar="VAR",
        help="set the role's password from this environment variable (never from the command line)",
    )
    g.add_argument(
        "--no-login", action="store_true", help="create the role NOLOGIN (e.g. for certificate mapping)"
    )
    r = sub.add_parser("revoke-instance", help="drop an instance's login role (its inbox queue stays)")
    r.add_argument("instance_id")


def cmd_grant_instance(settings, args) -> int:
    from ..db import connection, resolve_urls
    from ..security import SecurityError, grant_instance, instance_role_for

    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        register_secret(password)
        if not password:
            return fail(f"--password-env {args.password_env}: that environment variable is not set or empty")
    urls = resolve_urls(settings)
    try:
        with connection(urls["shared_queue"]) as conn:
            report = grant_instance(conn, args.instance_id, password=password, login=not args.no_login)
            conn.commit()
    except SecurityError as exc:
        return fail(str(exc))
    role = instance_role_for(args.instance_id)
    print("\n".join(f"  + {a}" for a in report.actions) or f"role {role}: nothing to do")
    print(
        f"instance {args.instance_id} connects as {role!r}: sends to {', '.join(CONSUMED_QUEUES)}; "
        f"reads {inbox_queue_for(args.instance_id)} only"
    )
    return 0


def cmd_revoke_instance(settings, args) -> int:
    from ..db import connection, resolve_urls
    from ..security import SecurityError, drop_instance_role, instance_role_for

    urls = resolve_urls(settings)
    try:
        with connection(urls["shared_queue"]) as conn:
            dropped = drop_instance_role(conn, args.instance_id)
            conn.commit()
    except SecurityError as exc:
        return fail(str(exc))
    role = instance_role_for(args.instance_id)
    print(f"dropped role {role}" if dropped else f"role {role} does not exist: nothing to do")
    return 0


COMMANDS = {"grant-instance": cmd_grant_instance, "revoke-instance": cmd_revoke_instance}

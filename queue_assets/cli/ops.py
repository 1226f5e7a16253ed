"""The operator's subcommands of `queue-assets`: `status`, `retention` and `dlq list|show|redrive|purge`.

Registered in `queue_assets/cli/app.py` through `add_subcommands` and `COMMANDS`. Every option is
checked by its argparse `type` while the command line is parsed, so a hostile or mistyped value
(a queue name holding a quote, `;` or `../`, a bad duration) is reported with the value and the
reason before any connection is opened or any SQL runs. Long operations print progress to stderr.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..names import InvalidNameError, validate_queue_name
from ..settings import Settings
from .errors import fail

if TYPE_CHECKING:
    from ..operations import dlq as dlq_ops

# The operations modules (and psycopg, which they import) are loaded inside the commands, so
# `queue-assets --help` and the other commands' start do not pay for them (docs/benchmarks.md).


def _progress(text: str) -> None:
    """A progress line on stderr: rewritten in place on a terminal, one line each otherwise."""
    if sys.stderr.isatty():
        print(f"\r{text}\033[K", end="", file=sys.stderr, flush=True)
    else:
        print(text, file=sys.stderr, flush=True)


def _end_progress() -> None:
    if sys.stderr.isatty():
        print(file=sys.stderr)


def _arg(check):
    """An argparse `type` from a checker that raises ValueError with a clear message."""

    def parse(text: str):
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = check.__name__
    return parse


def _queue(text: str) -> str:
    try:
        return validate_queue_name(text)
    except InvalidNameError as exc:
        raise ValueError(str(exc)) from None


def _duration(text: str) -> str:
    from ..operations import dlq as dlq_ops

    dlq_ops.parse_duration(text)
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{value} must be at least 1")
    return value


def _retention_batch(text: str) -> int:
    value = _positive(text)
    if value > 100_000:
        raise ValueError(f"{value} is more than 100000 rows per batch (locks would be held too long)")
    return value


def _reason(text: str) -> str:
    from ..operations import dlq as dlq_ops

    dlq_ops.DlqFilter(reason=text)
    return text


def _type(text: str) -> str:
    from ..operations import dlq as dlq_ops

    dlq_ops.DlqFilter(message_type=text)
    return text


def _filter_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--queue", type=_arg(_queue), help="a dead-letter queue or its source queue (e.g. pattern_messages)"
    )
    p.add_argument(
        "--reason", type=_arg(_reason), help="error kind (e.g. invalid_json) or a piece of the reason text"
    )
    p.add_argument(
        "--type", dest="message_type", type=_arg(_type), help="message type (e.g. pattern_detection)"
    )
    p.add_argument(
        "--older-than", type=_arg(_duration), help="dead-lettered at least this long ago (30m, 2h, 7d)"
    )
    p.add_argument("--newer-than", type=_arg(_duration), help="dead-lettered less than this long ago")
    return p


def add_subcommands(sub) -> None:
    """Add `status`, `retention` and `dlq` to the `queue-assets` subparsers."""
    s = sub.add_parser(
        "status", help="terminal summary: queues, instances, dead letters, last materializations"
    )
    s.add_argument("--queues", type=_arg(_positive), default=20, help="show this many queues, worst first")
    s.add_argument(
        "--no-dagster", action="store_true", help="skip the Dagster instance (last materializations)"
    )

    r = sub.add_parser(
        "retention",
        help="delete archived messages and hub ingest rows older than their retention (bounded batches)",
    )
    r.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    r.add_argument(
        "--batch-size",
        type=_arg(_retention_batch),
        default=None,
        help="rows per DELETE, each its own short transaction",
    )

    d = sub.add_parser("dlq", help="dead letters: list, show, redrive, purge")
    dsub = d.add_subparsers(dest="dlq_command", required=True)
    filters = _filter_options()
    lst = dsub.add_parser("list", parents=[filters], help="list dead letters with their reasons")
    lst.add_argument("--limit", type=_arg(_positive), default=50)
    show = dsub.add_parser("show", help="one dead letter in full: reason, headers, message")
    show.add_argument("id", type=_arg(_positive), help="its msg_id in the dead-letter queue")
    show.add_argument("--queue", type=_arg(_queue), help="the dead-letter queue (msg_ids are per queue)")
    for name, text in (
        ("redrive", "put dead letters back on their source queue, exactly once"),
        ("purge", "archive dead letters out of their queue (needs --yes)"),
    ):
        p = dsub.add_parser(name, parents=[filters], help=text)
        p.add_argument("--all", action="store_true", help="act on every dead letter when no filter is given")
        p.add_argument(
            "--dry-run", action="store_true", help="show how many would be acted on; change nothing"
        )
        p.add_argument(
            "--batch-size",
            type=_arg(_positive),
            default=None,
            help="messages per transaction",
        )
        p.add_argument("--limit", type=_arg(_positive), default=None, help="stop after this many")
        if name == "purge":
            p.add_argument("--yes", action="store_true", help="really purge")


def _connect(settings: Settings):
    from ..backoff import connect_with_backoff
    from ..db import resolve_urls

    return connect_with_backoff(resolve_urls(settings)["shared_queue"])


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def cmd_status(settings: Settings, args) -> int:
    from ..backoff import connect_with_backoff
    from ..db import resolve_urls
    from ..operations.status import gather, render
    from ..operations.thresholds import ThresholdError, Thresholds

    try:
        thresholds = Thresholds.load(env_json=settings.queue_thresholds)
    except ThresholdError as exc:
        return fail(str(exc))
    urls = resolve_urls(settings)
    # Beside `make demo` (the embedded server, no DAGSTER_HOME) this reads `queue-assets dev`'s instance.
    home = settings.dagster_home if settings.embedded else None
    with connect_with_backoff(urls["shared_queue"]) as conn:
        report = gather(
            conn,
            stale_after_s=settings.stale_after_s,
            include_dagster=not args.no_dagster,
            project_home=home,
            dagster_url=urls.get("dagster") or None,
        )
    print(render(report, thresholds, max_queues=args.queues))
    return 0


def cmd_retention(settings: Settings, args) -> int:
    from ..operations.retention import DEFAULT_BATCH, HubRetention, run_retention

    def progress(label: str, n: int, report) -> None:
        if n:
            _progress(f"{label}: {'would remove' if report.dry_run else 'removed'} {n} rows")

    with _connect(settings) as conn:
        report = run_retention(
            conn,
            retention_days=settings.retention_days,
            dlq_retention_days=settings.dlq_retention_days,
            batch_size=args.batch_size or DEFAULT_BATCH,
            dry_run=args.dry_run,
            progress=progress,
            hub=HubRetention.from_settings(settings),
        )
    _end_progress()
    for label, n in report.removed.items():
        if n:
            print(f"  {label}: {n}")
    print(report.summary())
    return 0


def _filter_from(args) -> dlq_ops.DlqFilter:
    from ..operations import dlq as dlq_ops

    return dlq_ops.DlqFilter.from_options(
        queue=args.queue,
        reason=args.reason,
        message_type=args.message_type,
        older_than=args.older_than,
        newer_than=args.newer_than,
    )


def _instance_of(message) -> str:
    if isinstance(message, dict):
        for key in ("instance_id", "source", "agent_id"):
            if isinstance(message.get(key), str):
                return message[key]
    return "-"


def _dlq_list(conn, args) -> int:
    from ..operations import dlq as dlq_ops
    from ..operations.statistics import format_seconds

    f = _filter_from(args)
    counts = dlq_ops.count_dead_letters(conn, f)
    letters = dlq_ops.list_dead_letters(conn, f, limit=args.limit)
    now = datetime.now(UTC)
    total = sum(sum(k.values()) for k in counts.values())
    for dlq, kinds in counts.items():
        if kinds:
            print(f"{dlq}: {sum(kinds.values())} ({', '.join(f'{k} {n}' for k, n in kinds.items())})")
    if not letters:
        print("no dead letters match" + ("" if f.empty else " these filters"))
        return 0
    print()
    print(
        f"{'dlq':26} {'msg_id':>7}  {'dead-lettered':20} {'age':>6}  {'kind':18} {'type':20} {'instance':16} reason"
    )
    for d in letters:
        age = format_seconds((now - d.dead_lettered_at).total_seconds())
        reason = (d.reason or "-").replace("\n", " ")
        print(
            f"{d.dlq:26} {d.msg_id:>7}  {d.dead_lettered_at:%Y-%m-%d %H:%M:%S}Z {age:>6}  {(d.kind or '-'):18} "
            f"{(d.message_type or '-')[:20]:20} {_instance_of(d.message)[:16]:16} {reason[:100]}"
        )
    if total > len(letters):
        print(f"... {total - len(letters)} more (raise --limit or narrow the filters)")
    return 0


def _dlq_show(conn, args) -> int:
    from ..operations import dlq as dlq_ops

    found = dlq_ops.get_dead_letter(conn, args.id, queue=args.queue)
    if not found:
        where = (
            f"dead-letter queue {dlq_ops.dlq_name(args.queue)!r}" if args.queue else "any dead-letter queue"
        )
        return fail(f"no dead letter with msg_id {args.id} in {where}", code=1)
    for i, d in enumerate(found):
        if i:
            print("\n" + "-" * 60)
        print(f"dlq:              {d.dlq}")
        print(f"msg_id:           {d.msg_id}")
        print(f"dead-lettered at: {d.dead_lettered_at:%Y-%m-%d %H:%M:%S}Z")
        print(f"source queue:     {d.source_queue} (msg_id {d.original_msg_id})")
        print(f"kind:             {d.kind}")
        print(f"reason:           {d.reason}")
        print(f"delivery count:   {(d.headers or {}).get('x-dlq-read-ct')}")
        print(f"original headers: {json.dumps(d.original_headers)}")
        print("message:")
        print(json.dumps(d.message, indent=2, ensure_ascii=False)[:20_000])
    if len(found) > 1:
        print(f"\n{len(found)} dead-letter queues hold a msg_id {args.id}; pass --queue to pick one")
    return 0


def _dlq_act(conn, args, action: str) -> int:
    from ..operations import dlq as dlq_ops

    f = _filter_from(args)
    if f.empty and not args.all:
        return fail(
            f"dlq {action} needs a filter (--queue, --reason, --type, --older-than, --newer-than) "
            "or --all to act on every dead letter"
        )
    counts = dlq_ops.count_dead_letters(conn, f)
    matching = sum(sum(k.values()) for k in counts.values())
    if args.limit:
        matching = min(matching, args.limit)
    if action == "purge" and not args.yes and not args.dry_run:
        print(
            f"{matching} dead letters match; nothing purged. Re-run with --yes to archive them out of their queues."
        )
        return 1

    def progress(report) -> None:
        _progress(f"{action}: {report.total}/{matching} messages, {report.batches} batches")

    fn = dlq_ops.redrive if action == "redrive" else dlq_ops.purge
    report = fn(
        conn,
        f,
        actor=_actor(),
        batch_size=args.batch_size or dlq_ops.DEFAULT_BATCH,
        limit=args.limit,
        dry_run=args.dry_run,
        progress=progress,
    )
    if report.batches:
        _end_progress()
    verb = {"redrive": "redriven", "purge": "purged"}[action]
    prefix = "would be " if args.dry_run else ""
    for dlq, n in report.moved.items():
        if n:
            print(
                f"  {dlq}: {n} {prefix}{verb}"
                + (f" to {dlq_ops.source_of(dlq)}" if action == "redrive" else "")
            )
    for dlq, why in report.skipped.items():
        print(f"  {dlq}: skipped: {why}")
    print(f"{report.total} dead letters {prefix}{verb}")
    return 0 if not report.skipped else 1


def cmd_dlq(settings: Settings, args) -> int:
    from ..operations import dlq as dlq_ops

    try:
        with _connect(settings) as conn:
            if args.dlq_command == "list":
                return _dlq_list(conn, args)
            if args.dlq_command == "show":
                return _dlq_show(conn, args)
            return _dlq_act(conn, args, args.dlq_command)
    except dlq_ops.DlqError as exc:
        return fail(str(exc))


COMMANDS = {"status": cmd_status, "retention": cmd_retention, "dlq": cmd_dlq}

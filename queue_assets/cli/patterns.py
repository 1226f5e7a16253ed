"""`queue-assets patterns` (the catalogue by rank) and `queue-assets pattern <type> <name>` (one entry
with its aliases and evidence). Reads as the hub, so it neither counts as an instance's query nor
asks for a discovery."""

from __future__ import annotations

import json
import sys

from ..patterns.vocabulary import PATTERN_TYPES, STATUSES

# `canonical` and `catalogue` (pydantic, psycopg) are imported by the commands, not for `--help`.


def add_subcommands(sub) -> None:
    p = sub.add_parser("patterns", help="the pattern catalogue (hub.patterns) by rank")
    p.add_argument("--type", dest="pattern_type", choices=PATTERN_TYPES)
    p.add_argument("--language")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--limit", type=int, default=20)
    one = sub.add_parser("pattern", help="one pattern by any of its names: aliases and evidence")
    one.add_argument("pattern_type", choices=PATTERN_TYPES)
    one.add_argument("name")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def cmd_patterns(settings, args) -> int:
    from ..operations.status import _table
    from ..patterns import catalogue
    from .ops import _connect

    if not 1 <= args.limit <= 10_000:
        print(f"queue-assets: error: --limit {args.limit}: give 1 to 10000", file=sys.stderr)
        return 2
    with _connect(settings) as conn:
        rows = catalogue.top(
            conn, pattern_type=args.pattern_type, language=args.language, status=args.status, limit=args.limit
        )
        total = catalogue.counts(conn)
    print(f"PATTERNS: {total.patterns} in the catalogue ({total.aliases} names sent), showing {len(rows)}")
    print(
        "\n".join(
            _table(
                ["rank", "type", "name", "status", "instances", "obs", "conf", "languages", "v"],
                [[_fmt(r[c]) for c in catalogue.LIST_COLUMNS] for r in rows],
            )
        )
    )
    return 0


def cmd_pattern(settings, args) -> int:
    from ..operations.status import _table
    from ..patterns import canonical, catalogue
    from .ops import _connect

    try:
        with _connect(settings) as conn:
            info = catalogue.describe(conn, args.pattern_type, args.name)
    except canonical.PatternInputError as exc:
        print(f"queue-assets: error: {exc}", file=sys.stderr)
        return 2
    if info is None:
        key = canonical.canonical_name(canonical.check_name(args.name))
        print(f"{args.pattern_type}/{key}: unknown (no instance has sent it)")
        return 1
    print(
        f"{info['pattern_type']}/{info['canonical_name']}  status {info['status']}  version {info['version']}"
        f"  rank {_fmt(info['rank'])}"
    )
    for label in (
        "display_name",
        "instances",
        "observations",
        "confidence",
        "languages",
        "top_indicators",
        "first_seen",
        "last_seen",
    ):
        print(f"  {label:15} {_fmt(info[label])}")
    print(f"  {'examples':15} {json.dumps(info['examples'])[:300]}")
    if info.get("approval"):  # QUEUE_ASSETS_PATTERN_APPROVAL=required (sql/014)
        who = f" by {info['reviewed_by']}" if info.get("reviewed_by") else ""
        why = f": {info['review_reason']}" if info.get("review_reason") else ""
        print(f"  {'approval':15} {info['approval']}{who}{why}"[:400])
    print(f"\nALIASES: {len(info['aliases'])}")
    print(
        "\n".join(
            _table(
                ["name", "observations", "first seen", "last seen"],
                [
                    [n, str(o), f"{f:%Y-%m-%d %H:%M}", f"{last:%Y-%m-%d %H:%M}"]
                    for n, o, f, last in info["aliases"]
                ],
            )
        )
    )
    print(f"\nEVIDENCE: {len(info['sightings'])} (instance, language)")
    print(
        "\n".join(
            _table(
                ["instance", "language", "observations", "confidence", "last seen"],
                [
                    [i, _fmt(lang), str(o), _fmt(c), f"{last:%Y-%m-%d %H:%M}"]
                    for i, lang, o, c, last in info["sightings"]
                ],
            )
        )
    )
    return 0


COMMANDS = {"patterns": cmd_patterns, "pattern": cmd_pattern}

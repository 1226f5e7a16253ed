"""Pattern distribution (PatternSyncWorker), without Dagster: commit the current ranking to the
templates repository when it changed, then fan an `aggregated_patterns` message out to every
active instance.

The files hold nothing that changes from run to run by itself (no run id, no timestamp), so the
same ranking gives the same bytes and no commit. The message is published every run, so an
instance that joined or came back gets the ranking within the hour; it carries the top of the
ranking that fits the message size limit, and says when it was cut.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from .. import contracts
from ..aggregation import core as aggregation
from ..db import one_row
from ..fanout import InboxSync, hub_message, publish, sync_inboxes, validate_hub_message
from ..git.repo import GitPushRejected, WorkCopy

PATTERNS_FOLDER = "patterns"
JSON_FILE = "aggregated_patterns.json"
SUMMARY_FILE = "README.md"
SUMMARY_TOP = 100
BRANCH = "main"
FORMAT_VERSION = 1
MESSAGE_MAX_PATTERNS = 1000
# Room left in the message for everything but the patterns (head, stats), under the contract's limit.
_MESSAGE_OVERHEAD = 16_384
PUSH_ATTEMPTS = 3

WorkCopyFactory = Callable[[], AbstractContextManager[WorkCopy]]


class DistributionRefused(RuntimeError):
    """The ranking failed validation; nothing was committed or published."""


@dataclass
class PatternDistribution:
    aggregation_run_id: int | None
    patterns: int
    committed: bool = False
    commit: str | None = None
    push_attempts: int = 0
    files: list[str] = field(default_factory=list)
    sent_patterns: int = 0
    truncated: bool = False
    copies: int = 0
    sync: InboxSync | None = None
    distribution_id: int | None = None


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def pattern_record(p: aggregation.RankedPattern) -> dict:
    """One pattern as written to Git and sent to instances (rounded, so the bytes are stable)."""
    return {
        "rank": p.rank,
        "pattern_type": p.pattern_type,
        "name": p.name,
        "score": round(p.score, 6),
        "instance_count": p.instance_count,
        "frequency": p.observation_count,
        "confidence": None if p.confidence is None else round(p.confidence, 6),
        "language": p.language,
        "indicators": list(p.top_indicators),
        "first_seen": _iso(p.first_seen),
        "last_seen": _iso(p.last_seen),
    }


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#])")


def md_cell(value: object, limit: int = 80) -> str:
    """`value` as one markdown table cell: one line, markdown characters escaped, shortened."""
    text = " ".join(str("" if value is None else value).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", text) or "—"


def render_files(ranking: Sequence[aggregation.RankedPattern]) -> dict[str, str]:
    """The files of `patterns/`: the full ranking as JSON and a readable summary of its top."""
    records = [pattern_record(p) for p in ranking]
    document = {
        "format": FORMAT_VERSION,
        "score": (
            f"instance_count + {aggregation.W_CONFIDENCE} * confidence + {aggregation.W_VOLUME} * "
            f"observations / (observations + {aggregation.VOLUME_HALF:g})"
        ),
        "pattern_count": len(records),
        "patterns": records,
    }
    lines = [
        "# Aggregated patterns",
        "",
        "The hub's ranking of the patterns its instances report, written by the hourly pattern",
        "distribution when the ranking changes. Instance agreement ranks first: a pattern reported by",
        "more instances always ranks above one reported by fewer; confidence (the mean over instances",
        "of each instance's mean confidence) and volume only break ties.",
        "",
        f"{len(records)} patterns; the full ranking is in `{JSON_FILE}`."
        + (f" The top {SUMMARY_TOP} are below." if len(records) > SUMMARY_TOP else ""),
        "",
        "| rank | kind | name | instances | observations | confidence | score | top indicators |",
        "|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for r in records[:SUMMARY_TOP]:
        conf = "—" if r["confidence"] is None else f"{r['confidence']:.3f}"
        lines.append(
            f"| {r['rank']} | {r['pattern_type']} | {md_cell(r['name'])} | {r['instance_count']} | "
            f"{r['frequency']} | {conf} | {r['score']:.4f} | {md_cell(', '.join(r['indicators'][:3]), 60)} |"
        )
    return {
        JSON_FILE: json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        SUMMARY_FILE: "\n".join(lines) + "\n",
    }


def fit_records(records: Sequence[dict], max_items: int, max_bytes: int) -> list[dict]:
    """The leading records, at most `max_items`, whose JSON fits in `max_bytes` together."""
    out, used = [], 0
    for record in records[:max_items]:
        size = len(json.dumps(record, ensure_ascii=False).encode()) + 2
        if used + size > max_bytes:
            break
        out.append(record)
        used += size
    return out


def patterns_message(
    ranking: Sequence[aggregation.RankedPattern],
    *,
    run_id: int,
    git_url: str,
    commit: str | None,
    max_patterns: int = MESSAGE_MAX_PATTERNS,
    max_bytes: int = contracts.MAX_BYTES,
) -> dict:
    """The `aggregated_patterns` message: the top of the ranking that fits, and stats about all of it."""
    records = [pattern_record(p) for p in ranking]
    sent = fit_records(records, max_patterns, max_bytes - _MESSAGE_OVERHEAD)
    stats = {
        "aggregation_run_id": run_id,
        "patterns_total": len(records),
        "patterns_sent": len(sent),
        "truncated": len(sent) < len(records),
        "git_url": git_url,
        "commit": commit,
        "path": f"{PATTERNS_FOLDER}/{JSON_FILE}",
    }
    return hub_message("aggregated_patterns", patterns=sent, stats=stats)


def _lost_race(exc: GitPushRejected) -> bool:
    """Whether the remote refused the push only because main moved on (not a hook or permissions)."""
    text = " ".join(exc.reasons).lower()
    return "fetch first" in text or "non-fast-forward" in text


def _commit_ranking(wc: WorkCopy, files: dict[str, str], run_id: int) -> tuple[str | None, bool, int]:
    """(head commit, whether a new commit was pushed, push attempts). Retries when the push lost
    a race with another writer of the branch: the work copy is rebuilt on the new remote state."""
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        wc.checkout_branch(BRANCH)
        wc.write_files(files, folder=PATTERNS_FOLDER, prune=True)
        sha = wc.commit_if_changed(
            f"Aggregated patterns from aggregation run {run_id}", paths=[PATTERNS_FOLDER]
        )
        if sha is None:
            return wc.head(), False, attempt - 1
        try:
            wc.push(BRANCH)
            return sha, True, attempt
        except GitPushRejected as exc:
            if attempt == PUSH_ATTEMPTS or not _lost_race(exc):
                raise
            wc.fetch()
    raise AssertionError("unreachable")


def distribute_patterns(
    conn: psycopg.Connection,
    work_copy: WorkCopyFactory,
    *,
    git_url: str,
    stale_after_s: int,
    dagster_run_id: str | None = None,
    max_patterns: int = MESSAGE_MAX_PATTERNS,
) -> PatternDistribution:
    """Validate the current ranking, commit it to `main` if it changed, fan it out, record it.

    `git_url` is the remote as it may be shown (no credentials). Git first, then the inbox sync,
    then one transaction for the publication and its record: a failed push publishes nothing, and
    a re-run after a failure commits nothing new (same bytes) and publishes again.
    """
    conn.commit()
    with conn.transaction():
        # One snapshot for the checks and the read, so a run committing meanwhile cannot slip in.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        problems = aggregation.check_keys(conn, contracts.PATTERN_TYPES) + aggregation.check_values(conn)
        if problems:
            raise DistributionRefused(
                "the ranking in hub.aggregated_patterns failed validation, so it is not distributed: "
                + "; ".join(problems)
            )
        ranking = aggregation.ranking(conn)
    if not ranking:
        return PatternDistribution(aggregation_run_id=None, patterns=0)
    run_id = ranking[0].run_id
    if run_id is None:  # the column is NOT NULL; a RankedPattern built elsewhere may lack it
        raise DistributionRefused(
            "the ranking's first row names no aggregation run, so it is not distributed"
        )
    result = PatternDistribution(aggregation_run_id=run_id, patterns=len(ranking))
    files = render_files(ranking)
    with work_copy() as wc:
        result.commit, result.committed, result.push_attempts = _commit_ranking(wc, files, run_id)
    if result.committed:
        result.files = [f"{PATTERNS_FOLDER}/{name}" for name in sorted(files)]
    message = patterns_message(
        ranking, run_id=run_id, git_url=git_url, commit=result.commit, max_patterns=max_patterns
    )
    result.sent_patterns = message["stats"]["patterns_sent"]
    result.truncated = message["stats"]["truncated"]
    validate_hub_message(message)
    # Inboxes first, in transactions of their own (a fleet appearing at once needs several).
    result.sync = sync_inboxes(conn, stale_after_s)
    with conn.transaction():
        result.copies = publish(conn, message, sync=False)
        (result.distribution_id,) = one_row(
            conn.execute(
                "INSERT INTO hub.distributions (kind, git_url, commit, files, aggregation_run_id, inbox_copies,"
                " dagster_run_id) VALUES ('aggregated_patterns', %s, %s, %s, %s, %s, %s) RETURNING distribution_id",
                (git_url, result.commit, result.files, run_id, result.copies, dagster_run_id),
            ),
            "the new distribution record",
        )
    return result

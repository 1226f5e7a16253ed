"""Template distribution (TemplateDistributionWorker), without Dagster: tell every active instance,
and the `template_updates` queue, which files of the templates repository changed since the last
distributed commit.

The last distributed commit is kept per repository in `hub.distribution_state`, so a changed
`TEMPLATES_REPO_URL` starts over with the new repository's whole tree. When the remote's `main`
is where it was, nothing is published. Files under `patterns/` are left out: pattern distribution
announces them hourly as `aggregated_patterns`, and counting its commits here would turn every
4-hour run into an update. The publication, the `template_updates` message and the new state
are written in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import psycopg

from .. import contracts
from ..db import one_row
from ..fanout import InboxSync, hub_message, publish, sync_inboxes, validate_hub_message
from ..git.repo import GitError, WorkCopy
from ..queues import TEMPLATE_UPDATES
from .patterns import PATTERNS_FOLDER

BRANCH = "main"
KIND = "templates_updated"
EXCLUDED_PREFIXES = (PATTERNS_FOLDER + "/",)
_DISTRIBUTION_LOCK_KEY = 0x5141_5444  # "QATD": one template distribution at a time
# Room left in the message for everything but the file list, under the contract's size limit.
_MESSAGE_OVERHEAD = 16_384

WorkCopyFactory = Callable[[], AbstractContextManager[WorkCopy]]


@dataclass
class TemplateDistribution:
    commit: str | None
    previous_commit: str | None
    outcome: str
    """`published`, `unchanged` (main did not move), `no_template_changes` (only excluded paths
    changed), or `no_branch` (the remote has no `main` yet)."""
    files: list[str] = field(default_factory=list)
    files_sent: int = 0
    full_tree: bool = False
    """True when the list is the whole tree: first distribution, or the old commit is gone."""
    copies: int = 0
    queue_msg_id: int | None = None
    sync: InboxSync | None = None

    @property
    def published(self) -> bool:
        return self.outcome == "published"


def last_distributed(conn: psycopg.Connection, git_url: str) -> str | None:
    row = conn.execute(
        "SELECT last_commit FROM hub.distribution_state WHERE kind = %s AND git_url = %s", (KIND, git_url)
    ).fetchone()
    return row[0] if row else None


def _record_state(conn: psycopg.Connection, git_url: str, commit: str) -> None:
    conn.execute(
        "INSERT INTO hub.distribution_state (kind, git_url, last_commit) VALUES (%s, %s, %s)"
        " ON CONFLICT (kind, git_url) DO UPDATE SET last_commit = excluded.last_commit,"
        " updated_at = clock_timestamp()",
        (KIND, git_url, commit),
    )


def fit_paths(paths: list[str], max_bytes: int) -> list[str]:
    out, used = [], 0
    for path in paths:
        size = len(json.dumps(path, ensure_ascii=False).encode()) + 1
        if used + size > max_bytes:
            break
        out.append(path)
        used += size
    return out


def templates_message(
    git_url: str,
    commit: str,
    previous: str | None,
    files: list[str],
    *,
    full_tree: bool,
    max_bytes: int = contracts.MAX_BYTES,
) -> dict:
    """The `templates_updated` message; a file list too long for one message is cut and says so."""
    sent = fit_paths(files, max_bytes - _MESSAGE_OVERHEAD)
    return hub_message(
        KIND,
        git_url=git_url,
        commit=commit,
        updated_files=sent,
        previous_commit=previous,
        full_tree=full_tree,
        files_changed=len(files),
        files_truncated=len(sent) < len(files),
    )


def distribute_templates(
    conn: psycopg.Connection,
    work_copy: WorkCopyFactory,
    *,
    git_url: str,
    stale_after_s: int,
    dagster_run_id: str | None = None,
) -> TemplateDistribution:
    """Publish `templates_updated` for what changed on `main` since the last distribution, if anything.

    `git_url` is the remote as it may be shown (no credentials); it goes into the message and
    keys the state.
    """
    previous = last_distributed(conn, git_url)
    conn.commit()
    full_tree = previous is None
    with work_copy() as wc:
        head = wc.remote_head(BRANCH)
        if head is None:
            return TemplateDistribution(commit=None, previous_commit=previous, outcome="no_branch")
        if head == previous:
            return TemplateDistribution(commit=head, previous_commit=previous, outcome="unchanged")
        try:
            changed = wc.changed_files(previous, head)
        except GitError:
            # The old commit is not in the remote's history any more (force-push, other repository
            # at the same URL): announce the whole tree rather than guess.
            changed, full_tree = wc.changed_files(None, head), True
    files = [f for f in changed if not f.startswith(EXCLUDED_PREFIXES)]
    result = TemplateDistribution(
        commit=head, previous_commit=previous, outcome="published", files=files, full_tree=full_tree
    )
    message = templates_message(git_url, head, previous, files, full_tree=full_tree) if files else None
    if message is not None:
        validate_hub_message(message)
        # Inboxes first, in transactions of their own (a fleet appearing at once needs several).
        result.sync = sync_inboxes(conn, stale_after_s)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DISTRIBUTION_LOCK_KEY,))
        current = last_distributed(conn, git_url)
        if current != previous:
            if current == head:
                result.outcome, result.files = "unchanged", []
                return result
            raise RuntimeError(
                f"another run distributed commit {current} of {git_url} while this one was reading "
                f"Git (this run saw {previous}); run template_updates again"
            )
        if message is None:  # no template files changed
            result.outcome = "no_template_changes"
            _record_state(conn, git_url, head)
            return result
        result.files_sent = len(message["updated_files"])
        result.copies = publish(conn, message, sync=False)
        body = contracts.parse_for_queue(TEMPLATE_UPDATES, json.dumps(message)).model_dump(
            mode="json", exclude_unset=True
        )
        (result.queue_msg_id,) = one_row(
            conn.execute("SELECT * FROM pgmq.send(%s, %s::jsonb)", (TEMPLATE_UPDATES, json.dumps(body))),
            "pgmq.send to template_updates",
        )
        conn.execute(
            "INSERT INTO hub.distributions (kind, git_url, commit, previous_commit, files, inbox_copies,"
            " queue_msg_id, dagster_run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                KIND,
                git_url,
                head,
                previous,
                result.files[: result.files_sent],
                result.copies,
                result.queue_msg_id,
                dagster_run_id,
            ),
        )
        _record_state(conn, git_url, head)
    return result

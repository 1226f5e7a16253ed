"""One export cycle, end to end, without Dagster: Git branch, push (checked), record, PR, fan-out.

`run_export` is idempotent per cycle:
- the branch `feature/learned-patterns-YYYYMMDD` is rebuilt from the remote's state of that branch
  (or from the base branch the first time), the folder `learned_patterns/` is written to hold
  exactly the selected artifacts, and a commit is made only when the tree changed; so a re-run
  with the same data makes no commit and pushes nothing;
- the pull request is found by its head branch and updated, never opened twice;
- `learning_exported` is announced only when the commit or the PR URL differs from the last
  announcement recorded in hub.exports. The inboxes it needs are created first, in bounded
  transactions of their own; a failed announcement is recorded (`notify_error`) and never fails
  the export, whose branch and PR are already made.

Each step is recorded in hub.exports before the next one starts, so a failure anywhere leaves a
record saying how far the cycle got; the branch (the data) is on the remote before the PR step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum

import psycopg

from ..contracts import LearningExported
from ..fanout import sync_inboxes
from ..git.github import GitHubPullRequests, PullRequestError
from ..git.repo import GitError, GitPushRejected, WorkCopy
from ..queues import TOPIC_PREFIX
from ..redact import redact
from ..settings import Settings
from .learning import export_totals, selected_artifacts
from .render import (
    SUMMARY_FILE,
    SUMMARY_TOP,
    ExportTotals,
    artifact_document,
    artifact_file_name,
    branch_for,
    commit_message,
    pr_body,
    pr_title,
    summary_markdown,
)
from .settings import EXPORT_FOLDER, ExportSettings

LEARNING_EXPORTED_KEY = f"{TOPIC_PREFIX}.learning_exported"

# fanout.publish: (conn, message, routing key, sync=False) -> copies, in the caller's transaction.
Publish = Callable[..., int]


class ExportFailed(RuntimeError):
    """The cycle could not finish; the message says which step, why, and what is already safe."""


@dataclass
class ExportResult:
    cycle: date
    branch: str
    base_branch: str
    remote_url: str
    artifacts: int = 0
    files_written: int = 0
    branch_started: str = ""
    commit_sha: str | None = None
    committed: bool = False
    pushed: bool = False
    status: str = ""
    """The last `ExportStatus` recorded in hub.exports (its value)."""
    provider: str | None = None
    pr_number: int | None = None
    pr_url: str | None = None
    pr_action: str | None = None
    notified: int | None = None
    """Inboxes that got `learning_exported`; None when nothing new was announced."""
    notify_error: str | None = None
    """Why `learning_exported` could not be announced (the export itself is complete); None: no error."""
    changed_files: list[str] = field(default_factory=list)
    """Files that differ from the base branch."""


def learning_exported_message(result: ExportResult, now: datetime | None = None) -> dict:
    """The `learning_exported` message (contract: `queue_assets.contracts.LearningExported`)."""
    msg = LearningExported(
        type="learning_exported",
        timestamp=now or datetime.now(UTC),
        branch=result.branch,
        pr_url=result.pr_url,
        artifacts_count=result.artifacts,
    )
    return msg.model_dump(mode="json")


class ExportStatus(StrEnum):
    """How far a cycle got: the `hub.exports.status` values, one per phase that ends with a record."""

    NO_DIFF = "no_diff"
    """Nothing to review: the base branch already holds every artifact (or the PR has no commits)."""
    PUSH_FAILED = "push_failed"
    PUSHED = "pushed"
    """The branch is on the remote; the pull-request step has not finished yet."""
    BRANCH_ONLY = "branch_only"
    """Pushed, and no pull-request provider is configured."""
    PR_FAILED = "pr_failed"
    PR_OPEN = "pr_open"

    @property
    def announces(self) -> bool:
        """Whether a cycle that ended here announces `learning_exported`."""
        return self in (ExportStatus.BRANCH_ONLY, ExportStatus.PR_OPEN)


@dataclass(frozen=True)
class _Plan:
    """What the cycle exports: decided before any Git work."""

    cycle: date
    branch: str
    totals: ExportTotals
    summary: str


@dataclass(frozen=True)
class _Branch:
    """The branch as written in the work copy, before the push."""

    remote_before: str | None
    """The remote's head of the branch before this run; None: the branch is new."""
    needed: bool
    """False: no artifact differs from the base branch, so no branch and no PR."""


@dataclass
class _Recorder:
    """Writes the cycle's progress to hub.exports, each record its own transaction."""

    conn: psycopg.Connection
    result: ExportResult
    run_id: str | None

    def __call__(self, status: ExportStatus, *, error: str | None = None, new_attempt: bool = False) -> None:
        _record(
            self.conn, self.result, status=status, error=error, run_id=self.run_id, new_attempt=new_attempt
        )


def _record(
    conn: psycopg.Connection,
    result: ExportResult,
    *,
    status: ExportStatus,
    error: str | None,
    run_id: str | None,
    new_attempt: bool = False,
) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO hub.exports AS e (cycle_date, branch, base_branch, remote_url, commit_sha,"
            " artifact_count, status, provider, pr_number, pr_url, error, last_run_id)"
            " VALUES (%(cycle)s, %(branch)s, %(base)s, %(remote)s, %(sha)s, %(n)s, %(status)s, %(provider)s,"
            "  %(pr_number)s, %(pr_url)s, %(error)s, %(run_id)s)"
            " ON CONFLICT (cycle_date) DO UPDATE SET branch = excluded.branch,"
            "  base_branch = excluded.base_branch, remote_url = excluded.remote_url,"
            "  commit_sha = coalesce(excluded.commit_sha, e.commit_sha),"
            "  artifact_count = excluded.artifact_count, status = excluded.status,"
            "  provider = excluded.provider, pr_number = coalesce(excluded.pr_number, e.pr_number),"
            "  pr_url = coalesce(excluded.pr_url, e.pr_url), error = excluded.error,"
            "  last_run_id = excluded.last_run_id,"
            "  attempts = e.attempts + %(attempt)s, updated_at = clock_timestamp()",
            {
                "cycle": result.cycle,
                "branch": result.branch,
                "base": result.base_branch,
                "remote": result.remote_url,
                "sha": result.commit_sha if result.pushed or status is ExportStatus.NO_DIFF else None,
                "n": result.artifacts,
                "status": status.value,
                "provider": result.provider,
                "pr_number": result.pr_number,
                "pr_url": result.pr_url,
                "error": error,
                "run_id": run_id,
                "attempt": 1 if new_attempt else 0,
            },
        )
    result.status = status.value


def run_export(
    conn: psycopg.Connection,
    *,
    cycle: date,
    cutoff: datetime,
    settings: ExportSettings,
    work_copy: Callable[[], contextlib.AbstractContextManager[WorkCopy]],
    remote_url: str,
    provider: GitHubPullRequests | None,
    publish: Publish | None,
    run_id: str | None = None,
    log: Callable[[str], None] = lambda _m: None,
    stale_after_s: int = Settings.stale_after_s,
) -> ExportResult:
    """Export cycle `cycle` (its selected rows in hub.aggregated_learning) to its branch and PR.

    `conn` must be in autocommit mode: each record in hub.exports is its own transaction and must
    survive a failure in a later step. `publish` sends in the caller's transaction without syncing
    inboxes (`fanout.publish`); the inboxes are synced first with `stale_after_s` (the asset passes
    the run's `QUEUE_ASSETS_STALE_AFTER_S`; default: that setting's default).

    The phases: plan, write the branch, push, record, propose the PR, announce.
    """
    if not conn.autocommit:
        raise ValueError(
            "run_export needs an autocommit connection (each hub.exports record commits on its own)"
        )
    result = ExportResult(
        cycle=cycle,
        branch=branch_for(cycle),
        base_branch=settings.base_branch,
        remote_url=redact(remote_url),
        provider=provider.name if provider else None,
    )
    plan = _plan(conn, cycle, cutoff, settings, result)
    record = _Recorder(conn, result, run_id)

    with work_copy() as wc:
        branch = _write_branch(conn, wc, plan, settings, result)
        if not branch.needed:
            # No artifact differs from the base branch (e.g. last cycle's PR was merged and nothing
            # was learned since; only the summary's date would change): nothing to review, so no
            # branch and no PR. A branch that already exists for this cycle is always kept current.
            log(
                f"{settings.base_branch} already holds every exported artifact; no branch or pull request needed"
            )
            record(ExportStatus.NO_DIFF, new_attempt=True)
            return result
        problem = _push(wc, plan, branch, result, log)
    if problem is not None:
        record(ExportStatus.PUSH_FAILED, error=problem, new_attempt=True)
        raise ExportFailed(
            f"cycle {cycle}: {problem}. Nothing was recorded as exported; fix the remote "
            "and re-run this cycle."
        )
    record(ExportStatus.PUSHED, new_attempt=True)
    log(
        f"{plan.branch} is at {(result.commit_sha or '?')[:12]} on {result.remote_url}"
        f" ({'new commit' if result.committed else 'unchanged'})"
    )

    status = _propose_pr(provider, plan, settings, result, record, log)
    if publish is not None and status.announces:
        result.notified = _announce(conn, result, publish, stale_after_s, log)
    return result


def _plan(
    conn: psycopg.Connection, cycle: date, cutoff: datetime, settings: ExportSettings, result: ExportResult
) -> _Plan:
    """The cycle's totals and summary; refuses an empty cycle (an empty export is never pushed)."""
    totals = export_totals(conn, cycle)
    result.artifacts = totals.artifacts
    if totals.artifacts == 0:
        raise ExportFailed(
            f"cycle {cycle}: hub.aggregated_learning holds no selected artifact for this cycle; "
            "materialize aggregated_learning for it first (an empty export is never pushed)"
        )
    top = list(selected_artifacts(conn, cycle, limit=SUMMARY_TOP))
    summary = summary_markdown(cycle, cutoff, settings, totals, top)
    return _Plan(cycle=cycle, branch=result.branch, totals=totals, summary=summary)


def _write_branch(
    conn: psycopg.Connection, wc: WorkCopy, plan: _Plan, settings: ExportSettings, result: ExportResult
) -> _Branch:
    """Build the branch from the remote's state, write `learned_patterns/`, commit if it changed."""

    def files() -> Iterator[tuple[str, str]]:
        yield SUMMARY_FILE, plan.summary
        for row in selected_artifacts(conn, plan.cycle):
            yield artifact_file_name(row.artifact_id), artifact_document(row)

    result.branch_started = wc.checkout_branch(plan.branch, base=settings.base_branch)
    remote_before = wc.remote_head(plan.branch)
    base_head = wc.remote_head(settings.base_branch)
    result.files_written = len(wc.write_files(files(), folder=EXPORT_FOLDER, prune=True))
    new_sha = wc.commit_if_changed(commit_message(plan.cycle, plan.totals.artifacts), paths=[EXPORT_FOLDER])
    result.committed = new_sha is not None
    result.commit_sha = commit_sha = wc.head()
    result.changed_files = wc.changed_files(base_head, commit_sha) if base_head and commit_sha else []
    learned = [f for f in result.changed_files if f != f"{EXPORT_FOLDER}/{SUMMARY_FILE}"]
    if remote_before is None and not learned:
        result.commit_sha = base_head
        return _Branch(remote_before=remote_before, needed=False)
    return _Branch(remote_before=remote_before, needed=True)


def _push(
    wc: WorkCopy, plan: _Plan, branch: _Branch, result: ExportResult, log: Callable[[str], None]
) -> str | None:
    """Push the branch unless the remote already has this commit; returns why a push was rejected."""
    if result.commit_sha == branch.remote_before:
        result.pushed = True  # the remote already has this exact commit
        log(f"{plan.branch} on the remote already holds this content; nothing pushed")
        return None
    try:
        wc.push(plan.branch)
    except GitPushRejected as exc:
        return str(exc)
    result.pushed = True
    return None


def _propose_pr(
    provider: GitHubPullRequests | None,
    plan: _Plan,
    settings: ExportSettings,
    result: ExportResult,
    record: _Recorder,
    log: Callable[[str], None],
) -> ExportStatus:
    """Open or update the cycle's pull request (none without a provider); records how it ended."""
    if provider is None:
        record(ExportStatus.BRANCH_ONLY)
        return ExportStatus.BRANCH_ONLY
    try:
        pr = provider.ensure(
            head=plan.branch,
            base=settings.base_branch,
            title=pr_title(plan.cycle, plan.totals.artifacts),
            body=pr_body(plan.summary, plan.branch),
        )
    except PullRequestError as exc:
        problem = str(exc)
        record(ExportStatus.PR_FAILED, error=problem)
        raise ExportFailed(
            f"cycle {plan.cycle}: branch {plan.branch} was pushed at {(result.commit_sha or '?')[:12]} and recorded in "
            f"hub.exports, but the pull request step failed: {problem}. Nothing is lost: re-run this "
            "cycle to open or update the pull request."
        ) from None
    result.pr_number, result.pr_url, result.pr_action = pr.number, pr.url, pr.action
    status = ExportStatus.NO_DIFF if pr.action == "no_diff" else ExportStatus.PR_OPEN
    record(status)
    log(f"pull request {pr.action}: {pr.url or '(none: no commits beyond the base)'}")
    return status


def _announce(
    conn: psycopg.Connection,
    result: ExportResult,
    publish: Publish,
    stale_after_s: int,
    log: Callable[[str], None],
) -> int | None:
    """Fan `learning_exported` out once per (commit, PR URL); the record and the messages commit together.

    The branch and the PR are already made and recorded when this runs, so a failure here must not
    fail the export: it is recorded in hub.exports (`notify_error`, the announcement stays pending,
    so the next run of the cycle sends it) and returned as -1 for the asset to report.
    """
    if _already_announced(conn, result):
        return None
    try:
        # Inboxes first, in bounded transactions of their own: creating many pgmq queues in the
        # announcement's transaction would exceed the server's lock table (fanout.CREATE_BATCH).
        sync_inboxes(conn, stale_after_s)
        with conn.transaction():
            if _already_announced(conn, result, lock=True):
                return None
            count = publish(conn, learning_exported_message(result), LEARNING_EXPORTED_KEY, sync=False)
            conn.execute(
                "UPDATE hub.exports SET notified_sha = %s, notified_pr_url = %s, notified_at = clock_timestamp(),"
                " notified_count = %s, notify_error = NULL WHERE cycle_date = %s",
                (result.commit_sha, result.pr_url, count, result.cycle),
            )
    except (psycopg.Error, RuntimeError, ValueError) as exc:
        result.notify_error = redact(f"{type(exc).__name__}: {exc}")[:2000]
        log(
            f"learning_exported was not announced: {result.notify_error}; the export itself is complete, "
            "re-run this cycle to announce it"
        )
        with conn.transaction():
            conn.execute(
                "UPDATE hub.exports SET notify_error = %s WHERE cycle_date = %s",
                (result.notify_error, result.cycle),
            )
        return None
    return count


def _already_announced(conn: psycopg.Connection, result: ExportResult, *, lock: bool = False) -> bool:
    row = conn.execute(
        "SELECT notified_sha, notified_pr_url FROM hub.exports WHERE cycle_date = %s"
        + (" FOR UPDATE" if lock else ""),
        (result.cycle,),
    ).fetchone()
    return row is not None and row[0] == result.commit_sha and row[1] == result.pr_url


__all__ = [
    "ExportFailed",
    "ExportResult",
    "ExportStatus",
    "GitError",
    "LEARNING_EXPORTED_KEY",
    "run_export",
    "learning_exported_message",
]

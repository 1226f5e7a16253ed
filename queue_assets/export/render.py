"""What the export writes: safe file names, one JSON document per artifact, the markdown summary,
and the pull request's title and body. Pure functions; the same rows always give the same bytes,
so a re-run with unchanged data leaves the same Git tree.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from .settings import BRANCH_PREFIX, EXPORT_FOLDER, ExportSettings

SUMMARY_FILE = "README.md"
SUMMARY_TOP = 100
PR_BODY_LIMIT = 60_000  # GitHub refuses bodies over 65,536 characters


@dataclass(frozen=True)
class ArtifactRow:
    """One artifact of a cycle's snapshot (a row of hub.aggregated_learning)."""

    artifact_id: str
    artifact_type: str | None
    name: str | None
    content: object
    total_usage: int
    success_rate: float
    report_count: int
    instance_count: int
    instances: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime


@dataclass
class ExportTotals:
    """What the summary says about the whole export (the rows themselves are streamed)."""

    artifacts: int = 0
    total_usage: int = 0
    instances: int = 0


def branch_for(cycle: date) -> str:
    """The one branch of a cycle: `feature/learned-patterns-YYYYMMDD`."""
    return f"{BRANCH_PREFIX}{cycle:%Y%m%d}"


def slugify(text: str, max_len: int = 60) -> str:
    """Lower-case ASCII letters, digits and `-` only (so never `.`, `/`, `\\` or `..`); never empty."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_len].strip("-") or "artifact"


def artifact_file_name(artifact_id: str) -> str:
    """`<slug>-<10 hex of sha256(artifact_id)>.json`: readable, stable, and unique per artifact id.

    The hash keeps ids that slugify alike (`a/b`, `a_b`, `A B`) apart, and keeps a name stable
    when other artifacts come and go.
    """
    digest = hashlib.sha256(str(artifact_id).encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{slugify(artifact_id)}-{digest}.json"


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def artifact_document(row: ArtifactRow) -> str:
    """The JSON file of one artifact. No cycle date inside: a file changes only when its data does."""
    doc = {
        "artifact_id": row.artifact_id,
        "artifact_type": row.artifact_type,
        "name": row.name,
        "total_usage": row.total_usage,
        "success_rate": row.success_rate,
        "report_count": row.report_count,
        "instance_count": row.instance_count,
        "instances": list(row.instances),
        "first_seen": _iso(row.first_seen),
        "last_seen": _iso(row.last_seen),
        "content": row.content,
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#!~])")


def md_text(value: object, limit: int = 80) -> str:
    """`value` safe inside a markdown table cell: one line, special characters escaped, shortened."""
    text = " ".join(str(value if value is not None else "").split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", text) or "—"


def summary_markdown(
    cycle: date,
    cutoff: datetime,
    settings: ExportSettings,
    totals: ExportTotals,
    top: Sequence[ArtifactRow],
) -> str:
    """The readable summary written as `learned_patterns/README.md` and used as the PR body."""
    lines = [
        f"# Learned patterns — cycle {cycle.isoformat()}",
        "",
        "Exported by the queue_assets hub (KnowledgeExportWorker): learned artifacts reported by the",
        f"fleet's instances and stored before {_iso(cutoff)}, combined per artifact id.",
        "",
        f"Selection: total usage ≥ {settings.min_usage}, usage-weighted success rate ≥ "
        f"{settings.min_success_rate:g}, reported by ≥ {settings.min_instances} instance(s).",
        "",
        "| | |",
        "|---|---:|",
        f"| artifacts exported | {totals.artifacts} |",
        f"| total usage | {totals.total_usage} |",
        f"| contributing instances | {totals.instances} |",
        "",
    ]
    if top:
        lines += [
            f"## Top {len(top)} by usage" if totals.artifacts > len(top) else "## Artifacts by usage",
            "",
            "| artifact | type | name | usage | success rate | instances | file |",
            "|---|---|---|---:|---:|---:|---|",
        ]
        for r in top:
            file_name = artifact_file_name(r.artifact_id)
            lines.append(
                f"| {md_text(r.artifact_id)} | {md_text(r.artifact_type, 30)} | {md_text(r.name)} | "
                f"{r.total_usage} | {r.success_rate:.3f} | {r.instance_count} | [{file_name}]({file_name}) |"
            )
        if totals.artifacts > len(top):
            lines += [
                "",
                f"_…and {totals.artifacts - len(top)} more: one JSON file per artifact in this folder._",
            ]
    else:
        lines.append("_No artifact passed the thresholds this cycle._")
    return "\n".join(lines) + "\n"


def pr_title(cycle: date, artifacts: int) -> str:
    return f"Learned patterns {cycle.isoformat()}: {artifacts} artifact{'s' if artifacts != 1 else ''}"


def pr_body(summary: str, branch: str) -> str:
    foot = (
        f"\n---\nBranch `{branch}` is this cycle's only branch; re-runs of the cycle update it and this "
        f"pull request in place. Files live in `{EXPORT_FOLDER}/`.\n"
    )
    if len(summary) + len(foot) > PR_BODY_LIMIT:
        summary = summary[: PR_BODY_LIMIT - len(foot) - 40] + "\n\n_(summary shortened)_\n"
    return summary + foot


def commit_message(cycle: date, artifacts: int) -> str:
    return (
        f"Learned patterns export for {cycle.isoformat()}: {artifacts} artifact{'s' if artifacts != 1 else ''}\n\n"
        "Written by the queue_assets hub (KnowledgeExportWorker). Re-runs of this cycle update this branch."
    )

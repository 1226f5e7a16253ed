"""The learned-pattern export on real PostgreSQL + pgmq, real Git remotes and real Dagster runs.

GitHub's REST API is the one thing off this machine; a GitHub-shaped server on loopback
(`fake_github`) stands in for it and records every request.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from queue_assets.export import learning
from queue_assets.export.assets import (
    DAILY_FRESHNESS,
    EXPORT_PARTITIONS,
    aggregated_learning,
    learned_pattern_export,
)
from queue_assets.export.core import ExportFailed, run_export
from queue_assets.export.render import artifact_file_name, branch_for
from queue_assets.export.resources import ExportSettingsResource
from queue_assets.export.schedules import EXPORT_CRON, knowledge_export_schedule
from queue_assets.export.settings import ExportSettings
from queue_assets.git.github import GitHubPullRequests, GitHubSettings
from queue_assets.git.repo import ensure_embedded_templates_remote
from queue_assets.git.resources import GitHubResource, TemplatesRepoResource
from queue_assets.names import inbox_queue_for
from queue_assets.resources import SharedQueueResource
from queue_assets.settings import SettingsError
from queue_assets_tests.fake_github import FakeGitHub, serve_fake_github
from queue_assets_tests.helpers import count

TOKEN = "ghp_TOKEN-must-never-leak-4242"
HOOK_MESSAGE = "policy: learned-pattern exports are paused by the reviewers"
_msg_ids = itertools.count(1)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in (
        "GITHUB_REPOSITORY",
        "GITHUB_TOKEN",
        "GITHUB_API_URL",
        "TEMPLATES_REPO_URL",
        "QUEUE_ASSETS_EXPORT_MIN_USAGE",
        "QUEUE_ASSETS_EXPORT_MIN_SUCCESS_RATE",
        "QUEUE_ASSETS_EXPORT_MIN_INSTANCES",
        "QUEUE_ASSETS_EXPORT_MAX_GROWTH",
        "QUEUE_ASSETS_EXPORT_BASE_BRANCH",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cycle() -> date:
    return date.fromisoformat(EXPORT_PARTITIONS.get_last_partition_key())


@pytest.fixture
def remote(tmp_path) -> str:
    return ensure_embedded_templates_remote(tmp_path / "data")


@pytest.fixture
def aconn(db_url):
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def add_report(
    conn,
    instance: str,
    artifact_id: str,
    usage: int,
    rate: float,
    *,
    name: str | None = None,
    content: object = None,
    observed_at: datetime | None = None,
    stored_at: datetime | None = None,
    artifact_type: str = "template",
) -> None:
    conn.execute(
        "INSERT INTO hub.learned_artifacts (queue, msg_id, ordinal, instance_id, artifact_id, artifact_type,"
        " name, content, usage_count, success_rate, observed_at, stored_at)"
        " VALUES ('learned_patterns', %s, 0, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, coalesce(%s, clock_timestamp()))",
        (
            next(_msg_ids),
            instance,
            artifact_id,
            artifact_type,
            name or artifact_id,
            json.dumps(content if content is not None else {"body": artifact_id}),
            usage,
            rate,
            observed_at or datetime.now(UTC),
            stored_at,
        ),
    )
    if not conn.autocommit:
        conn.commit()


def add_standard_fleet(conn) -> None:
    """Three artifacts that pass the default thresholds, one that does not."""
    add_report(conn, "singularity-1", "tmpl-genserver-cache", 500, 0.95)
    add_report(conn, "singularity-2", "tmpl-genserver-cache", 300, 0.90)
    add_report(conn, "singularity-2", "tmpl-axum-service", 120, 0.85)
    add_report(conn, "singularity-3", "tmpl-phoenix-live", 40, 0.99)
    add_report(conn, "singularity-3", "tmpl-rarely-works", 900, 0.10)


def add_instance(conn, instance: str, heartbeat_age: timedelta) -> None:
    seen = datetime.now(UTC) - heartbeat_age
    conn.execute(
        "INSERT INTO hub.instances (instance_id, inbox_queue, first_seen, last_seen, last_heartbeat,"
        " heartbeat_count) VALUES (%s, %s, %s, %s, %s, 1)",
        (instance, inbox_queue_for(instance), seen, seen, seen),
    )


def branches(remote: str) -> dict[str, str]:
    out = subprocess.run(
        ["git", "-C", remote, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split() for line in out.splitlines())


def git_out(remote: str, *args: str) -> str:
    return subprocess.run(["git", "-C", remote, *args], capture_output=True, text=True, check=True).stdout


def resources(db_url: str, remote: str, tmp_path: Path, fake: FakeGitHub | None = None) -> dict:
    github = (
        GitHubResource(
            repository=f"{fake.owner}/{fake.repo}", token=fake.token, api_url=fake.url, retry_backoff_s=0.0
        )
        if fake
        else GitHubResource()
    )
    return {
        "shared_queue": SharedQueueResource(db_url=db_url),
        "templates_repo": TemplatesRepoResource(url=remote, data_dir=str(tmp_path / "data")),
        "github": github,
        # As export.defs builds it: from QUEUE_ASSETS_EXPORT_* when the definitions load.
        "export_settings": ExportSettingsResource.from_settings(ExportSettings.from_env()),
    }


def materialize(
    cycle: date, res: dict, run_config: dict | None = None, instance: dg.DagsterInstance | None = None
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [aggregated_learning, learned_pattern_export],
        partition_key=cycle.isoformat(),
        resources=res,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        run_config=run_config,
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    texts = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            texts.append(event.event_specific_data.error.to_string())
    return "\n".join(texts)


def export_row(conn, cycle: date) -> dict:
    cur = conn.execute("SELECT * FROM hub.exports WHERE cycle_date = %s", (cycle,))
    row = cur.fetchone()
    return dict(zip([d.name for d in cur.description], row, strict=True)) if row else {}


# --- aggregation -----------------------------------------------------------------------------


def test_aggregated_learning_combines_usage_weighted_rates_and_contributing_instances(aconn, cycle):
    t0 = datetime(2025, 10, 20, 12, tzinfo=UTC)
    # tmpl-a: 100 uses at 0.9 and 300 at 0.5 -> 400 uses, (90 + 150) / 400 = 0.6, two instances.
    add_report(aconn, "inst-1", "tmpl-a", 100, 0.9, name="old name", observed_at=t0)
    add_report(
        aconn,
        "inst-2",
        "tmpl-a",
        300,
        0.5,
        name="new name",
        content={"v": 2},
        observed_at=t0 + timedelta(hours=5),
    )
    # tmpl-b: never used -> the plain mean of its rates, (0.2 + 0.4) / 2 = 0.3.
    add_report(aconn, "inst-1", "tmpl-b", 0, 0.2, observed_at=t0)
    add_report(aconn, "inst-1", "tmpl-b", 0, 0.4, observed_at=t0 + timedelta(hours=1))
    # A late report, stored after the cycle's cutoff, counts in the next cycle only.
    cutoff = datetime.now(UTC) + timedelta(hours=1)
    add_report(aconn, "inst-3", "tmpl-a", 1000, 0.0, stored_at=cutoff + timedelta(minutes=1))
    s = learning.aggregate_learning(
        aconn, cycle, cutoff, ExportSettings(min_usage=100, min_success_rate=0.5, min_instances=2)
    )
    assert (s.artifacts, s.selected, s.reports, s.selected_usage, s.instances) == (2, 1, 4, 400, 2)
    rows = {
        r[0]: r[1:]
        for r in aconn.execute(
            "SELECT artifact_id, total_usage, success_rate, report_count, instance_count, instances, name,"
            " content, first_seen, last_seen, selected FROM hub.aggregated_learning WHERE cycle_date = %s",
            (cycle,),
        )
    }
    assert rows["tmpl-a"] == (
        400,
        0.6,
        2,
        2,
        ["inst-1", "inst-2"],
        "new name",
        {"v": 2},
        t0,
        t0 + timedelta(hours=5),
        True,
    )
    assert rows["tmpl-b"][:5] == (0, 0.3, 2, 1, ["inst-1"])
    assert rows["tmpl-b"][-1] is False
    # The next cycle (a later cutoff) sees the late report: 1400 uses, 240 / 1400.
    nxt = learning.aggregate_learning(
        aconn,
        cycle + timedelta(days=1),
        cutoff + timedelta(days=1),
        ExportSettings(min_usage=100, min_success_rate=0.0, min_instances=1),
    )
    assert nxt.selected_usage == 1400
    rate = aconn.execute(
        "SELECT success_rate FROM hub.aggregated_learning WHERE cycle_date = %s AND artifact_id = 'tmpl-a'",
        (cycle + timedelta(days=1),),
    ).fetchone()[0]
    assert rate == round(240 / 1400, 6)


def test_rerunning_a_cycles_aggregation_replaces_its_snapshot(aconn, cycle):
    add_standard_fleet(aconn)
    cutoff = datetime.now(UTC) + timedelta(hours=1)
    first = learning.aggregate_learning(aconn, cycle, cutoff, ExportSettings())
    second = learning.aggregate_learning(aconn, cycle, cutoff, ExportSettings())
    assert (first.artifacts, first.selected) == (second.artifacts, second.selected) == (4, 3)
    assert count(aconn, "hub.aggregated_learning") == 4


def test_threshold_settings_are_validated_with_the_variables_name():
    with pytest.raises(SettingsError) as info:
        ExportSettings.from_env(
            {
                "QUEUE_ASSETS_EXPORT_MIN_SUCCESS_RATE": "1.5",
                "QUEUE_ASSETS_EXPORT_MIN_USAGE": "lots",
                "QUEUE_ASSETS_EXPORT_MAX_GROWTH": "nan",
                "QUEUE_ASSETS_EXPORT_BASE_BRANCH": "../main",
            }
        )
    text = str(info.value)
    for name in (
        "QUEUE_ASSETS_EXPORT_MIN_SUCCESS_RATE",
        "QUEUE_ASSETS_EXPORT_MIN_USAGE",
        "QUEUE_ASSETS_EXPORT_MAX_GROWTH",
        "QUEUE_ASSETS_EXPORT_BASE_BRANCH",
    ):
        assert name in text
    assert ExportSettings.from_env({}) == ExportSettings()


def _first_cycle_in_a_fresh_interpreter(start: str | None) -> subprocess.CompletedProcess:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "QUEUE_ASSETS_EXPORT_START_DATE"}
    if start is not None:
        env["QUEUE_ASSETS_EXPORT_START_DATE"] = start
    code = "from queue_assets.export.assets import EXPORT_PARTITIONS as p; print(p.get_first_partition_key())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("start", "first"), [(None, "2026-11-01"), ("2026-11-20", "2026-11-20")])
def test_the_first_export_cycle_is_a_recent_date_or_the_setting(start, first):
    """A hub installed today shows a handful of export partitions, not every day since January 2025.
    Breaks when the start is hard-coded again or the setting is not read when the definitions load."""
    done = _first_cycle_in_a_fresh_interpreter(start)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == first


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("2026-13-01", "expected a date as YYYY-MM-DD"),
        ("yesterday", "expected a date as YYYY-MM-DD"),
        ("20261101", "expected a date as YYYY-MM-DD"),
        ("2026-12-05", "must not be after today (2026-12-04, UTC)"),
    ],
)
def test_a_bad_export_start_date_names_the_variable_and_the_reason(raw, reason):
    from queue_assets.export.settings import export_start_date

    with pytest.raises(SettingsError) as info:
        export_start_date({"QUEUE_ASSETS_EXPORT_START_DATE": raw}, today=date(2026, 12, 4))
    assert f"QUEUE_ASSETS_EXPORT_START_DATE={raw!r}: {reason}" in str(info.value)


def test_a_bad_export_start_date_fails_the_definitions_load():
    done = _first_cycle_in_a_fresh_interpreter("2026-02-30")
    assert done.returncode != 0
    assert "QUEUE_ASSETS_EXPORT_START_DATE='2026-02-30': expected a date as YYYY-MM-DD" in done.stderr


def test_github_settings_name_the_variable_and_never_show_the_token():
    with pytest.raises(SettingsError) as info:
        GitHubSettings.from_env(
            {
                "GITHUB_REPOSITORY": "not a repo",
                "GITHUB_TOKEN": "abc def " + TOKEN,
                "GITHUB_API_URL": "ftp://x",
            }
        )
    text = str(info.value)
    assert "GITHUB_REPOSITORY" in text and "GITHUB_TOKEN" in text and "GITHUB_API_URL" in text
    assert TOKEN not in text
    with pytest.raises(SettingsError, match="GITHUB_TOKEN is not set"):
        GitHubSettings.from_env({"GITHUB_REPOSITORY": "acme/templates_data"})
    assert GitHubSettings.from_env({}) is None
    s = GitHubSettings.from_env({"GITHUB_REPOSITORY": "acme/t", "GITHUB_TOKEN": TOKEN})
    assert s.api_url == "https://api.github.com" and TOKEN not in repr(s)
    assert s.git_auth_for("https://github.com/acme/t.git").secret == TOKEN
    assert s.git_auth_for("https://gitlab.com/acme/t.git") is None


# --- the export, through real Dagster runs ------------------------------------------------------


def test_export_twice_in_one_cycle_leaves_one_branch_one_commit_and_one_pr(
    db_url, aconn, remote, tmp_path, cycle
):
    add_standard_fleet(aconn)
    with serve_fake_github() as fake:
        res = resources(db_url, remote, tmp_path, fake)
        first = materialize(cycle, res)
        assert first.success, failure_text(first)
        heads_after_first = branches(remote)
        tree_first = git_out(remote, "rev-parse", f"{branch_for(cycle)}^{{tree}}")
        second = materialize(cycle, res)
        assert second.success, failure_text(second)
    branch = branch_for(cycle)
    assert branches(remote) == heads_after_first
    assert sorted(branches(remote)) == ["feature/learned-patterns-" + cycle.strftime("%Y%m%d"), "main"]
    assert git_out(remote, "rev-list", "--count", f"main..{branch}").strip() == "1"
    assert git_out(remote, "rev-parse", f"{branch}^{{tree}}") == tree_first
    files = git_out(remote, "ls-tree", "-r", "--name-only", branch, "learned_patterns/").split()
    assert sorted(files) == sorted(
        ["learned_patterns/README.md"]
        + [
            f"learned_patterns/{artifact_file_name(a)}"
            for a in ("tmpl-genserver-cache", "tmpl-axum-service", "tmpl-phoenix-live")
        ]
    )
    assert len(fake.calls("POST")) == 1
    assert len(fake.calls("PATCH")) == 0  # same title and body: the second run changes nothing
    assert len(fake.calls("GET")) == 2
    assert len(fake.pulls) == 1 and fake.pulls[0]["head"]["ref"] == branch
    row = export_row(aconn, cycle)
    assert (row["status"], row["attempts"], row["artifact_count"], row["pr_number"]) == ("pr_open", 2, 3, 1)
    assert row["commit_sha"] == branches(remote)[branch]
    meta = second.asset_materializations_for_node("learned_pattern_export")[0].metadata
    assert meta["new_commit"].value is False and meta["pr_action"].value == "unchanged"
    assert meta["artifacts_count"].value == 3


def test_a_rerun_with_new_learning_updates_the_same_branch_and_patches_the_pr(
    db_url, aconn, remote, tmp_path, cycle
):
    add_standard_fleet(aconn)
    with serve_fake_github() as fake:
        res = resources(db_url, remote, tmp_path, fake)
        assert materialize(cycle, res).success
        add_report(aconn, "singularity-1", "tmpl-new-arrival", 50, 0.9)
        again = materialize(cycle, res)
        assert again.success, failure_text(again)
    branch = branch_for(cycle)
    assert git_out(remote, "rev-list", "--count", f"main..{branch}").strip() == "2"
    assert (len(fake.calls("POST")), len(fake.calls("PATCH")), len(fake.pulls)) == (1, 1, 1)
    assert fake.pulls[0]["title"].endswith("4 artifacts")
    assert export_row(aconn, cycle)["artifact_count"] == 4


def test_without_a_provider_the_branch_is_the_export_and_the_metadata_says_so(
    db_url, aconn, remote, tmp_path, cycle
):
    add_standard_fleet(aconn)
    result = materialize(cycle, resources(db_url, remote, tmp_path))
    assert result.success, failure_text(result)
    meta = result.asset_materializations_for_node("learned_pattern_export")[0].metadata
    assert meta["export_mode"].value.startswith("branch only")
    assert meta["status"].value == "branch_only"
    assert "pr_url" not in meta
    assert branch_for(cycle) in branches(remote)
    assert export_row(aconn, cycle)["status"] == "branch_only"


def test_a_rejected_push_fails_the_run_with_the_remotes_message_and_the_next_run_succeeds(
    db_url, aconn, remote, tmp_path, cycle
):
    add_standard_fleet(aconn)
    hook = Path(remote) / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho '{HOOK_MESSAGE}' >&2\nexit 1\n")
    hook.chmod(0o755)
    res = resources(db_url, remote, tmp_path)
    failed = materialize(cycle, res)
    assert not failed.success
    assert HOOK_MESSAGE in failure_text(failed)
    assert branch_for(cycle) not in branches(remote)
    row = export_row(aconn, cycle)
    assert row["status"] == "push_failed" and HOOK_MESSAGE in row["error"] and row["commit_sha"] is None
    hook.unlink()
    ok = materialize(cycle, res)
    assert ok.success, failure_text(ok)
    assert branch_for(cycle) in branches(remote)
    row = export_row(aconn, cycle)
    assert (row["status"], row["error"], row["attempts"]) == ("branch_only", None, 2)


def test_a_github_500_fails_the_run_clearly_and_the_next_run_opens_the_pr_without_losing_data(
    db_url, aconn, remote, tmp_path, cycle
):
    add_standard_fleet(aconn)
    with serve_fake_github() as fake:
        res = resources(db_url, remote, tmp_path, fake)
        fake.fail["POST"] = (500, {"message": "Server Error"})
        failed = materialize(cycle, res)
        assert not failed.success
        text = failure_text(failed)
        assert "HTTP 500" in text and "Server Error" in text and "was pushed" in text
        pushed = branches(remote)[branch_for(cycle)]  # the data is on the remote
        row = export_row(aconn, cycle)
        assert (row["status"], row["commit_sha"], row["pr_url"]) == ("pr_failed", pushed, None)
        assert "HTTP 500" in row["error"]
        del fake.fail["POST"]
        ok = materialize(cycle, res)
        assert ok.success, failure_text(ok)
    assert branches(remote)[branch_for(cycle)] == pushed  # no new commit, same branch
    assert [r.body["head"] for r in fake.calls("POST")] == [branch_for(cycle)] * 2
    assert len(fake.open_pulls()) == 1
    row = export_row(aconn, cycle)
    assert (row["status"], row["pr_url"], row["error"]) == ("pr_open", fake.pulls[0]["html_url"], None)


def test_hostile_artifact_names_cannot_write_outside_the_export_folder(
    db_url, aconn, remote, tmp_path, cycle
):
    hostile = [
        "../../escape",
        "/etc/passwd",
        "..\\..\\windows\\system32",
        ".git/hooks/pre-commit",
        "Ünïcödé ☃ 名前 \u202e.json",
        "CON",
        "a/../../../b",
        "~/.bashrc",
        "....//....//x",
        "   ",
    ]
    for i, artifact_id in enumerate(hostile):
        add_report(aconn, "singularity-1", artifact_id, 100 + i, 0.9, name=artifact_id + " | <script>")
    before = sorted(p.as_posix() for p in tmp_path.rglob("*") if ".git" not in p.parts)
    result = materialize(cycle, resources(db_url, remote, tmp_path))
    assert result.success, failure_text(result)
    files = git_out(remote, "ls-tree", "-r", "--name-only", branch_for(cycle)).split("\n")
    exported = [f for f in files if f.startswith("learned_patterns/")]
    assert len(exported) == len(hostile) + 1
    assert sorted(f for f in files if f and not f.startswith("learned_patterns/")) == [
        "README.md",
        "templates/elixir/genserver_cache.ex.eex",
        "templates/rust/axum_service.rs",
    ]
    for f in exported:
        name = f.removeprefix("learned_patterns/")
        assert "/" not in name and not name.startswith(".")
    after = sorted(p.as_posix() for p in tmp_path.rglob("*") if ".git" not in p.parts)
    new = [p for p in after if p not in before]
    allowed = (
        str(tmp_path / "data" / "git" / "work" / "export"),
        str(tmp_path / "data" / "git" / "templates_data.git"),
    )
    outside = [p for p in new if not p.startswith(allowed) and p != str(tmp_path / "data" / "git" / "work")]
    assert new and outside == []
    assert not (tmp_path / "escape").exists() and not (tmp_path / "data" / "escape").exists()
    summary = git_out(remote, "show", f"{branch_for(cycle)}:learned_patterns/README.md")
    assert "<script>" not in summary and "\\<script\\>" in summary


def test_an_empty_cycle_is_blocked_by_its_check_and_nothing_is_pushed(db_url, aconn, remote, tmp_path, cycle):
    add_report(aconn, "singularity-1", "tmpl-rarely-used", 1, 0.99)  # below QUEUE_ASSETS_EXPORT_MIN_USAGE
    result = materialize(cycle, resources(db_url, remote, tmp_path))
    assert not result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "export_not_empty": False,
        "success_rates_in_unit_interval": True,
        "unique_export_keys": True,
        "export_growth_within_limit": True,
    }
    assert not result.asset_materializations_for_node("learned_pattern_export")
    assert sorted(branches(remote)) == ["main"]
    assert count(aconn, "hub.exports") == 0


def test_an_export_far_larger_than_the_previous_one_is_blocked_until_allowed(
    db_url, aconn, remote, tmp_path, cycle, monkeypatch
):
    add_standard_fleet(aconn)
    aconn.execute(
        "INSERT INTO hub.exports (cycle_date, branch, base_branch, remote_url, artifact_count, status)"
        " VALUES (%s, 'feature/learned-patterns-old', 'main', 'x', 1, 'branch_only')",
        (cycle - timedelta(days=1),),
    )
    monkeypatch.setenv("QUEUE_ASSETS_EXPORT_MAX_GROWTH", "2")
    res = resources(db_url, remote, tmp_path)
    blocked = materialize(cycle, res)
    assert not blocked.success
    evaluation = {c.check_name: c for c in blocked.get_asset_check_evaluations()}[
        "export_growth_within_limit"
    ]
    assert not evaluation.passed and "3.0x" in evaluation.description
    assert branch_for(cycle) not in branches(remote)
    allowed = materialize(
        cycle, res, run_config={"ops": {"aggregated_learning": {"config": {"max_growth_factor": 5}}}}
    )
    assert allowed.success, failure_text(allowed)
    assert branch_for(cycle) in branches(remote)


def test_the_success_rate_and_unique_key_checks_report_bad_snapshots(aconn, cycle):
    aconn.execute(
        "INSERT INTO hub.aggregated_learning (cycle_date, artifact_id, total_usage, success_rate, report_count,"
        " instance_count, instances, first_seen, last_seen, selected) VALUES"
        " (%(c)s, 'ok', 1, 0.5, 1, 1, '{a}', now(), now(), true),"
        " (%(c)s, 'too-high', 1, 1.5, 1, 1, '{a}', now(), now(), true),"
        " (%(c)s, 'nan', 1, 'NaN', 1, 1, '{a}', now(), now(), true)",
        {"c": cycle},
    )
    rates = learning.check_success_rates(aconn, cycle)
    assert not rates.passed and rates.metadata == {"out_of_range": 2}
    assert "too-high=1.5" in rates.description
    assert learning.check_unique_keys(aconn, cycle).passed
    assert learning.check_growth(30, (cycle, 10), 2.0).passed is False
    assert learning.check_growth(20, (cycle, 10), 2.0).passed is True
    assert learning.check_not_empty(0).passed is False


def test_the_token_never_appears_in_logs_metadata_errors_or_the_repository(
    db_url, aconn, remote, tmp_path, cycle, capfd, caplog
):
    caplog.set_level(logging.DEBUG)
    add_standard_fleet(aconn)
    instance = dg.DagsterInstance.ephemeral()
    with serve_fake_github(FakeGitHub(token=TOKEN)) as fake:
        res = resources(db_url, remote, tmp_path, fake)
        fake.fail["POST"] = (500, {"message": f"echoing the caller's token back: {TOKEN}"})
        failed = materialize(cycle, res, instance=instance)
        del fake.fail["POST"]
        ok = materialize(cycle, res, instance=instance)
    assert not failed.success and ok.success
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in fake.requests)  # it was really used
    haystacks = [dg.serialize_value(e) for run in (failed, ok) for e in instance.all_logs(run.run_id)]
    haystacks += [failure_text(failed), json.dumps(export_row(aconn, cycle), default=str)]
    haystacks += [str(c.description) for c in failed.get_asset_check_evaluations()]
    haystacks.append(git_out(remote, "log", "-p", "--all"))
    haystacks += [p.read_text(errors="replace") for p in (tmp_path / "data" / "git" / "work").rglob("config")]
    out, err = capfd.readouterr()
    haystacks += [out, err, caplog.text]
    assert "HTTP 500" in failure_text(failed)
    for text in haystacks:
        assert TOKEN not in text
        assert TOKEN[4:] not in text


def test_the_export_announces_learning_exported_once_per_commit_to_active_instances(
    db_url, aconn, remote, tmp_path, cycle
):
    add_standard_fleet(aconn)
    for instance in ("singularity-1", "singularity-2", "singularity-3"):
        add_instance(aconn, instance, timedelta(minutes=1))
    add_instance(aconn, "singularity-stale", timedelta(days=3))
    res = resources(db_url, remote, tmp_path)
    assert materialize(cycle, res).success
    assert materialize(cycle, res).success  # nothing changed: nothing announced again
    for instance in ("singularity-1", "singularity-2", "singularity-3"):
        msgs = [r[0] for r in aconn.execute(f"SELECT message FROM pgmq.q_{inbox_queue_for(instance)}")]
        assert len(msgs) == 1
        assert msgs[0]["type"] == "learning_exported"
        assert (msgs[0]["branch"], msgs[0]["artifacts_count"], msgs[0]["pr_url"]) == (
            branch_for(cycle),
            3,
            None,
        )
    assert count(aconn, f"pgmq.q_{inbox_queue_for('singularity-stale')}") == 0
    assert export_row(aconn, cycle)["notified_count"] == 3


def test_the_announcement_reaches_100_instances_that_have_no_inbox_yet(
    db_url, aconn, remote, tmp_path, cycle
):
    """100 instances known from heartbeats, none with an inbox queue: the export creates the inboxes
    and every one gets `learning_exported`. Breaks when the inboxes are synced inside the
    announcement's transaction (more than fanout.CREATE_BATCH new inboxes raised there, after the
    branch and PR were made, and failed the run)."""
    add_standard_fleet(aconn)
    fleet = [f"fleet-{i:03d}" for i in range(100)]
    for instance in fleet:
        add_instance(aconn, instance, timedelta(minutes=1))
    with serve_fake_github() as fake:
        result = materialize(cycle, resources(db_url, remote, tmp_path, fake))
    assert result.success, failure_text(result)
    (check,) = result.get_asset_check_evaluations()[-1:]
    assert (check.check_name, check.passed) == ("learning_exported_announced", True)
    for instance in fleet:
        msgs = [r[0] for r in aconn.execute(f"SELECT message FROM pgmq.q_{inbox_queue_for(instance)}")]
        assert [m["type"] for m in msgs] == ["learning_exported"], instance
        assert msgs[0]["pr_url"] is not None
    row = export_row(aconn, cycle)
    assert (row["status"], row["notified_count"], row["notify_error"]) == ("pr_open", 100, None)


def test_a_failed_announcement_never_fails_the_pushed_export_and_the_rerun_sends_it(
    db_url, aconn, remote, tmp_path, cycle
):
    """The announcement fails after the push (an instance's inbox name is taken by a table pgmq
    cannot create its queue over): the run still succeeds with the branch and PR recorded, the
    failure is in hub.exports.notify_error and the check, and the re-run announces. Breaks when an
    announcement error propagates out of run_export."""
    add_standard_fleet(aconn)
    add_instance(aconn, "singularity-1", timedelta(minutes=1))
    inbox = inbox_queue_for("singularity-1")
    aconn.execute(f"CREATE TABLE pgmq.q_{inbox} (blocker int)")  # pgmq.create fails on it
    res = resources(db_url, remote, tmp_path)
    first = materialize(cycle, res)
    assert first.success, failure_text(first)
    row = export_row(aconn, cycle)
    assert row["status"] == "branch_only" and row["notified_sha"] is None
    assert "q_" + inbox in row["notify_error"]
    (mat,) = first.asset_materializations_for_node("learned_pattern_export")
    assert mat.metadata["learning_exported"].value.startswith("FAILED")
    checks = {c.check_name: c.passed for c in first.get_asset_check_evaluations()}
    assert checks["learning_exported_announced"] is False
    aconn.execute(f"DROP TABLE pgmq.q_{inbox}")
    assert materialize(cycle, res).success
    row = export_row(aconn, cycle)
    assert (row["notified_count"], row["notify_error"]) == (1, None)
    assert count(aconn, f"pgmq.q_{inbox}") == 1


def test_a_cycle_whose_content_is_already_on_main_makes_no_branch_and_no_pr(
    db_url, aconn, remote, tmp_path, cycle
):
    add_standard_fleet(aconn)
    res = resources(db_url, remote, tmp_path)
    assert materialize(cycle, res).success
    branch = branch_for(cycle)
    # A reviewer merges the PR and deletes the branch; the next cycle finds main already up to date.
    subprocess.run(
        ["git", "-C", remote, "update-ref", "refs/heads/main", branches(remote)[branch]], check=True
    )
    subprocess.run(["git", "-C", remote, "update-ref", "-d", f"refs/heads/{branch}"], check=True)
    nxt = cycle + timedelta(days=1)
    learning.aggregate_learning(aconn, nxt, datetime.now(UTC) + timedelta(hours=1), ExportSettings())
    with serve_fake_github() as fake:
        provider = GitHubPullRequests(GitHubSettings(f"{fake.owner}/{fake.repo}", fake.token, fake.url))
        result = run_export(
            aconn,
            cycle=nxt,
            cutoff=datetime.now(UTC),
            settings=ExportSettings(),
            work_copy=lambda: res["templates_repo"].work_copy("export"),
            remote_url=remote,
            provider=provider,
            publish=None,
        )
    assert result.status == "no_diff" and not result.pushed
    assert sorted(branches(remote)) == ["main"]
    assert fake.requests == []


def test_two_exports_of_one_cycle_at_once_leave_one_branch_one_commit_and_one_pr(
    db_url, aconn, remote, tmp_path, cycle
):
    add_standard_fleet(aconn)
    cutoff = datetime.now(UTC) + timedelta(hours=1)
    learning.aggregate_learning(aconn, cycle, cutoff, ExportSettings())
    res = resources(db_url, remote, tmp_path)
    results, errors = [], []

    def export(fake: FakeGitHub) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as c:
                provider = GitHubPullRequests(
                    GitHubSettings(f"{fake.owner}/{fake.repo}", fake.token, fake.url)
                )
                results.append(
                    run_export(
                        c,
                        cycle=cycle,
                        cutoff=cutoff,
                        settings=ExportSettings(),
                        work_copy=lambda: res["templates_repo"].work_copy("export"),
                        remote_url=remote,
                        provider=provider,
                        publish=None,
                    )
                )
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with serve_fake_github() as fake:
        threads = [threading.Thread(target=export, args=(fake,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    assert sorted(r.committed for r in results) == [False, True]
    assert git_out(remote, "rev-list", "--count", f"main..{branch_for(cycle)}").strip() == "1"
    # Whether the second run's list comes before or after the first run's create, one PR results
    # (a late create gets GitHub's 422 and updates instead).
    assert len(fake.pulls) == 1 and fake.pulls[0]["head"]["ref"] == branch_for(cycle)
    assert export_row(aconn, cycle)["attempts"] == 2


def test_run_export_refuses_a_cycle_without_a_snapshot(db_url, aconn, remote, tmp_path, cycle):
    res = resources(db_url, remote, tmp_path)
    with pytest.raises(ExportFailed, match="no selected artifact"):
        run_export(
            aconn,
            cycle=cycle,
            cutoff=datetime.now(UTC),
            settings=ExportSettings(),
            work_copy=lambda: res["templates_repo"].work_copy("export"),
            remote_url=remote,
            provider=None,
            publish=None,
        )


# --- the pull-request provider ----------------------------------------------------------------


def test_the_422_create_race_is_resolved_by_updating_the_pr_the_other_run_opened():
    with serve_fake_github() as fake:
        fake.race_on_create = True
        provider = GitHubPullRequests(GitHubSettings(f"{fake.owner}/{fake.repo}", fake.token, fake.url))
        pr = provider.ensure(head="feature/learned-patterns-20251025", base="main", title="T", body="B")
    assert (pr.number, pr.action) == (1, "updated")
    assert [r.method for r in fake.requests] == ["GET", "POST", "GET", "PATCH"]
    assert len(fake.pulls) == 1 and (fake.pulls[0]["title"], fake.pulls[0]["body"]) == ("T", "B")


def test_provider_errors_name_the_call_and_githubs_reason():
    with serve_fake_github() as fake:
        provider = GitHubPullRequests(
            GitHubSettings(f"{fake.owner}/{fake.repo}", "wrong-token-123", fake.url)
        )
        with pytest.raises(Exception) as info:
            provider.ensure(head="b", base="main", title="T", body="B")
    assert (
        "HTTP 401" in str(info.value)
        and "Bad credentials" in str(info.value)
        and "GITHUB_TOKEN" in str(info.value)
    )


def test_transient_gateway_errors_are_retried_then_succeed():
    with serve_fake_github() as fake:
        fake.fail["GET"] = (503, {"message": "unavailable"})
        provider = GitHubPullRequests(
            GitHubSettings(f"{fake.owner}/{fake.repo}", fake.token, fake.url), retries=2, backoff_s=0.0
        )
        with pytest.raises(Exception, match="HTTP 503"):
            provider.ensure(head="b", base="main", title="T", body="B")
        assert len(fake.calls("GET")) == 3
        del fake.fail["GET"]
        assert provider.ensure(head="b", base="main", title="T", body="B").action == "created"


# --- schedule and definitions ---------------------------------------------------------------


def test_the_schedule_runs_daily_at_0100_utc_and_asks_for_the_cycle_of_its_tick():
    assert (EXPORT_CRON, knowledge_export_schedule.cron_schedule) == ("0 1 * * *", "0 1 * * *")
    assert knowledge_export_schedule.execution_timezone == "UTC"
    assert knowledge_export_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    tick = datetime(2025, 10, 25, 1, 0, tzinfo=UTC)
    request = knowledge_export_schedule(dg.build_schedule_context(scheduled_execution_time=tick))
    assert (request.partition_key, request.run_key) == ("2025-10-25", "learned-patterns-2025-10-25")
    assert branch_for(date.fromisoformat(request.partition_key)) == "feature/learned-patterns-20251025"
    window = EXPORT_PARTITIONS.time_window_for_partition_key("2025-10-25")
    assert (window.start, window.end) == (tick, tick + timedelta(days=1))


def test_the_code_location_loads_with_the_export_job_schedule_and_resources():
    from queue_assets.definitions import defs

    job = defs.resolve_job_def("knowledge_export_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} >= {
        "aggregated_learning",
        "learned_pattern_export",
    }
    assert defs.resolve_schedule_def("knowledge_export_schedule").cron_schedule == "0 1 * * *"
    for key in ("templates_repo", "github", "shared_queue"):
        assert key in defs.resources
    for asset in (aggregated_learning, learned_pattern_export):
        assert asset.specs_by_key[asset.key].freshness_policy == DAILY_FRESHNESS


def test_init_creates_the_embedded_templates_remote_only_when_no_url_is_set(
    db_url, tmp_path, monkeypatch, capsys
):
    from queue_assets import cli

    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    monkeypatch.setenv("QUEUE_ASSETS_DATA_DIR", str(tmp_path / "a"))
    assert cli.main(["init"]) == 0
    assert list(branches(str(tmp_path / "a" / "git" / "templates_data.git"))) == ["main"]
    assert "templates_data remote (embedded)" in capsys.readouterr().out
    monkeypatch.setenv("QUEUE_ASSETS_DATA_DIR", str(tmp_path / "b"))
    monkeypatch.setenv("TEMPLATES_REPO_URL", "https://git.example.com/acme/templates_data.git")
    assert cli.main(["init"]) == 0
    assert not (tmp_path / "b" / "git").exists()


def test_a_bad_templates_repo_url_fails_naming_the_variable_without_its_credentials(monkeypatch, tmp_path):
    """As the definitions configure it: TEMPLATES_REPO_URL as `dg.EnvVar`, resolved in the run."""
    from queue_assets.definitions import build_definitions
    from queue_assets.settings import Settings

    monkeypatch.setenv("TEMPLATES_REPO_URL", "ext::https://bob:URLSECRET-99@host/x.git")
    monkeypatch.setenv("QUEUE_ASSETS_DATA_DIR", str(tmp_path))
    env = dict(os.environ)
    repo_resource = build_definitions(Settings.from_env(env), env).resources["templates_repo"]
    with dg.build_resources({"templates_repo": repo_resource}) as built, pytest.raises(SettingsError) as info:
        built.templates_repo.remote_url()
    assert "TEMPLATES_REPO_URL" in str(info.value) and "URLSECRET-99" not in str(info.value)


def test_the_scheduled_job_from_the_definitions_runs_on_environment_settings(
    db_url, aconn, remote, tmp_path, cycle, monkeypatch
):
    """The definitions as the code location loads them in this environment (`build_definitions`, what
    `queue_assets.definitions.defs` is when the process starts with it)."""
    from queue_assets.definitions import build_definitions
    from queue_assets.settings import Settings

    add_standard_fleet(aconn)
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    monkeypatch.setenv("TEMPLATES_REPO_URL", remote)
    monkeypatch.setenv("QUEUE_ASSETS_DATA_DIR", str(tmp_path / "data"))
    env = dict(os.environ)
    defs = build_definitions(Settings.from_env(env), env)
    job = defs.resolve_job_def("knowledge_export_job")
    result = job.execute_in_process(partition_key=cycle.isoformat(), instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert branches(remote)[branch_for(cycle)] == export_row(aconn, cycle)["commit_sha"]
    assert export_row(aconn, cycle)["status"] == "branch_only"


# --- retries (issue 9 item 8) -------------------------------------------------------------------


def export_job_with_policy(monkeypatch, delay_s: int) -> dg.UnresolvedAssetJobDefinition:
    """knowledge_export_job as the definitions build it, with its retry policy made from a short
    QUEUE_ASSETS_RETRY_DELAY_S (the real delays are minutes)."""
    from queue_assets.export.schedules import knowledge_export_job
    from queue_assets.retries import retry_policy
    from queue_assets.settings import Settings

    assert knowledge_export_job.op_retry_policy == retry_policy("knowledge_export_job")  # default delay
    monkeypatch.setenv("QUEUE_ASSETS_RETRY_DELAY_S", str(delay_s))
    return dg.define_asset_job(
        name="knowledge_export_job",
        selection=[aggregated_learning, learned_pattern_export],
        op_retry_policy=retry_policy("knowledge_export_job", Settings.from_env()),
    )


def run_export_job(job, cycle: date, res: dict, instance: dg.DagsterInstance, run_id: str):
    defs = dg.Definitions(assets=[aggregated_learning, learned_pattern_export], jobs=[job], resources=res)
    return defs.resolve_job_def("knowledge_export_job").execute_in_process(
        partition_key=cycle.isoformat(), instance=instance, run_id=run_id, raise_on_error=False
    )


def retries_of(instance: dg.DagsterInstance, run_id: str) -> int:
    return len(instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY))


def test_an_export_whose_git_remote_is_briefly_gone_succeeds_on_its_retry(
    db_url, aconn, remote, tmp_path, cycle, monkeypatch
):
    """The remote is missing when the 01:00 run starts and comes back during the first retry's
    backoff: the same run exports. Breaks without the job's op_retry_policy (the run fails)."""
    import uuid

    job = export_job_with_policy(monkeypatch, delay_s=3)
    add_standard_fleet(aconn)
    offline = Path(remote).with_name("templates_data.offline")
    Path(remote).rename(offline)
    instance, run_id = dg.DagsterInstance.ephemeral(), str(uuid.uuid4())

    def restore_after_the_first_failure() -> None:
        for _ in range(600):
            if retries_of(instance, run_id):
                break
            threading.Event().wait(0.05)
        offline.rename(remote)

    t = threading.Thread(target=restore_after_the_first_failure)
    t.start()
    result = run_export_job(job, cycle, resources(db_url, remote, tmp_path), instance, run_id)
    t.join()
    assert result.success, failure_text(result)
    assert retries_of(instance, run_id) == 1
    assert branches(remote)[branch_for(cycle)] == export_row(aconn, cycle)["commit_sha"]


def test_an_export_whose_git_remote_stays_gone_stops_after_its_retry_limit(
    db_url, aconn, remote, tmp_path, cycle, monkeypatch
):
    """A remote that never comes back: the step is tried 1 + 4 times (0, 1, 3, 7, 15 s apart with a
    1 s base delay), then the run fails naming Git, with no branch. Breaks when the limit is gone
    (the run would never end) or when retries are not made at all (0 retries counted)."""
    import uuid

    from queue_assets.retries import MAX_RETRIES

    job = export_job_with_policy(monkeypatch, delay_s=1)
    add_standard_fleet(aconn)
    Path(remote).rename(Path(remote).with_name("templates_data.gone"))
    instance, run_id = dg.DagsterInstance.ephemeral(), str(uuid.uuid4())
    result = run_export_job(job, cycle, resources(db_url, remote, tmp_path), instance, run_id)
    assert not result.success
    assert retries_of(instance, run_id) == MAX_RETRIES["knowledge_export_job"] == 4
    text = failure_text(result)
    assert "Exceeded max_retries of 4" in text and "GitError" in text
    assert export_row(aconn, cycle) == {}

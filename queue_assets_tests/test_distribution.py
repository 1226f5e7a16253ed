"""Pattern and template distribution against a real bare Git remote (tmp_path) and real pgmq.

The remote is the embedded `templates_data` one (sample templates on `main`), created in tmp_path.
Instances are made active with heartbeats through the real ingest loop; what they receive is read
with the SDK, as an instance would.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import git
import pytest

from queue_assets import contracts
from queue_assets.aggregation import core
from queue_assets.aggregation.assets import aggregated_patterns
from queue_assets.distribution.assets import (
    DISTRIBUTION_SPECS,
    pattern_distribution,
    public_git_url,
    template_updates,
)
from queue_assets.distribution.patterns import (
    DistributionRefused,
    distribute_patterns,
    patterns_message,
)
from queue_assets.distribution.templates import distribute_templates
from queue_assets.git.repo import GitPushRejected, ensure_embedded_templates_remote
from queue_assets.git.resources import GitHubResource, TemplatesRepoResource
from queue_assets.ingest.core import IngestConfig, ingest_queue
from queue_assets.resources import SharedQueueResource
from queue_assets.sdk import HubClient
from queue_assets_tests.helpers import count, queue_depth, send_many

CFG = IngestConfig(batch_size=100, visibility_timeout_s=30, max_attempts=3)
HOUR = 3600
SAMPLE_FILES = ["README.md", "templates/elixir/genserver_cache.ex.eex", "templates/rust/axum_service.rs"]


@pytest.fixture
def remote(tmp_path) -> str:
    return ensure_embedded_templates_remote(tmp_path / "remote")


@pytest.fixture
def repo(remote, tmp_path) -> TemplatesRepoResource:
    return TemplatesRepoResource(url=remote, data_dir=str(tmp_path / "data"))


def git_out(remote: str, *args: str) -> str:
    return subprocess.run(["git", "-C", remote, *args], capture_output=True, text=True, check=True).stdout


def commits_on_main(remote: str) -> int:
    return int(git_out(remote, "rev-list", "--count", "main"))


def now_z() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def heartbeats(conn, *instances: str) -> None:
    send_many(
        conn,
        "instance_heartbeat",
        [json.dumps({"type": "heartbeat", "instance_id": i, "timestamp": now_z()}) for i in instances],
    )
    assert ingest_queue(conn, "instance_heartbeat", CFG).stored == len(instances)


def observe(conn, instance: str, *names: str, confidence: float = 0.8) -> None:
    send_many(
        conn,
        "pattern_messages",
        [
            json.dumps(
                {
                    "type": "pattern_detection",
                    "instance_id": instance,
                    "timestamp": "2025-10-25T12:00:00Z",
                    "patterns": [
                        {
                            "pattern_type": "framework",
                            "name": n,
                            "confidence": confidence,
                            "indicators": ["mix.exs"],
                        }
                        for n in names
                    ],
                }
            )
        ],
    )
    assert ingest_queue(conn, "pattern_messages", CFG).stored == 1


def ranked(conn) -> None:
    observe(conn, "singularity-1", "phoenix", "ecto")
    observe(conn, "singularity-2", "phoenix")
    core.aggregate(conn)
    conn.commit()


def distribute(conn, repo, **kw):
    return distribute_patterns(
        conn,
        lambda: repo.work_copy("patterns"),
        git_url=public_git_url(repo.remote_url()),
        stale_after_s=HOUR,
        **kw,
    )


def templates(conn, repo):
    return distribute_templates(
        conn,
        lambda: repo.work_copy("templates"),
        git_url=public_git_url(repo.remote_url()),
        stale_after_s=HOUR,
    )


def inbox(db_url: str, instance: str) -> list:
    with HubClient(db_url, instance) as client:
        return client.read_inbox(limit=100, vt=60)


def push_change(remote: str, tmp_path: Path, rel: str, text: str) -> str:
    """Someone else changes a template on main (a real clone, commit and push)."""
    work = git.Repo.clone_from(remote, tmp_path / f"someone-{abs(hash(rel + text))}")
    with work.config_writer() as cfg:
        cfg.set_value("user", "name", "someone")
        cfg.set_value("user", "email", "someone@example.com")
    (Path(work.working_tree_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
    (Path(work.working_tree_dir) / rel).write_text(text)
    work.git.add("-A")
    work.git.commit("-m", f"change {rel}")
    work.git.push("origin", "main")
    return work.head.commit.hexsha


# --- pattern distribution -------------------------------------------------------------------------


def test_the_ranking_is_committed_to_main_as_json_and_a_readable_summary(conn, repo, remote):
    ranked(conn)
    result = distribute(conn, repo)
    assert result.committed and result.patterns == 2
    assert git_out(remote, "rev-parse", "main").strip() == result.commit
    document = json.loads(git_out(remote, "show", "main:patterns/aggregated_patterns.json"))
    assert [(p["rank"], p["name"], p["instance_count"], p["frequency"]) for p in document["patterns"]] == [
        (1, "phoenix", 2, 2),
        (2, "ecto", 1, 1),
    ]
    assert "| 1 | framework | phoenix | 2 | 2 | 0.800 |" in git_out(remote, "show", "main:patterns/README.md")
    assert git_out(remote, "ls-tree", "-r", "--name-only", "main").split() == sorted(
        [*SAMPLE_FILES, "patterns/README.md", "patterns/aggregated_patterns.json"]
    )


def test_the_ranking_is_committed_only_when_its_content_changed(conn, repo, remote):
    ranked(conn)
    first = distribute(conn, repo)
    core.aggregate(conn)  # a new run over the same observations: same ranking, same bytes
    conn.commit()
    second = distribute(conn, repo)
    assert (first.committed, second.committed) == (True, False)
    assert second.commit == first.commit
    assert commits_on_main(remote) == 2  # the sample templates + one ranking
    observe(conn, "singularity-3", "ecto")
    core.aggregate(conn)
    conn.commit()
    third = distribute(conn, repo)
    assert third.committed and commits_on_main(remote) == 3


def test_each_active_instance_receives_the_ranking_once_and_a_stale_one_none(conn, repo, db_url):
    heartbeats(conn, "singularity-1", "singularity-2", "singularity-3")
    send_many(
        conn,
        "instance_heartbeat",
        [
            json.dumps(
                {"type": "heartbeat", "instance_id": "singularity-4", "timestamp": "2025-10-25T12:00:00Z"}
            )
        ],
    )
    ingest_queue(conn, "instance_heartbeat", CFG)
    ranked(conn)
    result = distribute(conn, repo)
    assert result.copies == 3
    for i in (1, 2, 3):
        (msg,) = inbox(db_url, f"singularity-{i}")
        assert msg.type == "aggregated_patterns"
        assert [p["name"] for p in msg.message["patterns"]] == ["phoenix", "ecto"]
        assert msg.message["stats"]["commit"] == result.commit
    assert inbox(db_url, "singularity-4") == []
    assert count(conn, "hub.distributions", "kind = 'aggregated_patterns' AND inbox_copies = 3") == 1


def test_the_ranking_is_sent_every_run_even_when_git_is_unchanged(conn, repo, db_url):
    heartbeats(conn, "singularity-1")
    ranked(conn)
    distribute(conn, repo)
    again = distribute(conn, repo)
    assert (again.committed, again.copies) == (False, 1)
    assert len(inbox(db_url, "singularity-1")) == 2


def test_a_ranking_that_fails_validation_is_neither_committed_nor_sent(conn, repo, remote, db_url):
    heartbeats(conn, "singularity-1")
    ranked(conn)
    conn.execute("UPDATE hub.aggregated_patterns SET confidence = 1.5 WHERE name = 'ecto'")
    conn.commit()
    with pytest.raises(
        DistributionRefused, match=r"confidence outside \[0, 1\]: 1 patterns, e.g. framework/ecto"
    ):
        distribute(conn, repo)
    assert commits_on_main(remote) == 1
    assert inbox(db_url, "singularity-1") == []


def test_a_rejected_push_fails_loudly_publishes_nothing_and_the_next_run_succeeds(conn, repo, remote, db_url):
    heartbeats(conn, "singularity-1")
    ranked(conn)
    hook = Path(remote) / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is frozen for review' >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(GitPushRejected, match="main is frozen for review"):
        distribute(conn, repo)
    assert inbox(db_url, "singularity-1") == []
    assert count(conn, "hub.distributions") == 0
    hook.unlink()
    result = distribute(conn, repo)
    assert result.committed and result.copies == 1
    assert commits_on_main(remote) == 2


def test_a_push_that_loses_a_race_is_redone_on_the_new_main(conn, repo, remote, tmp_path):
    ranked(conn)
    other: list[str] = []

    @contextlib.contextmanager
    def racing_copy():
        """The hub's real work copy; someone pushes to main right after the hub wrote its files."""
        with repo.work_copy("patterns") as wc:
            write = wc.write_files

            def write_then_someone_pushes(*args, **kwargs):
                written = write(*args, **kwargs)
                if not other:
                    other.append(push_change(remote, tmp_path, "templates/new.txt", "meanwhile\n"))
                return written

            wc.write_files = write_then_someone_pushes
            yield wc

    result = distribute_patterns(conn, racing_copy, git_url=remote, stale_after_s=HOUR)
    assert (result.committed, result.push_attempts) == (True, 2)
    assert git_out(remote, "rev-parse", "main^").strip() == other[0]  # built on top, nothing lost
    assert git_out(remote, "show", "main:templates/new.txt") == "meanwhile\n"


def test_an_empty_ranking_distributes_nothing(conn, repo, remote):
    result = distribute(conn, repo)
    assert (result.patterns, result.committed, result.copies) == (0, False, 0)
    assert commits_on_main(remote) == 1


def test_the_message_is_cut_to_the_size_limit_and_says_so(conn):
    for i in range(40):
        observe(conn, f"node-{i}", *[f"pattern-{i}-{j}" for j in range(5)])
    core.aggregate(conn)
    ranking = core.ranking(conn)
    message = patterns_message(
        ranking, run_id=1, git_url="/srv/templates.git", commit="abc", max_bytes=40_000
    )
    assert len(json.dumps(message).encode()) <= 40_000
    assert message["stats"]["truncated"] is True
    assert message["stats"]["patterns_total"] == 200
    assert 0 < message["stats"]["patterns_sent"] == len(message["patterns"]) < 200
    assert [p["rank"] for p in message["patterns"]] == list(range(1, len(message["patterns"]) + 1))
    contracts.parse_message(json.dumps(message), max_bytes=40_000)


# --- template distribution ------------------------------------------------------------------------


def test_the_first_template_distribution_announces_the_whole_tree(conn, repo, remote, db_url):
    heartbeats(conn, "singularity-1", "singularity-2", "singularity-3")
    result = templates(conn, repo)
    assert result.outcome == "published" and result.full_tree
    assert (result.files, result.copies) == (SAMPLE_FILES, 3)
    for i in (1, 2, 3):
        (msg,) = inbox(db_url, f"singularity-{i}")
        assert (msg.type, msg.message["commit"], msg.message["updated_files"]) == (
            "templates_updated",
            git_out(remote, "rev-parse", "main").strip(),
            SAMPLE_FILES,
        )
    (queued,) = conn.execute("SELECT message FROM pgmq.q_template_updates").fetchall()
    assert queued[0]["updated_files"] == SAMPLE_FILES and queued[0]["git_url"] == remote


def test_template_updates_publishes_nothing_when_nothing_changed(conn, repo, db_url):
    heartbeats(conn, "singularity-1")
    templates(conn, repo)
    again = templates(conn, repo)
    assert (again.outcome, again.copies, again.files) == ("unchanged", 0, [])
    assert queue_depth(conn, "template_updates") == 1
    assert len(inbox(db_url, "singularity-1")) == 1
    assert count(conn, "hub.distributions", "kind = 'templates_updated'") == 1


def test_only_the_files_changed_since_the_last_distributed_commit_are_announced(
    conn, repo, remote, tmp_path, db_url
):
    heartbeats(conn, "singularity-1")
    first = templates(conn, repo)
    head = push_change(remote, tmp_path, "templates/rust/axum_service.rs", "// v2\n")
    second = templates(conn, repo)
    assert (second.outcome, second.files, second.full_tree) == (
        "published",
        ["templates/rust/axum_service.rs"],
        False,
    )
    assert (second.previous_commit, second.commit) == (first.commit, head)
    assert [m.message["updated_files"] for m in inbox(db_url, "singularity-1")] == [
        SAMPLE_FILES,
        ["templates/rust/axum_service.rs"],
    ]


def test_pattern_commits_are_not_announced_as_template_updates(conn, repo, db_url):
    heartbeats(conn, "singularity-1")
    templates(conn, repo)
    ranked(conn)
    committed = distribute(conn, repo)
    result = templates(conn, repo)
    assert (result.outcome, result.commit, result.copies) == ("no_template_changes", committed.commit, 0)
    assert queue_depth(conn, "template_updates") == 1
    assert templates(conn, repo).outcome == "unchanged"  # the state moved on to the pattern commit


def test_a_commit_missing_from_the_history_makes_the_whole_tree_announced(conn, repo):
    conn.execute(
        "INSERT INTO hub.distribution_state (kind, git_url, last_commit) VALUES"
        " ('templates_updated', %s, %s)",
        (public_git_url(repo.remote_url()), "deadbeef" * 5),
    )
    conn.commit()
    result = templates(conn, repo)
    assert (result.outcome, result.full_tree, result.files) == ("published", True, SAMPLE_FILES)


def test_a_published_git_url_never_carries_credentials():
    assert (
        public_git_url("https://bot:s3cr3t-token@github.com/acme/templates_data.git")
        == "https://github.com/acme/templates_data.git"
    )
    assert "ghp_abc123" not in public_git_url("https://ghp_abc123@github.com/acme/templates_data.git")


# --- Dagster ----------------------------------------------------------------------------------------


def resources(db_url: str, repo: TemplatesRepoResource) -> dict:
    return {
        "shared_queue": SharedQueueResource(db_url=db_url),
        "templates_repo": repo,
        "github": GitHubResource(),
    }


def test_a_dagster_run_aggregates_distributes_and_announces_templates(
    conn, repo, remote, db_url, monkeypatch
):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    heartbeats(conn, "singularity-1", "singularity-2")
    observe(conn, "singularity-1", "phoenix")
    result = dg.materialize(
        [aggregated_patterns, pattern_distribution, template_updates, *DISTRIBUTION_SPECS],
        resources=resources(db_url, repo),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    (dist,) = result.asset_materializations_for_node("pattern_distribution")
    assert (dist.metadata["committed"].value, dist.metadata["inbox_copies"].value) == (True, 2)
    (tmpl,) = result.asset_materializations_for_node("template_updates")
    assert tmpl.metadata["outcome"].value == "published"
    assert sorted(m.type for m in inbox(db_url, "singularity-1")) == [
        "aggregated_patterns",
        "templates_updated",
    ]


def observe_unknown_kind(conn) -> None:
    """An observation row no contract allows (written around the ingest, as a bad migration or a
    hand edit would): the ranking built from it fails the key check."""
    conn.execute(
        "INSERT INTO hub.pattern_observations (queue, msg_id, ordinal, instance_id, pattern_type, name,"
        " observed_at) VALUES ('pattern_messages', 999999, 0, 'singularity-1', 'gadget', 'x', now())"
    )
    conn.commit()


def test_a_failed_blocking_check_stops_pattern_distribution_in_the_same_run(conn, repo, remote, db_url):
    heartbeats(conn, "singularity-1")
    observe(conn, "singularity-1", "phoenix")
    observe_unknown_kind(conn)
    result = dg.materialize(
        [aggregated_patterns, pattern_distribution],
        resources=resources(db_url, repo),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "aggregated_patterns_keys_are_unique_and_ranked": False,
        "aggregated_patterns_values_are_in_range": True,
    }
    assert result.asset_materializations_for_node("pattern_distribution") == []
    assert commits_on_main(remote) == 1
    assert count(conn, "hub.distributions") == 0


def test_the_automation_condition_requests_distribution_only_after_a_passing_aggregation(conn, repo, db_url):
    from queue_assets.aggregation.defs import build_defs as aggregation_defs
    from queue_assets.distribution.defs import build_defs as distribution_defs

    observe(conn, "singularity-1", "phoenix")
    defs = dg.Definitions.merge(
        aggregation_defs(), distribution_defs(), dg.Definitions(resources=resources(db_url, repo))
    )
    instance = dg.DagsterInstance.ephemeral()
    key = dg.AssetKey("pattern_distribution")
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert before.get_num_requested(key) == 0  # nothing aggregated yet

    assert defs.resolve_job_def("pattern_aggregation_job").execute_in_process(instance=instance).success
    after_pass = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert after_pass.get_num_requested(key) == 1

    observe_unknown_kind(conn)
    failed = defs.resolve_job_def("pattern_aggregation_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not failed.success
    after_fail = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_pass.cursor)
    assert after_fail.get_num_requested(key) == 0


def test_distribution_runs_after_aggregation_and_templates_every_four_hours_utc():
    from queue_assets.definitions import defs
    from queue_assets.distribution.schedules import pattern_sync_sensor, template_distribution_schedule

    s = template_distribution_schedule
    assert (s.cron_schedule, s.execution_timezone, s.default_status) == (
        "0 */4 * * *",
        "UTC",
        dg.DefaultScheduleStatus.RUNNING,
    )
    assert pattern_sync_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert (
        pattern_distribution.specs_by_key[dg.AssetKey("pattern_distribution")].automation_condition
        is not None
    )
    repo_def = defs.get_repository_def()
    assert {"pattern_aggregation_schedule", "template_distribution_schedule"} <= {
        x.name for x in repo_def.schedule_defs
    }
    assert "pattern_sync_after_aggregation" in {x.name for x in repo_def.sensor_defs}

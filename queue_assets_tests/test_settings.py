"""Settings are read once and passed down; the resources show their configuration, never a secret.

The definitions are built as the code location builds them (`build_definitions` on the settings of an
environment), then inspected the way the UI sees them (the repository snapshot the webserver serves)
and run for real against PostgreSQL with the secret resolved in the run.
"""

from __future__ import annotations

import json
import os
import warnings
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import pytest

from queue_assets.definitions import build_definitions
from queue_assets.envparse import EnvReader, int_range
from queue_assets.export.settings import ExportSettings
from queue_assets.settings import Settings, SettingsError
from queue_assets_tests.helpers import count

DB_PASSWORD = "Db-Secret-4711"
GIT_PASSWORD = "Git-Secret-0815"
TOKEN = "ghp_TokenSecret123456"
SECRETS = (DB_PASSWORD, GIT_PASSWORD, TOKEN)


def _defs(env: dict[str, str]) -> dg.Definitions:
    return build_definitions(Settings.from_env(env), env)


def _shown_config(defs: dg.Definitions) -> dict[str, dict]:
    """Each resource's configuration as the UI lists it (its config schema's default, field by field)."""
    resources = defs.get_repository_def().get_top_level_resources()
    return {
        name: json.loads(r.config_schema.default_value_as_json_str)
        if r.config_schema.default_provided
        else {}
        for name, r in resources.items()
    }


def _ui_snapshot(defs: dg.Definitions) -> str:
    """Everything the webserver learns about the code location: the serialized repository snapshot.
    (No public API returns it; this is what `dagster dev` sends to the UI. Building it reads
    Dagster's own deprecated `ScheduleDefinition.environment_vars`, a warning about Dagster's
    internals, not this project's use of them, so only that one is let through here.)"""
    from dagster._core.remote_representation.external_data import RepositorySnap

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Property `ScheduleDefinition.environment_vars`", DeprecationWarning
        )
        return dg.serialize_value(RepositorySnap.from_def(defs.get_repository_def()))


def test_the_ui_shows_the_configuration_and_names_the_secrets_without_their_values(tmp_path):
    """Breaks when a resource is given a secret's value instead of `dg.EnvVar` (the UI would show it),
    and when the non-secret settings are not on the resources (the UI would show nothing)."""
    env = {
        "SHARED_QUEUE_DB_URL": f"postgresql://hub:{DB_PASSWORD}@db.example.com:5433/shared_queue",
        "TEMPLATES_REPO_URL": f"https://bot:{GIT_PASSWORD}@git.example.com/acme/templates_data.git",
        "GITHUB_REPOSITORY": "acme/templates_data",
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_API_URL": "https://github.example.com/api/v3",
        "QUEUE_ASSETS_DATA_DIR": str(tmp_path),
        "QUEUE_ASSETS_EXPORT_MIN_USAGE": "7",
        "QUEUE_ASSETS_EXPORT_BASE_BRANCH": "trunk",
    }
    defs = _defs(env)
    shown = _shown_config(defs)
    assert shown["shared_queue"]["db_url"] == {"env": "SHARED_QUEUE_DB_URL"}
    assert shown["templates_repo"] == {"url": {"env": "TEMPLATES_REPO_URL"}, "data_dir": str(tmp_path)}
    assert shown["github"]["token"] == {"env": "GITHUB_TOKEN"}
    assert (shown["github"]["repository"], shown["github"]["api_url"]) == (
        "acme/templates_data",
        "https://github.example.com/api/v3",
    )
    assert (shown["export_settings"]["min_usage"], shown["export_settings"]["base_branch"]) == (7, "trunk")
    snapshot = _ui_snapshot(defs)
    assert "SHARED_QUEUE_DB_URL" in snapshot and "acme/templates_data" in snapshot
    for secret in SECRETS:
        assert secret not in snapshot
        assert secret not in json.dumps(shown)


def test_a_server_given_in_parts_shows_host_port_user_and_names_the_password(tmp_path):
    env = {
        "SHARED_QUEUE_HOST": "db.example.com",
        "SHARED_QUEUE_PORT": "5433",
        "SHARED_QUEUE_USER": "hub",
        "SHARED_QUEUE_PASSWORD": DB_PASSWORD,
        "QUEUE_ASSETS_DATA_DIR": str(tmp_path),
    }
    defs = _defs(env)
    shown = _shown_config(defs)["shared_queue"]
    assert (shown["host"], shown["port"], shown["user"], shown["database"]) == (
        "db.example.com",
        5433,
        "hub",
        "shared_queue",
    )
    assert shown["password"] == {"env": "SHARED_QUEUE_PASSWORD"} and shown["db_url"] is None
    assert DB_PASSWORD not in _ui_snapshot(defs)


def test_the_embedded_server_shows_its_data_folder(tmp_path):
    shown = _shown_config(_defs({"QUEUE_ASSETS_DATA_DIR": str(tmp_path)}))
    assert shown["shared_queue"]["data_dir"] == str(tmp_path)
    assert shown["shared_queue"]["db_url"] is None and shown["github"]["token"] is None
    assert shown["templates_repo"] == {"data_dir": str(tmp_path)}


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':')[0]}:{password}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def test_a_run_of_the_definitions_resolves_the_secret_in_its_process_and_never_records_it(
    db_url, conn, monkeypatch, tmp_path
):
    """The statistics job of the definitions, with SHARED_QUEUE_DB_URL holding a password (the test
    server trusts local connections, so any password logs in): the run reaches the database the
    variable names and records its figures, and neither its events nor the run record hold the
    password. Breaks when the resource is not resolved from the environment in the run."""
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", _with_password(db_url, DB_PASSWORD))
    monkeypatch.setenv("QUEUE_ASSETS_DATA_DIR", str(tmp_path))
    env = dict(os.environ)
    defs = _defs(env)
    assert _shown_config(defs)["shared_queue"]["db_url"] == {"env": "SHARED_QUEUE_DB_URL"}
    before = count(conn, "hub.queue_statistics")
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("queue_statistics_job").execute_in_process(instance=instance)
    assert result.success
    assert count(conn, "hub.queue_statistics") > before
    recorded = "\n".join(dg.serialize_value(e) for e in instance.all_logs(result.run_id))
    recorded += dg.serialize_value(instance.get_run_by_id(result.run_id))
    assert DB_PASSWORD not in recorded


def test_one_helper_reads_the_environment_and_reports_every_bad_value_the_same_way():
    reader = EnvReader(
        {
            "A_COUNT": "many",
            "B_URL": f"postgresql://hub:{DB_PASSWORD}@h/db",
            "C_PASSWORD": "x",
            "D_COUNT": " 5 ",
        }
    )
    assert reader.get("A_COUNT", int_range(1, 9), 3) == 3
    assert reader.get("D_COUNT", int_range(1, 9), 3) == 5
    assert reader.get("UNSET", int_range(1, 9), 3) == 3

    def refuse(raw: str) -> str:
        raise ValueError("refused")

    reader.get("B_URL", refuse, None)
    reader.get("C_PASSWORD", refuse, None)
    assert reader.problems == [
        "A_COUNT='many': expected a whole number",
        "B_URL='postgresql://hub:***@h/db': refused",
        "C_PASSWORD=***: refused",
    ]


@pytest.mark.parametrize(
    ("load", "name"),
    [
        (Settings.from_env, "SHARED_QUEUE_BATCH_SIZE"),
        (ExportSettings.from_env, "QUEUE_ASSETS_EXPORT_MIN_USAGE"),
    ],
)
def test_the_hub_and_the_export_settings_word_a_bad_value_alike(load, name):
    with pytest.raises(SettingsError) as info:
        load({name: "lots"})
    assert info.value.problems == [f"{name}='lots': expected a whole number"]


def test_the_demo_and_threshold_settings_are_read_with_the_rest():
    s = Settings.from_env({"QUEUE_ASSETS_DEMO": "1", "QUEUE_ASSETS_QUEUE_THRESHOLDS": '{"x": {}}'})
    assert (s.demo, s.queue_thresholds) == (True, '{"x": {}}')
    assert Settings.from_env({"QUEUE_ASSETS_DEMO": "yes"}).demo is False  # only "1", as before
    running = _defs({"QUEUE_ASSETS_DEMO": "1"}).resolve_sensor_def("demo_lineage_sensor")
    assert running.default_status == dg.DefaultSensorStatus.RUNNING
    stopped = _defs({}).resolve_sensor_def("demo_lineage_sensor")
    assert stopped.default_status == dg.DefaultSensorStatus.STOPPED

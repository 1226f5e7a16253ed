"""Secrets never appear in logs, Dagster metadata or error texts.

The main test runs the whole demo the way a user does (`queue-assets init`, then `queue-assets dev`:
webserver, daemon, code server, sensors, simulated instances) against a password-protected
PostgreSQL role and a GitHub token, both set to known strings, with the GitHub API served by a fake
on loopback. It launches every job from the webserver, makes things fail (GitHub refusing the
token and echoing it back, the hub's database role refusing logins), and then searches for the
secrets in: the processes' stdout/stderr, every file under the data folder (compute logs, Dagster
home, Git work copies), every row of Dagster's database and of the hub's database, and every
GraphQL answer (instance info, runs with tags and config, every event of every run, asset
metadata, sensor and schedule ticks and dry runs, resource configuration, launch errors).

The smaller tests pin the error paths one by one (settings, connections, the SDK, GitHub settings).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
import requests
from psycopg import sql

from queue_assets import db
from queue_assets.settings import Settings, SettingsError, project_root
from queue_assets_tests.conftest import with_database
from queue_assets_tests.fake_github import FakeGitHub, serve_fake_github
from queue_assets_tests.helpers import free_port
from queue_assets_tests.soak.graphql import HubGraphQL

HEX = uuid.uuid4().hex
HUB_PASSWORD = f"HubPw{HEX[:12]}"
DAGSTER_PASSWORD = f"DagPw{HEX[12:24]}"
TOKEN = f"ghp_{HEX}{HEX[:4]}"
# What the export's failure says when GitHub refuses the token and echoes it back (masked).
GITHUB_REFUSAL = "failed with HTTP 401: Bad credentials for ***"


def secret_forms() -> dict[str, str]:
    """Every form a secret could leak in: as is, URL-quoted, and inside HTTP basic credentials."""
    forms = {}
    for name, secret in (
        ("hub password", HUB_PASSWORD),
        ("dagster password", DAGSTER_PASSWORD),
        ("github token", TOKEN),
    ):
        forms[name] = secret
        forms[name + " (url-quoted)"] = quote(secret, safe="")
    for user in ("x-access-token", "git"):
        forms[f"github token (basic auth as {user})"] = base64.b64encode(f"{user}:{TOKEN}".encode()).decode()
    forms["github token (base64)"] = base64.b64encode(TOKEN.encode()).decode()[:-4]
    return forms


class Haystack:
    """Texts collected from everywhere, each with where it came from."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.items.append((where, text))

    def leaks(self) -> list[str]:
        found = []
        for where, text in self.items:
            for name, form in secret_forms().items():
                at = text.find(form)
                if at >= 0:
                    context = text[max(0, at - 120) : at + len(form) + 40].replace(form, f"<{name}>")
                    found.append(f"{name} in {where}: ...{context}...")
        return found

    def size(self) -> int:
        return sum(len(t) for _, t in self.items)


# --- the small error paths -----------------------------------------------------------------------


def test_settings_errors_and_display_never_show_the_password():
    url = f"postgresql://hub:{HUB_PASSWORD}@db.example:notaport/shared_queue"
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"SHARED_QUEUE_DB_URL": url})
    assert "SHARED_QUEUE_DB_URL" in str(info.value) and HUB_PASSWORD not in str(info.value)
    with pytest.raises(SettingsError) as info:
        Settings.from_env(
            {
                "SHARED_QUEUE_HOST": "db.example",
                "SHARED_QUEUE_PORT": "x",
                "SHARED_QUEUE_PASSWORD": HUB_PASSWORD,
            }
        )
    assert "SHARED_QUEUE_PORT" in str(info.value) and HUB_PASSWORD not in str(info.value)
    settings = Settings.from_env(
        {
            "SHARED_QUEUE_DB_URL": url.replace("notaport", "5432"),
            "DAGSTER_PG_URL": f"postgresql+psycopg2://d:{DAGSTER_PASSWORD}@h/dagster",
        }
    )
    shown = json.dumps(settings.describe())
    assert HUB_PASSWORD not in shown and DAGSTER_PASSWORD not in shown and "***" in shown


def test_settings_cli_never_shows_the_password(monkeypatch, capsys):
    from queue_assets import cli

    monkeypatch.setenv("SHARED_QUEUE_DB_URL", f"postgresql://hub:{HUB_PASSWORD}@127.0.0.1:1/shared_queue")
    monkeypatch.setenv("DAGSTER_PG_URL", f"postgresql+psycopg2://d:{DAGSTER_PASSWORD}@127.0.0.1:1/dagster")
    assert cli.main(["settings"]) == 0
    out = capsys.readouterr()
    assert HUB_PASSWORD not in out.out + out.err and DAGSTER_PASSWORD not in out.out + out.err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_database_error_never_shows_the_password():
    url = f"postgresql://hub:{HUB_PASSWORD}@127.0.0.1:{_closed_port()}/shared_queue"
    with pytest.raises(db.DatabaseUnavailable) as info:
        db.connect(url)
    assert "hub:***@127.0.0.1" in str(info.value) and HUB_PASSWORD not in str(info.value)


def test_a_database_refusing_the_role_shows_no_password(server_admin_url):
    url = psycopg.conninfo.make_conninfo(
        server_admin_url, user=f"no_such_role_{HEX[:6]}", password=HUB_PASSWORD
    )
    with pytest.raises(db.DatabaseUnavailable) as info:
        db.connect(url)
    assert "does not exist" in str(info.value) and HUB_PASSWORD not in str(info.value)


def test_redact_handles_urls_and_libpq_keyword_strings():
    from queue_assets.redact import redact

    assert redact(f"postgresql://hub:{HUB_PASSWORD}@h/db?password={HUB_PASSWORD}") == (
        "postgresql://hub:***@h/db?password=***"
    )
    assert redact(f"user=hub password={HUB_PASSWORD} host=h") == "user=hub password=*** host=h"
    assert redact(f"user=hub password='{HUB_PASSWORD} x' dbname=d") == "user=hub password=*** dbname=d"


def test_one_redaction_masks_passwords_in_any_url_form_and_every_known_secret():
    """The one function all call sites use. Fails if a scheme, a form or a registered secret slips through."""
    from queue_assets.redact import redact, register_secret, secrets_in

    pw = f"Rx{HEX[:10]}"
    assert redact(f"x postgresql+psycopg2://hub:{pw}@h/db y") == "x postgresql+psycopg2://hub:***@h/db y"
    assert redact(f"fatal: https://bob:{pw}@git.example/x") == "fatal: https://bob:***@git.example/x"
    assert redact(f"https://{pw}@github.com/a/b") == "https://***@github.com/a/b"  # a bare token as the user
    assert (
        redact("ssh://git@host/x and postgresql://hub@h/db") == "ssh://git@host/x and postgresql://hub@h/db"
    )
    assert redact(f"postgresql://hub:p@{pw}@h/db") == "postgresql://hub:***@h/db"  # an unquoted '@' in it
    assert redact(f'{{"password": "{pw} x", "PGPASSWORD={pw}"}}') == '{"password": ***, "PGPASSWORD=***'
    assert set(secrets_in(f"host=h password='{pw}'")) >= {pw}
    assert set(secrets_in(f"postgresql://u:{pw}%21@h/db")) >= {f"{pw}%21", f"{pw}!"}
    assert redact(f"token {pw}z echoed", secrets=(f"{pw}z",)) == "token *** echoed"
    register_secret(f"{pw}%zz")
    assert redact(f'invalid percent-encoded token: "{pw}%zz"') == 'invalid percent-encoded token: "***"'


def test_the_sdk_reports_an_unreachable_hub_without_the_password(caplog):
    from queue_assets.sdk import HubClient

    url = f"postgresql://producer:{HUB_PASSWORD}@127.0.0.1:{_closed_port()}/shared_queue"
    with pytest.raises(Exception) as info:  # noqa: B017 - whatever it raises, it must not hold the password
        with HubClient(url, "singularity-1") as hub:
            hub.q.pool.timeout = 1.0  # wait 1 s per attempt for a connection instead of 30
            hub.heartbeat()
    text = "".join(str(e) + repr(e) for e in (info.value, info.value.__cause__, info.value.__context__) if e)
    assert "127.0.0.1" in text + caplog.text  # the failure is explained...
    assert HUB_PASSWORD not in text + caplog.text  # ...without the password, also in the pool's log lines


def test_github_settings_errors_and_repr_never_show_the_token():
    from queue_assets.git.github import GitHubSettings
    from queue_assets.git.repo import GitAuth

    with pytest.raises(SettingsError) as info:
        GitHubSettings.from_env({"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "not a repo"})
    assert "GITHUB_REPOSITORY" in str(info.value) and TOKEN not in str(info.value)
    with pytest.raises(SettingsError) as info:
        GitHubSettings.from_env(
            {
                "GITHUB_TOKEN": TOKEN,
                "GITHUB_REPOSITORY": "acme/t",
                "GITHUB_API_URL": f"https://x-access-token:{TOKEN}@api.github.com",
            }
        )
    assert "GITHUB_API_URL" in str(info.value) and TOKEN not in str(info.value)
    settings = GitHubSettings.from_env({"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/t"})
    assert TOKEN not in repr(settings) and TOKEN not in repr(GitAuth("x-access-token", TOKEN))


def test_a_github_error_echoing_the_token_is_redacted():
    from queue_assets.git.github import GitHubPullRequests, GitHubSettings, PullRequestError

    fake = FakeGitHub(token=TOKEN)
    fake.fail["GET"] = (401, {"message": f"Bad credentials: {TOKEN}"})
    with serve_fake_github(fake) as gh:
        settings = GitHubSettings(repository="acme/templates_data", token=TOKEN, api_url=gh.url)
        with pytest.raises(PullRequestError) as info:
            GitHubPullRequests(settings, retries=0).ensure(head="feature/x", base="main", title="t", body="b")
    assert "401" in str(info.value) and TOKEN not in str(info.value)


# --- SQLAlchemy-style URLs (`postgresql+psycopg2://`): converted, or refused without the password ---
# Before the fix such a URL passed the settings, psycopg refused it with its whole text in the
# message, and the CLI printed that traceback, the Dagster run failure held it, the sensor raised it.

URL_PASSWORD = f"UrlPw{HEX[:14]}"


def _failing_urls(server_url: str) -> dict[str, tuple[str, str]]:
    """name -> (`postgresql+psycopg2://` URL with URL_PASSWORD, what the error must say): a closed
    port, and a role the real server refuses."""
    parts = urlsplit(server_url)
    refused = urlunsplit(
        (
            "postgresql+psycopg2",
            f"no_such_role_{HEX[:6]}:{URL_PASSWORD}@" + parts.netloc.rsplit("@", 1)[-1],
            parts.path,
            parts.query,
            "",
        )
    )
    return {
        "unreachable": (
            f"postgresql+psycopg2://hub:{URL_PASSWORD}@127.0.0.1:{_closed_port()}/shared_queue",
            "Connection refused",
        ),
        "refused": (refused, r"does not exist|password authentication failed"),
    }


@pytest.mark.parametrize("scheme", ["postgresql+psycopg2", "postgresql+psycopg", "postgres", "postgresql"])
def test_sqlalchemy_and_postgres_schemes_are_converted_to_what_each_driver_takes(scheme):
    """Fails when the settings keep `postgresql+psycopg2://` for psycopg 3 (which cannot read it) or
    give Dagster's storage anything but `postgresql+psycopg2://`."""
    raw = f"{scheme}://hub:{URL_PASSWORD}@db.example:5432/shared_queue"
    settings = Settings.from_env(
        {"SHARED_QUEUE_DB_URL": raw, "DAGSTER_PG_URL": raw.replace("shared_queue", "dagster")}
    )
    assert settings.db_url == f"postgresql://hub:{URL_PASSWORD}@db.example:5432/shared_queue"
    assert settings.dagster_db_url == f"postgresql+psycopg2://hub:{URL_PASSWORD}@db.example:5432/dagster"
    assert psycopg.conninfo.conninfo_to_dict(settings.db_url)["password"] == URL_PASSWORD


@pytest.mark.parametrize(
    "raw, reason",
    [
        (f"mysql://hub:{URL_PASSWORD}@h/db", "scheme 'mysql' is not PostgreSQL"),
        (f"postgresql+asyncpg://hub:{URL_PASSWORD}@h/db", "the driver 'asyncpg' is not supported"),
        (f"postgresql://hub:{URL_PASSWORD}%zz@h/db", "invalid percent-encoded token"),
        (
            f"postgresql://hub@h/db?sslmode=require&pasword={URL_PASSWORD}",
            'invalid URI query parameter: "pasword"',
        ),
    ],
)
def test_a_url_psycopg_cannot_read_is_refused_naming_the_variable_and_not_the_password(raw, reason):
    """Fails when a URL libpq cannot parse passes the settings (psycopg then echoes it whole), or
    when the refusal shows the password (libpq quotes a bad percent-encoding without its key)."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"SHARED_QUEUE_DB_URL": raw})
    text = str(info.value)
    assert "SHARED_QUEUE_DB_URL=" in text and reason in text, text
    assert URL_PASSWORD not in text and quote(URL_PASSWORD) not in text, text


@pytest.mark.parametrize("command", [["status"], ["init"], ["ingest", "pattern_messages"]])
def test_the_cli_given_a_sqlalchemy_url_says_why_it_failed_and_never_shows_the_password(
    command, server_admin_url, tmp_path
):
    """Real CLI processes, real server. Fails on the old code, which printed psycopg's traceback
    quoting `postgresql+psycopg2://hub:<password>@...`; fails too if any error path prints a traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHARED_QUEUE_", "DAGSTER_", "GITHUB_"))}
    env["QUEUE_ASSETS_DATA_DIR"] = str(tmp_path / "data")
    for case, (url, reason) in _failing_urls(server_admin_url).items():
        proc = subprocess.run(
            [sys.executable, "-m", "queue_assets.cli", *command],
            env={**env, "SHARED_QUEUE_DB_URL": url},
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        shown = proc.stdout + proc.stderr
        assert proc.returncode != 0, (case, shown)
        assert URL_PASSWORD not in shown, (case, shown)
        assert "Traceback" not in proc.stderr, (case, shown)
        assert "queue-assets: error: " in proc.stderr and re.search(reason, proc.stderr), (case, shown)
        assert re.search(r":\*\*\*@|password=\*\*\*", proc.stderr), (
            case,
            shown,
        )  # the server is named, redacted


def test_a_dagster_run_and_a_sensor_given_a_sqlalchemy_url_fail_clearly_without_the_password(
    server_admin_url, monkeypatch, capfd
):
    """The hub's own settings path (SHARED_QUEUE_DB_URL in the environment) in a real run and a
    real sensor evaluation. Fails on the old code: the run's failure event, the console log and
    the sensor's exception quoted the URL with its password."""
    import dagster as dg

    from queue_assets.definitions import defs
    from queue_assets.ingest.assets import INGEST_ASSETS
    from queue_assets.resources import SharedQueueResource

    url, reason = _failing_urls(server_admin_url)["refused"]
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", url)
    instance = dg.DagsterInstance.ephemeral()
    asset = next(a for a in INGEST_ASSETS if a.key == dg.AssetKey("pattern_messages"))
    result = dg.materialize(
        [asset], resources={"shared_queue": SharedQueueResource()}, instance=instance, raise_on_error=False
    )
    assert not result.success
    events = "\n".join(dg.serialize_value(e) for e in instance.all_logs(result.run_id))
    failure = result.failure_data_for_node("pattern_messages").error.to_string()
    assert re.search(reason, failure) and "cannot reach the shared_queue database" in failure, failure
    assert URL_PASSWORD not in events + failure

    ctx = dg.build_sensor_context(
        instance=instance, resources={"shared_queue": SharedQueueResource()}, definitions=defs
    )
    skip = defs.resolve_sensor_def("pattern_messages_sensor")(ctx)
    assert isinstance(skip, dg.SkipReason) and re.search(reason, skip.skip_message), skip
    assert URL_PASSWORD not in skip.skip_message
    console = capfd.readouterr()
    assert URL_PASSWORD not in console.out + console.err


# --- the whole demo ------------------------------------------------------------------------------


def _selection(
    graphql_type, depth: int, alias: str | None = None, skip: frozenset = frozenset()
) -> str | None:
    """A selection of every field (no required arguments) down to `depth`, unions expanded."""
    from graphql import (
        GraphQLEnumType,
        GraphQLNonNull,
        GraphQLScalarType,
        GraphQLUnionType,
        Undefined,
        get_named_type,
    )

    t = get_named_type(graphql_type)
    if isinstance(t, (GraphQLScalarType, GraphQLEnumType)):
        return ""
    if depth <= 0:
        return None
    parts = ["__typename"]
    if isinstance(t, GraphQLUnionType):
        # Members share field names with different types (`AssetKey` vs `AssetKey!`), which GraphQL
        # refuses to merge: alias each member's fields with the member's name.
        parts += [
            f"... on {m.name} {s}" for m in t.types if (s := _selection(m, depth, alias=m.name, skip=skip))
        ]
    else:
        for name, field in t.fields.items():
            required = any(
                isinstance(a.type, GraphQLNonNull) and a.default_value in (None, Undefined)
                for a in field.args.values()
            )
            if name in _SKIP_FIELDS or name in skip or required:
                continue
            s = _selection(field.type, depth - 1, skip=skip)
            if s is not None:
                parts.append((f"{alias}_{name}: " if alias else "") + f"{name} {s}".strip())
    return "{ " + " ".join(parts) + " }"


# Fields that lead back into the whole repository graph (covered by their own queries) or are heavy.
_SKIP_FIELDS = frozenset(
    {
        "repository",
        "repositoryOrigin",
        "pipeline",
        "runs",
        "run",
        "assetNode",
        "solidHandle",
        "solidHandles",
        "solids",
        "solid",
        "dagsterTypes",
        "executionPlan",
        "jobs",
        "dependedBy",
        "dependencies",
        "op",
        "assetsForSameStorageAddress",
        "requiredResources",
        "partitionDefinition",
        "assetPartitionStatuses",
        "latestRunForPartition",
        "dataVersionByPartition",
        "partitionKeysByDimension",
        "partitionKeys",
        "configField",
        "nestedResources",
        "parentResources",
        "jobsOpsUsing",
        "assetObservations",
        "modes",
        "presets",
        "schedules",
        "sensors",
        "assetChecksOrError",
        "type",
        "configSchemaOrError",
        "automationCondition",
        "autoMaterializePolicy",
        "lastAutoMaterializationEvaluationRecord",
        "targetingInstigators",
        "assetSelection",
        "assetCheckSelection",
        "assets",
        "stepStats",
        "eventConnection",
        "partitionStats",
        "staleCauses",
        "staleCausesByPartition",
        "staleStatusByPartition",
        "freshnessInfo",
        "freshnessStatusInfo",
        "assetMaterializationUsedData",
        "internalFreshnessPolicy",
        "freshnessPolicy",
        "backfillPolicy",
        "assetMaterializations",
        "ticks",
        "nextTick",
        "futureTicks",
        "tick",
        "capturedLogs",
        "daemonHealth",
        "concurrencyLimits",
        "concurrencyLimit",
        "typeSpecificData",
        "sensorState",
        "scheduleState",
        "partitionSet",
        "dependencyKeys",
        "dependedByKeys",
        "stats",
        "rootConcurrencyKeys",
        "assetChecks",
        "assetCheckExecutions",
    }
)


class GraphQL:
    """The webserver's GraphQL endpoint; every answer is also added to the haystack."""

    def __init__(self, port: int, haystack: Haystack):
        from dagster_graphql.schema import create_schema

        self.url = f"http://127.0.0.1:{port}/graphql"
        self.haystack = haystack
        self.schema = create_schema().graphql_schema

    def sel(self, root: str, field: str, depth: int) -> str:
        root_type = self.schema.query_type if root == "query" else self.schema.mutation_type
        return _selection(root_type.fields[field].type, depth)

    def __call__(self, query: str, variables: dict | None = None, *, where: str = "graphql") -> dict:
        resp = requests.post(self.url, json={"query": query, "variables": variables or {}}, timeout=120)
        self.haystack.add(f"{where} (GraphQL)", resp.text)
        body = resp.json()
        errors = body.get("errors") or []
        # A query the server refuses is a bug here; a resolver that fails on one field (its error has
        # a `path`) is not, and its message was searched with the rest of the answer.
        assert all("path" in e for e in errors) and body.get("data") is not None, (
            f"{where}: {json.dumps(errors)[:2000]}"
        )
        return body["data"]


class Demo:
    """`queue-assets init` + `queue-assets dev` in a data folder of their own, stopped at the end."""

    def __init__(self, tmp_path: Path, env: dict[str, str], port: int):
        self.tmp_path, self.env, self.port = tmp_path, env, port
        self.out = tmp_path / "dev.stdout"
        self.err = tmp_path / "dev.stderr"
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "queue_assets.cli", *args],
            env=self.env,
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=300,
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "queue_assets.cli",
                "dev",
                "--port",
                str(self.port),
                "--instances",
                "3",
                "--rate",
                "5",
            ],
            env=self.env,
            cwd=project_root(),
            stdout=self.out.open("wb"),
            stderr=self.err.open("wb"),
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in the demo's session (a code server that outlived `dagster dev`, a run
        # worker) was started by this demo and goes with it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def _wait(what: str, check, timeout_s: float, every_s: float = 2.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (requests.RequestException, AssertionError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {str(last)[:500]})")


@pytest.fixture
def password_protected_databases(server_admin_url):
    """A hub role and a Dagster role with known passwords, each owning its database."""
    hub_role, dagster_role = f"qa_hub_{HEX[:8]}", f"qa_dag_{HEX[:8]}"
    hub_db, dagster_db = f"qa_redact_sq_{HEX[:8]}", f"qa_redact_dg_{HEX[:8]}"
    with psycopg.connect(server_admin_url, autocommit=True) as conn:
        try:  # the producer group is cluster-wide; create it here so the hub role need not own it
            conn.execute("CREATE ROLE queue_assets_producer NOLOGIN")
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            pass
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                sql.Identifier(hub_role), sql.Literal(HUB_PASSWORD)
            )
        )
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(dagster_role), sql.Literal(DAGSTER_PASSWORD)
            )
        )
        conn.execute(
            sql.SQL("GRANT queue_assets_producer TO {} WITH ADMIN OPTION").format(sql.Identifier(hub_role))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(hub_db), sql.Identifier(hub_role))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(dagster_db), sql.Identifier(dagster_role)
            )
        )

    def url(role, password, database, scheme="postgresql"):
        parts = urlsplit(with_database(server_admin_url, database))
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((scheme, f"{role}:{quote(password, safe='')}@{host}", parts.path, parts.query, ""))

    yield {
        "shared_queue": url(hub_role, HUB_PASSWORD, hub_db),
        "dagster": url(dagster_role, DAGSTER_PASSWORD, dagster_db, "postgresql+psycopg2"),
        "hub_role": hub_role,
        "admin_shared_queue": with_database(server_admin_url, hub_db),
        "admin_dagster": with_database(server_admin_url, dagster_db),
    }
    with psycopg.connect(server_admin_url, autocommit=True) as conn:
        for database in (hub_db, dagster_db):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        for role in (hub_role, dagster_role):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _dump_database(url: str, haystack: Haystack, label: str) -> int:
    """Every row of every table (but pg_catalog's) as text into the haystack; returns the row count."""
    rows = 0
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            for (text,) in conn.execute(
                sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(schema, table))
            ):
                haystack.add(f"{label} table {schema}.{table}", text)
                rows += 1
    return rows


def _dump_files(root: Path, haystack: Haystack) -> int:
    n = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            haystack.add(f"file {path.relative_to(root)}", path.read_bytes())
            n += 1
    return n


@pytest.mark.slow
@pytest.mark.timeout(4800)
def test_no_secret_appears_in_any_log_metadata_or_error_of_the_whole_demo(
    password_protected_databases, tmp_path
):
    dbs = password_protected_databases
    haystack = Haystack()
    fake = FakeGitHub(token=TOKEN)
    with serve_fake_github(fake) as gh:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SHARED_QUEUE_", "DAGSTER_", "GITHUB_"))
        }
        env.update(
            {
                # The hub's URL as SQLAlchemy users write it: the settings convert it for psycopg.
                "SHARED_QUEUE_DB_URL": dbs["shared_queue"].replace(
                    "postgresql://", "postgresql+psycopg2://", 1
                ),
                "DAGSTER_PG_URL": dbs["dagster"],
                "QUEUE_ASSETS_DATA_DIR": str(tmp_path / "data"),
                "GITHUB_TOKEN": TOKEN,
                "GITHUB_REPOSITORY": "acme/templates_data",
                "GITHUB_API_URL": gh.url,
                "QUEUE_ASSETS_EXPORT_MIN_USAGE": "0",
                "QUEUE_ASSETS_EXPORT_MIN_SUCCESS_RATE": "0",
                # The refused export retries (queue_assets/retries.py) at once, not over 13 minutes.
                "QUEUE_ASSETS_RETRY_DELAY_S": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        demo = Demo(tmp_path, env, free_port(range(3400, 3500)))
        init = demo.cli("init")
        haystack.add("queue-assets init stdout", init.stdout)
        haystack.add("queue-assets init stderr", init.stderr)
        assert init.returncode == 0, init.stderr[-2000:]
        demo.start()
        try:
            gql = _wait("the webserver", lambda: _graphql_ready(demo.port, haystack), 240)
            failed = _exercise(gql, dbs, fake)
            left_out = _collect_graphql(gql)
            # Fields Dagster fails to resolve are left out of the sweep; none may be one that carries text.
            assert not set(left_out) & {
                "message",
                "description",
                "text",
                "mdStr",
                "jsonString",
                "value",
                "stack",
                "error",
                "skipReason",
                "runConfigYaml",
                "tags",
                "metadataEntries",
            }, left_out
        finally:
            demo.stop()
        # The CLI, given that URL, while the hub's role may not log in: the reason, never the password.
        with psycopg.connect(dbs["admin_shared_queue"], autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(dbs["hub_role"])))
            try:
                refused_cli = demo.cli("status")
            finally:
                conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(dbs["hub_role"])))
        haystack.add("queue-assets status (login refused) stdout", refused_cli.stdout)
        haystack.add("queue-assets status (login refused) stderr", refused_cli.stderr)
        assert refused_cli.returncode != 0 and "not permitted to log in" in refused_cli.stderr, (
            refused_cli.stderr
        )
        export_failure = failed.pop("export failure")
        assert failed == {"export refused by GitHub": "FAILURE", "role refused": "FAILURE"}, export_failure
        # ...and the export failed because GitHub refused it, not for another reason; GitHub's echo of
        # the token reached the error text masked.
        assert GITHUB_REFUSAL in export_failure, export_failure
        # The token was really used: the cycle's pull request was opened with it before the refusals.
        assert len(fake.open_pulls()) == 1 and all(
            r.headers.get("authorization") == f"Bearer {TOKEN}" for r in fake.requests
        )
    haystack.add("dev stdout", demo.out.read_bytes())
    haystack.add("dev stderr", demo.err.read_bytes())
    files = _dump_files(tmp_path / "data", haystack)
    rows = _dump_database(dbs["admin_dagster"], haystack, "dagster database")
    hub_rows = _dump_database(dbs["admin_shared_queue"], haystack, "shared_queue database")
    assert files > 10 and rows > 100 and hub_rows > 100, (files, rows, hub_rows)
    # The searched material must hold the places a leak would land: compute logs and failures.
    assert any("compute_logs" in w or w.endswith((".out", ".err")) for w, _ in haystack.items)
    assert GITHUB_REFUSAL in "".join(t for _, t in haystack.items)
    assert haystack.leaks() == []


def _graphql_ready(port: int, haystack: Haystack) -> GraphQL | None:
    gql = GraphQL(port, haystack)
    data = gql(
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }",
        where="repositories",
    )
    nodes = data["repositoriesOrError"]["nodes"]
    if not nodes:
        return None
    gql.repo = {"repositoryName": nodes[0]["name"], "repositoryLocationName": nodes[0]["location"]["name"]}
    return gql


def _runs(gql: GraphQL) -> list[dict]:
    q = "{ runsOrError(limit: 1000) { ... on Runs { results { runId jobName status tags { key value } } } } }"
    return gql(q, where="runs")["runsOrError"]["results"]


def _launch(
    gql: GraphQL,
    job: str,
    *,
    tags: list | None = None,
    run_config: str | None = None,
    assets: list | None = None,
) -> str | None:
    selector = {**gql.repo, "jobName": job}
    if assets:
        selector["assetSelection"] = assets
    params = {"selector": selector, "executionMetadata": {"tags": tags or []}}
    if run_config:
        params["runConfigData"] = run_config
    q = (
        "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename"
        " ... on LaunchRunSuccess { run { runId } } ... on Error { message }"
        " ... on PythonError { stack } ... on RunConfigValidationInvalid { errors { message } } } }"
    )
    result = gql(q, {"p": params}, where=f"launchRun {job}")["launchRun"]
    return result.get("run", {}).get("runId") if result["__typename"] == "LaunchRunSuccess" else None


def _wait_finished(gql: GraphQL, run_ids: list[str], timeout_s: float) -> None:
    def done():
        status = {r["runId"]: r["status"] for r in _runs(gql)}
        return all(status.get(i) in ("SUCCESS", "FAILURE", "CANCELED") for i in run_ids)

    _wait(f"runs {run_ids}", done, timeout_s, every_s=3)


def _exercise(gql: GraphQL, dbs: dict, fake: FakeGitHub) -> dict[str, str]:
    """The demo runs: its sensors ingest and drive the hourly/daily jobs, and every job no running
    sensor targets is launched from the webserver, until every job has run. Then, with the demo's
    own traffic of runs stopped, the export runs while GitHub refuses the token (echoing it back),
    and a run starts while the hub's role may not log in. Returns those two runs' statuses."""
    sensors = gql(
        "query($r: RepositorySelector!) { sensorsOrError(repositorySelector: $r) { ... on Sensors {"
        " results { name sensorState { id selectorId status } targets { pipelineName } } } } }",
        {"r": gql.repo},
        where="sensors",
    )["sensorsOrError"]["results"]
    targeted = {
        t["pipelineName"]
        for s in sensors
        if s["sensorState"]["status"] == "RUNNING"
        for t in s["targets"] or ()
    }
    jobs = {
        j["name"]
        for j in gql(
            "query($r: RepositorySelector!) { repositoryOrError(repositorySelector: $r) {"
            " ... on Repository { jobs { name } } } }",
            {"r": gql.repo},
            where="jobs",
        )["repositoryOrError"]["jobs"]
    } - {"__ASSET_JOB"}
    for job in sorted(jobs - targeted):
        _launch(gql, job, **_partition_of(gql, job))

    def finished(wanted: set[str]):
        return lambda: (
            wanted <= {r["jobName"] for r in _runs(gql) if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")}
        )

    launched = jobs - targeted
    _wait(
        f"a finished run of every launched job ({', '.join(sorted(launched))})",
        finished(launched),
        2400,
        every_s=10,
    )
    # A sensor with nothing to do never requests its job (e.g. `hub_llm_results` stays empty: the demo
    # has no LLM router yet); launch those jobs once, so every job's logs are searched too.
    seen = {r["jobName"] for r in _runs(gql)}
    for job in sorted((jobs & targeted) - seen):
        _launch(gql, job, **_partition_of(gql, job))
    _wait(f"a finished run of every job ({', '.join(sorted(jobs))})", finished(jobs), 600, every_s=10)

    # Stop the demo's stream of runs so the two failures below do not queue behind it.
    for sensor in sensors:
        if sensor["name"] == "demo_lineage_sensor" and sensor["sensorState"]["status"] == "RUNNING":
            gql(
                "mutation($id: String!, $sel: String!) { stopSensor(id: $id, jobSelectorId: $sel) { __typename } }",
                {"id": sensor["sensorState"]["id"], "sel": sensor["sensorState"]["selectorId"]},
                where="stop demo_lineage_sensor",
            )
    queued = [r["runId"] for r in _runs(gql) if r["status"] in ("QUEUED", "NOT_STARTED")]
    if queued:
        gql(
            "mutation($ids: [String!]!) { terminateRuns(runIds: $ids) { __typename } }",
            {"ids": queued},
            where="cancel queued runs",
        )

    # GitHub refuses the token and echoes it back: the export of the same cycle fails with GitHub's words.
    refusal = (401, {"message": f"Bad credentials for {TOKEN}", "token": TOKEN})
    fake.fail.update({"GET": refusal, "POST": refusal, "PATCH": refusal})
    refused_export = _launch(gql, "knowledge_export_job", **_partition_of(gql, "knowledge_export_job"))
    _wait_finished(gql, [refused_export], 900)
    fake.fail.clear()

    # The hub's role may not log in: a run fails to connect, sensor ticks report it.
    with psycopg.connect(dbs["admin_shared_queue"], autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(dbs["hub_role"])))
        try:
            refused_login = _launch(gql, "queue_statistics_job")
            _wait_finished(gql, [refused_login], 900)
        finally:
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(dbs["hub_role"])))
    statuses = {r["runId"]: r["status"] for r in _runs(gql)}
    return {
        "export refused by GitHub": statuses[refused_export],
        "role refused": statuses[refused_login],
        "export failure": HubGraphQL(gql.url.removesuffix("/graphql")).failure_text(refused_export),
    }


def _partition_keys(gql: GraphQL, job: str, n: int) -> list[str]:
    q = (
        "query($s: PipelineSelector!, $n: Int!) { pipelineOrError(params: $s) { ... on Pipeline {"
        " partitionKeysOrError(reverse: true, limit: $n) { partitionKeys } } } }"
    )
    data = gql(q, {"s": {**gql.repo, "pipelineName": job}, "n": n}, where=f"partitions of {job}")[
        "pipelineOrError"
    ]
    return (data.get("partitionKeysOrError") or {}).get("partitionKeys") or []


def _partition_of(gql: GraphQL, job: str, key: str | None = None) -> dict:
    """Tags and run config of one partition of the job (default: its newest; {} when unpartitioned)."""
    keys = [key] if key else _partition_keys(gql, job, 1)
    if not keys:
        return {}
    q = (
        "query($s: PipelineSelector!, $k: String!) { pipelineOrError(params: $s) { ... on Pipeline {"
        " partition(partitionName: $k) { tagsOrError { ... on PartitionTags { results { key value } } }"
        " runConfigOrError { ... on PartitionRunConfig { yaml } } } } } }"
    )
    part = gql(
        q, {"s": {**gql.repo, "pipelineName": job}, "k": keys[0]}, where=f"partition {keys[0]} of {job}"
    )["pipelineOrError"]["partition"]
    tags = [{"key": t["key"], "value": t["value"]} for t in part["tagsOrError"]["results"]]
    return {"tags": tags, "run_config": part["runConfigOrError"].get("yaml") or None}


def sweep_queries(schema, skip: frozenset = frozenset()) -> dict[str, str]:
    """The GraphQL documents of the sweep, built from the schema (every field, unions expanded)."""

    def sel(root, field: str, depth: int) -> str:
        return _selection(root.fields[field].type, depth, skip=skip)

    q, m = schema.query_type, schema.mutation_type
    repo = "query($r: RepositorySelector!) { "
    tick = _selection(schema.get_type("InstigationTick"), 4, skip=skip)
    out = {
        "instance": "{ instance " + sel(q, "instance", 2) + " }",
        "runs": "{ runsOrError(limit: 1000) " + sel(q, "runsOrError", 3) + " }",
        "events": "query($id: ID!) { logsForRun(runId: $id, limit: 100000) " + sel(q, "logsForRun", 4) + " }",
        "assets": (
            "{ assetNodes(loadMaterializations: true) "
            + sel(q, "assetNodes", 3)[:-1]
            + " assetMaterializations(limit: 50) "
            + _selection(schema.get_type("MaterializationEvent"), 3, skip=skip)
            + " } }"
        ),
        "resources": repo
        + "allTopLevelResourceDetailsOrError(repositorySelector: $r) "
        + sel(q, "allTopLevelResourceDetailsOrError", 3)
        + " }",
        "env_vars": repo
        + "utilizedEnvVarsOrError(repositorySelector: $r) "
        + sel(q, "utilizedEnvVarsOrError", 3)
        + " }",
    }
    for kind in ("sensor", "schedule"):
        out[f"{kind}_ticks"] = (
            repo + f"{kind}sOrError(repositorySelector: $r) {{ ... on {kind.title()}s {{"
            f" results {{ name {kind}State {{ ticks(limit: 500) {tick} }} }} }} }} }}"
        )
        out[f"{kind}_dry_run"] = (
            f"mutation($s: {kind.title()}Selector!) {{ {kind}DryRun(selectorData: $s) "
            + sel(m, f"{kind}DryRun", 4)
            + " }"
        )
    return out


def test_the_graphql_sweep_is_valid_against_dagsters_schema():
    from dagster_graphql.schema import create_schema
    from graphql import parse, validate

    schema = create_schema().graphql_schema
    problems = {
        name: [e.message for e in validate(schema, parse(doc))] for name, doc in sweep_queries(schema).items()
    }
    assert {name: errs for name, errs in problems.items() if errs} == {}
    assert "Runs_results: results { __typename id runId " in sweep_queries(schema)["runs"]


_NON_NULL_VIOLATION = re.compile(r"Cannot return null for non-nullable field \w+\.(\w+)\.")


def _collect_graphql(gql: GraphQL) -> list[str]:
    """Ask the webserver for everything it shows; every answer lands in the haystack.

    Dagster 1.13 answers null for a few fields it declares non-null (e.g.
    `AssetMaterializationPlannedEvent.pipelineName`, `InstigationEventConnection.cursor`), which
    voids the whole answer; such a field is left out and the query asked again. Returns the fields
    left out.
    """
    skipped: set[str] = set()

    def ask(name: str, variables: dict | None = None, where: str = "") -> dict:
        for _ in range(20):
            doc = sweep_queries(gql.schema, frozenset(skipped))[name]
            resp = requests.post(gql.url, json={"query": doc, "variables": variables or {}}, timeout=300)
            gql.haystack.add(f"{where or name} (GraphQL)", resp.text)
            body = resp.json()
            broken = {
                m.group(1)
                for e in body.get("errors") or ()
                if (m := _NON_NULL_VIOLATION.search(e["message"]))
            }
            if body.get("data") is not None or not broken or broken <= skipped:
                assert body.get("data") is not None, (
                    f"{where or name}: {json.dumps(body.get('errors'))[:2000]}"
                )
                return body["data"]
            skipped.update(broken)
        raise AssertionError(f"{where or name}: still failing after leaving out {sorted(skipped)}")

    ask("instance")
    runs = ask("runs", where="runs in full")["runsOrError"]["Runs_results"]  # union members are aliased
    assert len(runs) >= 10, runs
    for run in runs:
        ask("events", {"id": run["runId"]}, where=f"events of run {run['runId']} ({run['jobName']})")
    ask("assets", where="asset nodes and materializations")
    for kind in ("sensor", "schedule"):
        results = ask(f"{kind}_ticks", {"r": gql.repo}, where=f"{kind} ticks")[f"{kind}sOrError"]["results"]
        for item in results:
            ask(
                f"{kind}_dry_run",
                {"s": {**gql.repo, f"{kind}Name": item["name"]}},
                where=f"{kind} dry run {item['name']}",
            )
    ask("resources", {"r": gql.repo})
    ask("env_vars", {"r": gql.repo}, where="environment variables")
    return sorted(skipped)

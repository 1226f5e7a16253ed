"""The demo as a newcomer meets it: the embedded server, `.env` for `dagster dev`, `status` beside the
demo, and a quiet CLI.

These run a real embedded server of their own (a fresh data folder, stopped afterwards) and the
real `queue-assets` and `dagster` commands in clean interpreters, without `DAGSTER_HOME`,
`DAGSTER_PG_URL`, `SHARED_QUEUE_DB_URL` or `XDG_RUNTIME_DIR` in their environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from queue_assets import bootstrap, embedded
from queue_assets.cli.app import DOTENV_HEADER, after_dev, dagster_home, write_dotenv
from queue_assets.operations.assets import queue_statistics
from queue_assets.resources import SharedQueueResource
from queue_assets.settings import Settings, project_root

BIN = Path(sys.executable).parent
UNSET = ("DAGSTER_HOME", "DAGSTER_PG_URL", "SHARED_QUEUE_DB_URL", "XDG_RUNTIME_DIR", "QUEUE_ASSETS_DATA_DIR")


def _clean_env(data_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    if data_dir is not None:
        env["QUEUE_ASSETS_DATA_DIR"] = str(data_dir)
    return env


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data folder with its own embedded server, bootstrapped as `queue-assets init` does."""
    # Named as a project's data folder is, so its parent plays the project root for `.env`.
    path = tmp_path_factory.mktemp("hub") / ".queue_assets"
    urls = embedded.ensure_running(path)
    bootstrap.bootstrap(urls["shared_queue"])
    yield path
    embedded.stop(path)


@pytest.fixture
def settings(data_dir) -> Settings:
    return Settings.from_env({"QUEUE_ASSETS_DATA_DIR": str(data_dir)})


@pytest.fixture
def checkout_dotenv():
    """The checkout's `.env`, put back as it was afterwards (`queue-assets init` writes it)."""
    path = project_root() / ".env"
    before = path.read_bytes() if path.exists() else None
    yield path
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(before)


def test_status_beside_the_demo_shows_its_last_materializations_without_settings(
    data_dir, settings, monkeypatch
):
    """Breaks when `status` needs DAGSTER_HOME (or DAGSTER_PG_URL) to find the demo's Dagster instance:
    it then says `DAGSTER_HOME is not set` instead of listing the materializations."""
    urls = embedded.ensure_running(data_dir)
    home = dagster_home(settings)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_URL", urls["dagster"])
    with dg.DagsterInstance.get() as instance:
        run_id = dg.materialize(
            [queue_statistics],
            instance=instance,
            resources={"shared_queue": SharedQueueResource(db_url=urls["shared_queue"])},
        ).run_id
    done = subprocess.run(
        [str(BIN / "queue-assets"), "status"],
        env=_clean_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"LAST MATERIALIZATIONS: Dagster instance at {home} (queue-assets dev's" in done.stdout
    line = next(line for line in done.stdout.splitlines() if line.startswith("queue_statistics"))
    assert run_id[:8] in line
    assert "RuntimeDirWarning" not in done.stderr


def test_init_writes_a_dotenv_that_dagster_reads_in_the_project_root(data_dir, settings, checkout_dotenv):
    """`dagster dev` in the project root needs DAGSTER_PG_URL; `init` puts it in `.env` beside the
    project's data folder, which Dagster's CLI loads from its working directory. Breaks when no `.env`
    is written (Dagster then fails with DagsterInvalidConfigError) or one Dagster cannot open an
    instance from; when `init` for a hub in a data folder of its own (a test's, the soak's) rewrites
    the checkout's `.env` (Dagster would load it over every other hub's environment run there); and
    when the CLI prints platformdirs' RuntimeDirWarning (no XDG_RUNTIME_DIR here)."""
    checkout_dotenv.unlink(missing_ok=True)
    elsewhere = data_dir.parent / "elsewhere"
    done = subprocess.run(
        [str(BIN / "queue-assets"), "init"],
        env=_clean_env(elsewhere),
        capture_output=True,
        text=True,
        timeout=300,
    )
    embedded.stop(elsewhere)
    assert done.returncode == 0, done.stderr
    assert "RuntimeDirWarning" not in done.stderr
    assert not checkout_dotenv.exists()
    root = data_dir.parent
    urls = embedded.ensure_running(data_dir)
    assert write_dotenv(root, settings, urls).startswith("wrote")
    text = (root / ".env").read_text()
    assert text.startswith(DOTENV_HEADER)
    values = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert values["DAGSTER_HOME"] == str(data_dir / "dagster_home")
    assert values["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://postgres@/dagster?host=")
    assert values["SHARED_QUEUE_DB_URL"].startswith("postgresql://postgres@/shared_queue?host=")
    dagster_home(settings)  # the Dagster home `.env` names, with the project's dagster.yaml
    info = subprocess.run(
        [str(BIN / "dagster"), "instance", "info"],
        env=_clean_env(),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert info.returncode == 0, info.stderr[-2000:]
    assert "PostgresRunStorage" in info.stdout
    (root / ".env").unlink()


def test_dotenv_is_never_written_over_someone_elses_and_removed_when_a_url_is_configured(settings):
    urls = {
        "dagster": "postgresql+psycopg2://postgres@/dagster?host=%2Fx",
        "shared_queue": "postgresql://x/y",
    }
    root = settings.data_dir.parent
    mine = root / ".env"
    mine.write_text("MY_SECRET=1\n")
    note = write_dotenv(root, settings, urls)
    assert mine.read_text() == "MY_SECRET=1\n" and "left alone" in note and "DAGSTER_PG_URL=" in note
    mine.unlink()
    write_dotenv(root, settings, urls)
    assert mine.read_text().startswith(DOTENV_HEADER)
    configured = Settings.from_env(
        {
            "SHARED_QUEUE_DB_URL": "postgresql://hub:pw@db/shared_queue",
            "QUEUE_ASSETS_DATA_DIR": str(settings.data_dir),
        }
    )
    assert "removed" in write_dotenv(root, configured, urls)
    assert not mine.exists()
    assert write_dotenv(root, configured, urls) is None and not mine.exists()


def test_the_cli_prints_no_runtime_dir_warning():
    """Breaks when importing the embedded server's wheel (or anything the CLI loads) lets platformdirs'
    RuntimeDirWarning through where XDG_RUNTIME_DIR is unset."""
    code = (
        "import tempfile, pathlib\nfrom queue_assets import embedded\n"
        "embedded._postgres_version(pathlib.Path(tempfile.mkdtemp()))\n"
    )
    for argv in ([str(BIN / "queue-assets"), "--help"], [sys.executable, "-W", "default", "-c", code]):
        done = subprocess.run(argv, env=_clean_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "RuntimeDirWarning" not in done.stderr and "XDG_RUNTIME_DIR" not in done.stderr


def test_leaving_dev_stops_the_server_it_started_and_leaves_one_it_did_not(tmp_path):
    """Breaks when `make demo` leaves the embedded PostgreSQL running after Ctrl-C without a word,
    or stops a server that ran before it."""
    s = Settings.from_env({"QUEUE_ASSETS_DATA_DIR": str(tmp_path)})
    embedded.ensure_running(tmp_path)
    try:
        note = after_dev(s, started_here=False)
        assert embedded.is_running(tmp_path)
        assert "still runs" in note and "queue-assets stop" in note
        assert after_dev(s, started_here=True).startswith("stopped the embedded PostgreSQL")
        assert not embedded.is_running(tmp_path)
    finally:
        embedded.stop(tmp_path)

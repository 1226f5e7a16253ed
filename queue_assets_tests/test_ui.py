"""The Dagster UI proven in a real browser (issue 4, item 8).

One hub for the whole module, as a person runs it: `queue-assets init` and `queue-assets dev
--no-demo` (embedded PostgreSQL in a data folder of its own; `dagster dev` with the project's
`dagster.yaml`/`workspace.yaml`: code server, webserver, daemon), demo traffic from the simulated
instances, the sensors ingesting it, and every other asset job launched through the GraphQL API
once its upstream assets have materialized. Then:

- GraphQL: every asset, asset check, sensor, schedule and job that `queue_assets.definitions.defs`
  declares is loaded (enumerated from the Definitions object when the test runs, so new
  definitions are covered without editing this file), the demo traffic was stored exactly once,
  every launched run succeeded, every materializable asset materialized and every check evaluated;
- Chromium (Debian's, headless, through playwright): the asset graph, an asset's materialization,
  the sensors, schedules, automation, checks and runs pages show what GraphQL says, and each page
  is saved to `docs/screenshots/` (described in docs/ui.md).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from queue_assets import simulate
from queue_assets.definitions import defs
from queue_assets.queues import INGEST_ASSET_FOR, INSTANCE_HEARTBEAT, LEARNED_PATTERNS, PATTERN_MESSAGES

from .ui.browser import chromium, dismiss_community_dialog, fresh_page, save, shown_name, visible_text
from .ui.declared import AssetPath, Declared, label
from .ui.graphql import LOCATION, DagsterGraphQL
from .ui.hub import Hub, start_hub
from .ui.lineage import LineageReport, ingest_totals, materialize_lineage, wait_for_ingest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1500)]

# Deadlines, generous: a run's Python start-up alone takes tens of seconds on a busy 2-core machine.
HUB_START_S = 300
INGEST_S = 300
LINEAGE_S = 600
DEMO = {"instances": 3, "rate": 20.0, "duration_s": 5.0}
# The asset whose materialization page is shown, and the one whose checks are shown, when declared.
SHOWN_ASSET = (INGEST_ASSET_FOR[PATTERN_MESSAGES],)
SHOWN_CHECKS_ASSET = ("queue_statistics",)
SHOWN_SENSOR = f"{PATTERN_MESSAGES}_sensor"
SHOWN_SCHEDULE = "queue_statistics_schedule"
CHECK_RESULTS = {"SUCCEEDED", "FAILED"}  # a check that ran to a verdict (FAILED is an alert, not a crash)
# Selectors on Dagster's own markup (CSS-module class prefixes of the pinned dagster-webserver 1.13):
SWITCH = 'label[class*="Checkbox_formatSwitch"] input'  # a sensor's or schedule's on/off switch


@dataclass
class UiHub:
    hub: Hub
    gql: DagsterGraphQL
    demo: simulate.SimStats

    def expected_stored(self) -> dict[AssetPath, int]:
        """What the ingest assets must have stored from the demo, per the simulator's own counts."""
        d = self.demo
        return {
            (INGEST_ASSET_FOR[PATTERN_MESSAGES],): d.patterns + d.analyses,
            (INGEST_ASSET_FOR[LEARNED_PATTERNS],): d.learned,
            (INGEST_ASSET_FOR[INSTANCE_HEARTBEAT],): d.heartbeats,
        }

    def expected_dead_lettered(self) -> dict[AssetPath, int]:
        return {
            (INGEST_ASSET_FOR[PATTERN_MESSAGES],): self.demo.invalid,
            (INGEST_ASSET_FOR[LEARNED_PATTERNS],): 0,
            (INGEST_ASSET_FOR[INSTANCE_HEARTBEAT],): 0,
        }


@dataclass
class Materialized:
    ui: UiHub
    ingested: dict[AssetPath, int]
    lineage: LineageReport


@pytest.fixture(scope="module")
def declared() -> Declared:
    return Declared.from_defs(defs)


_started = time.monotonic()


def log(message: str) -> None:
    """Progress with elapsed time (pytest shows it with -s, or for a failed test)."""
    print(f"[test_ui {time.monotonic() - _started:6.1f}s] {message}", flush=True)


@pytest.fixture(scope="module")
def ui_hub() -> Iterator[UiHub]:
    # Not pytest's tmp_path: other pytest processes on this machine reset /tmp/pytest-of-<user> to
    # mode 0700 and prune old base folders, which locks the embedded server's own user out of its
    # data folder (or deletes it) while the hub runs.
    data_dir = Path(tempfile.mkdtemp(prefix="qa-ui-"))
    hub = None
    try:
        hub = start_hub(data_dir, wait=False)
        log(f"hub starting on {hub.url} in {data_dir}")
        # Publish while Dagster starts: the sensors find the queues full.
        demo = simulate.run(hub.db_url, **DEMO)
        log(f"demo published: {demo}")
        hub.wait_until_serving(HUB_START_S)
        gql = DagsterGraphQL(hub.graphql_url)
        gql.wait_for_location(HUB_START_S)
        log("webserver serving, code location loaded")
        yield UiHub(hub, gql, demo)
    finally:
        if hub is not None:
            hub.stop()
            log("hub stopped")
        if not os.environ.get("QUEUE_ASSETS_UI_KEEP_DATA"):
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def materialized(ui_hub: UiHub, declared: Declared) -> Materialized:
    ingested = wait_for_ingest(ui_hub.gql, ui_hub.expected_stored(), INGEST_S)
    log(f"ingested (stored per asset): {ingested}")
    lineage = materialize_lineage(ui_hub.gql, declared, ui_hub.gql.loaded(), LINEAGE_S, log=log)
    log("lineage done")
    return Materialized(ui_hub, ingested, lineage)


@pytest.fixture(scope="module")
def browser(materialized: Materialized) -> Iterator[Browser]:
    """Chromium, opened once the lineage has materialized (so the screenshots show it), with
    Dagster's first-visit dialog dismissed."""
    ui = materialized.ui
    with chromium() as b:
        if ui.gql.query("{ shouldShowNux }")["shouldShowNux"]:
            with fresh_page(b, "community-dialog") as page:
                dismiss_community_dialog(page, ui.hub.url + "/asset-groups")
        yield b


def _diff(kind: str, declared: set, loaded: set) -> str:
    missing, extra = sorted(map(str, declared - loaded)), sorted(map(str, loaded - declared))
    return f"{kind}: declared but not loaded: {missing}; loaded but not declared: {extra}"


# -- GraphQL: the code location -----------------------------------------------------------------


def test_code_location_loads_without_error(ui_hub: UiHub):
    assert ui_hub.gql.location_status() == ("LOADED", None), ui_hub.hub.logs()


def test_every_declared_asset_and_check_is_loaded(ui_hub: UiHub, declared: Declared):
    loaded = ui_hub.gql.loaded()
    assert loaded.assets == declared.assets, _diff("assets", declared.assets, loaded.assets)
    assert loaded.materializable == declared.materializable, _diff(
        "materializable assets", declared.materializable, loaded.materializable
    )
    assert loaded.partitioned == declared.partitioned, _diff(
        "partitioned assets", declared.partitioned, loaded.partitioned
    )
    assert loaded.checks == declared.checks, _diff("asset checks", declared.checks, loaded.checks)


def test_every_declared_sensor_schedule_and_job_is_loaded_in_its_default_state(
    ui_hub: UiHub, declared: Declared
):
    loaded = ui_hub.gql.loaded()
    assert loaded.sensors == declared.sensor_status, _diff(
        "sensors", set(declared.sensor_status.items()), set(loaded.sensors.items())
    )
    assert loaded.schedules == declared.schedule_status, _diff(
        "schedules", set(declared.schedule_status.items()), set(loaded.schedules.items())
    )
    named = {j for j in loaded.jobs if not j.startswith("__")}
    assert named == declared.jobs, _diff("jobs", declared.jobs, named)


# -- GraphQL: the demo's materializations ---------------------------------------------------------


def test_sensor_launched_runs_store_the_demo_traffic_exactly_once(materialized: Materialized):
    ui = materialized.ui
    expected = ui.expected_stored()
    assert all(n > 0 for n in expected.values()), f"the demo published nothing to a queue: {ui.demo}"
    stored = ingest_totals(ui.gql, set(expected), "stored")
    dead = ingest_totals(ui.gql, set(expected), "dead_lettered")
    assert stored == expected, f"stored per ingest asset (sum over its materializations); demo: {ui.demo}"
    assert dead == ui.expected_dead_lettered(), f"dead-lettered per ingest asset; demo: {ui.demo}"


def test_every_launched_job_succeeds(materialized: Materialized, declared: Declared):
    report = materialized.lineage
    failed = [r for r in report.runs if r.status != "SUCCESS"]
    assert not failed and not report.blocked, report.describe() + "\n" + materialized.ui.hub.logs(20)
    loaded = materialized.ui.gql.loaded()
    asset_jobs = {j for j in declared.jobs - declared.sensor_jobs if loaded.job_assets.get(j)}
    # Every asset job was launched, or found its assets materialized already (by an automation sensor).
    launched = {r.job for r in report.runs} | set(report.skipped)
    assert asset_jobs <= launched <= asset_jobs | declared.sensor_jobs, report.describe()


def test_every_materializable_asset_has_a_materialization(materialized: Materialized, declared: Declared):
    gql = materialized.ui.gql
    never = sorted(label(k) for k in declared.materializable if not gql.materializations(k, limit=1))
    assert not never, f"never materialized: {never}\n{materialized.lineage.describe()}"


def test_every_asset_check_is_evaluated(materialized: Materialized, declared: Declared):
    gql = materialized.ui.gql
    outcomes = {
        (label(k), name): [e["status"] for e in gql.check_executions(k, name)]
        for k, name in sorted(declared.checks)
    }
    unevaluated = {c: s for c, s in outcomes.items() if not CHECK_RESULTS & set(s)}
    assert not unevaluated, f"checks without a SUCCEEDED/FAILED evaluation (statuses seen): {unevaluated}"


# -- Chromium: the pages a person looks at ----------------------------------------------------------


def test_asset_graph_shows_every_asset(materialized: Materialized, declared: Declared, browser: Browser):
    groups = Counter(set(declared.groups.values()))
    names = Counter(k[-1] for k in declared.assets)  # the sidebar and graph show a key's last part
    with fresh_page(browser, "asset-graph") as page:
        # Tall enough that the virtualized sidebar renders every row at once.
        page.set_viewport_size({"width": 1280, "height": max(800, 250 + 32 * (len(groups) + len(names)))})
        page.goto(materialized.ui.hub.url + "/asset-groups", wait_until="domcontentloaded")
        expect(visible_text(page, "Global asset lineage")).to_be_visible()
        sidebar_row = page.locator('[class*="AssetSidebarNode_itemContainer"]')
        group_rows = sidebar_row.filter(has=page.locator('[aria-label="asset_group"]'))
        expect(group_rows).to_have_count(len(groups))
        collapsed = group_rows.locator('[aria-label="arrow_drop_down"][style*="rotate(-90deg)"]')
        for _ in range(len(groups)):
            if collapsed.count():
                collapsed.first.click()
        titles = sidebar_row.locator('[class*="MiddleTruncate_container"]')
        expect(titles).to_have_count(len(groups) + len(declared.assets))
        assert Counter(titles.evaluate_all("els => els.map(e => e.title)")) == groups + names
        # The graph itself: expand every group (Alt+E, the UI's shortcut); one node per asset.
        page.keyboard.press("Alt+e")
        expect(page.locator('[class*="AssetNode_assetName"]')).to_have_count(len(declared.assets))
        # Every materializable node shows its status (green, or red/yellow for a failed check), not
        # the gray of "never materialized"; partitioned ones stay gray (one partition of many).
        gray = page.locator(
            '[class*="AssetNode_minimalAssetNodeBox"][class*="AssetNode_materializable"]'
            '[style*="--color-background-gray"]'
        )
        expect(gray).to_have_count(len(declared.partitioned & declared.materializable))
        save(page, "asset-graph.png")


def test_asset_page_shows_its_latest_materialization(
    materialized: Materialized, declared: Declared, browser: Browser
):
    key = SHOWN_ASSET if SHOWN_ASSET in declared.materializable else sorted(declared.materializable)[0]
    latest = materialized.ui.gql.materializations(key, limit=1)[0]
    with fresh_page(browser, "asset-page") as page:
        page.goto(f"{materialized.ui.hub.url}/assets/{label(key)}?view=events", wait_until="domcontentloaded")
        expect(
            page.get_by_text(f"Materialized in run {latest.run_id[:8]}").filter(visible=True).first
        ).to_be_visible()
        rows = page.locator("tr").filter(visible=True)
        for name, value in latest.ints.items():
            row = rows.filter(has=page.get_by_text(re.compile(f"^{re.escape(name)}$"))).first
            expect(row).to_contain_text(re.compile(rf"(^|\D)({value}|{value:,})(\D|$)"))
        save(page, f"asset-{'-'.join(key)}.png")


@pytest.mark.parametrize("kind", ["sensors", "schedules"])
def test_the_sensors_and_schedules_pages_list_every_one_declared(
    materialized: Materialized, declared: Declared, browser: Browser, kind: str
):
    with fresh_page(browser, kind) as page:
        page.goto(f"{materialized.ui.hub.url}/locations/{LOCATION}/{kind}", wait_until="domcontentloaded")
        for name in sorted(getattr(declared, kind)):
            expect(shown_name(page, name)).to_be_visible()
        save(page, f"{kind}.png")


def test_a_sensor_and_a_schedule_page_show_their_target_and_state(
    materialized: Materialized, declared: Declared, browser: Browser
):
    sensor = SHOWN_SENSOR if SHOWN_SENSOR in declared.sensors else min(declared.sensors)
    schedule = SHOWN_SCHEDULE if SHOWN_SCHEDULE in declared.schedules else min(declared.schedules)
    url = f"{materialized.ui.hub.url}/locations/{LOCATION}"
    with fresh_page(browser, "sensor-and-schedule") as page:
        page.goto(f"{url}/sensors/{sensor}", wait_until="domcontentloaded")
        expect(page).to_have_title(f"Sensors | {sensor}")
        expect(
            page.get_by_text(f"Automation/{sensor}").filter(visible=True).first
        ).to_be_visible()  # the heading
        for job in sorted(declared.sensor_jobs_of[sensor]):
            expect(shown_name(page, job)).to_be_visible()
        switch = page.locator(SWITCH).first  # the "Running" row's on/off switch
        expect(switch).to_be_checked(checked=declared.sensor_status[sensor] == "RUNNING")
        save(page, f"sensor-{sensor}.png")
        page.goto(f"{url}/schedules/{schedule}", wait_until="domcontentloaded")
        expect(page).to_have_title(f"Schedules | {schedule}")
        expect(page.get_by_text(f"Automation/{schedule}").filter(visible=True).first).to_be_visible()
        expect(shown_name(page, declared.schedule_job[schedule])).to_be_visible()
        switch = page.locator(SWITCH).first
        expect(switch).to_be_checked(checked=declared.schedule_status[schedule] == "RUNNING")
        expect(
            page.get_by_text(f"({declared.schedule_cron[schedule]})").filter(visible=True).first
        ).to_be_visible()
        save(page, f"schedule-{schedule}.png")


def test_automation_page_shows_every_sensor_and_schedule_switched_as_declared(
    materialized: Materialized, declared: Declared, browser: Browser
):
    statuses = {**declared.sensor_status, **declared.schedule_status}
    with fresh_page(browser, "automation") as page:
        # Dagster 1.13 redirects /overview/sensors and /overview/schedules here.
        page.goto(f"{materialized.ui.hub.url}/overview/sensors", wait_until="domcontentloaded")
        expect(page).to_have_url(re.compile(r"/automation"))
        for name in sorted(statuses):
            expect(shown_name(page, name)).to_be_visible()
        expect(page.locator(SWITCH)).to_have_count(len(statuses))
        expect(page.locator(f"{SWITCH}:checked")).to_have_count(
            sum(s == "RUNNING" for s in statuses.values())
        )
        save(page, "automation.png")


def test_checks_tab_shows_every_check_with_its_result(
    materialized: Materialized, declared: Declared, browser: Browser
):
    by_asset: dict[AssetPath, list[str]] = {}
    for key, name in declared.checks:
        by_asset.setdefault(key, []).append(name)
    shown = SHOWN_CHECKS_ASSET if SHOWN_CHECKS_ASSET in by_asset else min(by_asset, default=None)
    with fresh_page(browser, "checks") as page:
        for key in sorted(by_asset):
            page.goto(
                f"{materialized.ui.hub.url}/assets/{label(key)}?view=checks", wait_until="domcontentloaded"
            )
            expect(visible_text(page, f"Checks ({len(by_asset[key])})")).to_be_visible()
            for name in sorted(by_asset[key]):
                expect(shown_name(page, name)).to_be_visible()
            if key == shown:
                save(page, f"checks-{'-'.join(key)}.png")


def test_runs_page_lists_every_launched_run(materialized: Materialized, browser: Browser):
    with fresh_page(browser, "runs") as page:
        page.goto(f"{materialized.ui.hub.url}/runs", wait_until="domcontentloaded")
        for run in materialized.lineage.runs:
            expect(visible_text(page, run.run_id[:8])).to_be_visible()
        save(page, "runs.png")

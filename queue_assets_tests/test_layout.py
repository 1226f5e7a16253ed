"""The package's layering: no import cycle, and the producer SDK and the CLI's quick paths stay light.

These read the code (an `ast` walk of the imports) or import it in a clean interpreter; no database.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import queue_assets

PACKAGE_DIR = Path(queue_assets.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom, modules: set[str]) -> list[str]:
    """The `queue_assets` modules an ImportFrom loads: `from pkg import mod` names `pkg.mod`,
    `from mod import name` names `mod`."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
    return submodules if len(submodules) == len(node.names) else [target, *submodules]


def import_graph(*, lazy: bool = False) -> dict[str, set[str]]:
    """Imports between `queue_assets` modules: module-level ones, plus those inside functions if `lazy`.

    `if TYPE_CHECKING:` blocks are skipped: they never run.
    """
    files = {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if not lazy and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    targets += [a.name for a in sub.names]
                elif isinstance(sub, ast.ImportFrom):
                    targets += _resolve(module, path.name == "__init__.py", sub, set(files))
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_finds_a_cycle_when_there_is_one():
    """The checker itself: a made-up cycle is reported (otherwise the next test proves nothing)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_queue_assets_modules():
    """Module-level imports only. Breaks when a module-level import closes a loop, e.g. `security`
    importing `resolve_urls` from the CLI at the top while the CLI imports `security`."""
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_no_import_cycle_even_through_function_level_imports():
    """Breaks on the old layout: `cli` imported `cli_ops` and `security`, which imported
    `_fail`/`resolve_urls` back from `cli` inside their functions."""
    graph = import_graph(lazy=True)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cli_is_the_top_layer_nothing_else_imports_it():
    """Breaks when a module outside `queue_assets.cli` imports from it, even inside a function
    (as `security` and `operations/cli_ops` did for `_fail` and `resolve_urls`)."""
    graph = import_graph(lazy=True)
    importers = sorted(
        m
        for m, deps in graph.items()
        if not m.startswith("queue_assets.cli") and any(d.startswith("queue_assets.cli") for d in deps)
    )
    assert importers == []


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    return {name.split(".")[0] for name in out}


def test_importing_the_sdk_loads_neither_dagster_nor_pandas():
    """Breaks when anything `queue_assets.sdk` imports at module level reaches Dagster or pandas,
    e.g. `make_pgmq` back in `queue_assets.resources` (which defines the Dagster resources)."""
    loaded = _loaded_after("import queue_assets.sdk")
    assert "queue_assets" in loaded
    assert "dagster" not in loaded
    assert "pandas" not in loaded
    assert "openai" not in loaded


def test_the_openai_client_is_imported_only_when_its_provider_is_used():
    """Breaks when a module-level import of `openai` (and its HTTP stack) sneaks into the code
    location, the enrichment core or the CLI: only building an `OpenAITransport` may load it."""
    loaded = _loaded_after(
        "import queue_assets.definitions, queue_assets.patterns.enrichment, queue_assets.cli"
    )
    assert "dagster" in loaded and "openai" not in loaded
    built = _loaded_after(
        "from queue_assets.patterns.providers import OpenAISettings, OpenAITransport\n"
        "OpenAITransport(OpenAISettings.from_env({'QUEUE_ASSETS_LLM_MODEL': 'm'}))"
    )
    assert "openai" in built  # the probe sees the import when it happens


CODE_LOCATION_DEFERRED = {"pandas", "pgmq", "sqlalchemy", "git", "requests"}
"""What loading the code location leaves to the runs that use it: pandas (~1.5 s; the aggregation
table, the archive readers), the pgmq client with SQLAlchemy (a run's `shared_queue.pgmq()`),
GitPython and requests (distribution and export). Every run launch imports the code location."""


def test_loading_the_code_location_defers_pandas_pgmq_git_and_requests():
    """Breaks when a module-level import of pandas, `pgmq`, GitPython or requests comes back into
    anything `queue_assets.definitions` imports (e.g. `import pandas as pd` at the top of
    `aggregation/assets.py`, or `import pgmq` for a type in `resources.py`)."""
    loaded = _loaded_after("import queue_assets.definitions")
    assert "dagster" in loaded
    assert not loaded & CODE_LOCATION_DEFERRED, loaded & CODE_LOCATION_DEFERRED
    used = _loaded_after(
        "import queue_assets.definitions\n"
        "from queue_assets.operations.archive import empty_frame\n"
        "from queue_assets.git.repo import _push_progress\n"
        "empty_frame({'queue': 'string'})\n"
        "_push_progress()\n"
    )
    assert {"pandas", "git"} <= used  # the probe sees the imports when a run needs them


def test_the_cli_loads_neither_dagster_nor_pandas_nor_git_until_a_command_needs_them():
    """Breaks when `queue_assets.cli` (what `queue-assets --help` and `status` import) pulls in
    Dagster, pandas, GitPython or the pgmq client (SQLAlchemy) at module level."""
    loaded = _loaded_after("import queue_assets.cli")
    assert not loaded & {"dagster", "pandas", "git", "sqlalchemy", "pgmq"}, loaded & {
        "dagster",
        "pandas",
        "git",
        "sqlalchemy",
        "pgmq",
    }


def test_queue_assets_status_builds_no_pydantic_model_and_loads_no_dagster(db_url, monkeypatch):
    """Breaks when `queue-assets status` reaches the pydantic contracts (~0.3 s of start-up, e.g.
    through `patterns.catalogue` or `patterns.enrichment`) or Dagster: it reads plain SQL only."""
    monkeypatch.setenv("SHARED_QUEUE_DB_URL", db_url)
    loaded = _loaded_after("from queue_assets import cli\nassert cli.main(['status', '--no-dagster']) == 0")
    assert "psycopg" in loaded  # it did run, against the database
    assert not loaded & {"pydantic", "dagster", "pandas", "sqlalchemy"}, loaded & {
        "pydantic",
        "dagster",
        "pandas",
        "sqlalchemy",
    }


# Who may read the environment: the settings modules (`from_env`: the hub's, the export's, GitHub's and
# the openai provider's), the code location's entry point,
# the CLI (the top layer, like the entry point), and `operations/status.py`, which reads Dagster's own
# DAGSTER_HOME and the `{env: VAR}` references of a dagster.yaml for `queue-assets status`.
ENVIRONMENT_READERS = {
    "queue_assets.settings",
    "queue_assets.export.settings",
    "queue_assets.git.github",
    "queue_assets.patterns.llm_settings",
    "queue_assets.definitions",
    "queue_assets.operations.status",
}


def _reads_environment(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(a.name in ("environ", "getenv") for a in node.names):
                return True
    return False


def _calls_from_env(tree: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "from_env"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "Settings"
        for node in ast.walk(tree)
    )


def test_only_the_settings_the_entry_point_and_the_cli_read_the_environment():
    """Settings are read in one place and passed down. Breaks when a module below reads `os.environ`
    itself, as `demo.py`, `operations/thresholds.py` and `git/resources.py` did."""
    readers = set()
    for path in PACKAGE_DIR.rglob("*.py"):
        module = _module_name(path)
        if _reads_environment(ast.parse(path.read_text(), filename=str(path))):
            readers.add(module)
    assert {m for m in readers if not m.startswith("queue_assets.cli")} <= ENVIRONMENT_READERS, readers


def test_the_hub_settings_are_built_only_where_a_load_or_a_run_starts():
    """`Settings.from_env` runs in `settings.py` (the code location's settings), in the shared_queue
    resource (a run's settings, once) and in the CLI. Breaks when code deep inside builds its own,
    as `ingest/core.py`, `fanout.py`, `export/core.py` and `retries.py` did."""
    builders = {
        _module_name(path)
        for path in PACKAGE_DIR.rglob("*.py")
        if _calls_from_env(ast.parse(path.read_text(), filename=str(path)))
    }
    assert {m for m in builders if not m.startswith("queue_assets.cli")} == {
        "queue_assets.settings",
        "queue_assets.resources",
    }, builders


def test_the_cli_loads_neither_psycopg_nor_pydantic_until_a_command_needs_them():
    """Breaks when `queue_assets.cli` (all `queue-assets --help` imports) pulls in psycopg (0.3 s of
    a 0.5 s start on this machine) or pydantic at module level, e.g. `bootstrap` at the top of
    `cli/app.py`, the operations modules at the top of `cli/ops.py`, or `patterns.canonical` (the
    contracts) for the `patterns` command's choices."""
    loaded = _loaded_after("import queue_assets.cli")
    assert not loaded & {"psycopg", "psycopg_binary", "pydantic", "pydantic_core"}, loaded & {
        "psycopg",
        "psycopg_binary",
        "pydantic",
        "pydantic_core",
    }

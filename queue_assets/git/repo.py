"""Git helpers shared by pattern distribution, template distribution and the learned-pattern export.

Plain Python on GitPython, no Dagster. What lives here:

- `open_work_copy(url, work_dir)`: a locked clone of a remote (any Git URL or local path), fetched
  fresh, with a fixed committer identity; returns a `WorkCopy`;
- `WorkCopy.checkout_branch` / `write_files` / `commit_if_changed` / `push` / `changed_files` /
  `remote_head`: build a branch from the remote's state, write a set of files (only inside a
  folder, never outside the work tree), commit only when the content changed, push and CHECK the
  result (GitPython does not raise on a rejected push; `GitPushRejected` carries the remote's words);
- `ensure_embedded_templates_remote(data_dir)`: the local bare `templates_data` remote with sample
  templates that a new machine gets from `queue-assets init`;
- `split_credentials`, `validate_remote_url`: credentials never reach a command line or
  `.git/config`; every error text goes through `redact.redact` with the remote's secrets.

Credentials: a user:token in an https URL is taken out of the URL before git sees it and handed to
git as an `Authorization` header through `GIT_CONFIG_*` environment variables, so the work copy's
`.git/config` and every git command line hold only the clean URL.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from ..redact import redact

if TYPE_CHECKING:
    import git

# GitPython (0.2-0.5 s to import) is imported by the functions that run git, not with the module:
# the code location imports this module, and most runs never touch Git.

COMMITTER_NAME = "queue_assets"
COMMITTER_EMAIL = "queue-assets@localhost"
TEMPLATES_REMOTE_NAME = "templates_data.git"
SHA_RE = re.compile(r"^[0-9a-f]{4,64}$")


def _push_failed(flags: int) -> bool:
    """A push result's flags say the remote did not take the ref."""
    import git

    failed = (
        git.PushInfo.ERROR
        | git.PushInfo.REJECTED
        | git.PushInfo.REMOTE_REJECTED
        | git.PushInfo.REMOTE_FAILURE
    )
    return bool(flags & failed)


class GitError(RuntimeError):
    """A Git operation failed; the message is safe to show (no credentials)."""


class GitPushRejected(GitError):
    """The remote refused a push. `remote_messages` holds what the remote printed (its hooks' words)."""

    def __init__(self, message: str, *, branch: str, reasons: list[str], remote_messages: list[str]):
        super().__init__(message)
        self.branch = branch
        self.reasons = reasons
        self.remote_messages = remote_messages


class UnsafePathError(ValueError):
    """A file path would land outside the folder it must stay in."""


@dataclass(frozen=True)
class GitAuth:
    """HTTP credentials for a remote; `repr` never shows the secret."""

    username: str
    secret: str = field(repr=False)

    def header(self) -> str:
        raw = f"{self.username}:{self.secret}".encode()
        return "Authorization: Basic " + base64.b64encode(raw).decode()

    def secrets(self) -> tuple[str, ...]:
        raw = f"{self.username}:{self.secret}".encode()
        return tuple(s for s in (self.secret, base64.b64encode(raw).decode()) if s)


def split_credentials(url: str) -> tuple[str, GitAuth | None]:
    """(URL without user-info, credentials) for http(s) URLs; other URLs are returned as they are.

    `ssh://git@host/...` keeps its user name: that is an account name, not a secret.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, secret = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    if not secret:
        # A bare token as the user name (`https://TOKEN@github.com/...`) is how some hosts take it.
        return clean, GitAuth(username="x-access-token", secret=unquote(user))
    return clean, GitAuth(username=unquote(user), secret=unquote(secret))


def validate_remote_url(url: str, variable: str = "TEMPLATES_REPO_URL") -> str:
    """Return `url` if Git may safely be pointed at it, else raise ValueError naming `variable`.

    Accepted: http(s)://, ssh://, git://, file:// URLs, scp-like `user@host:path`, and local paths.
    Refused: options in disguise (a leading `-`), `ext::`-style transports (they run commands),
    whitespace or control characters.
    """
    shown = redact(url)[:120]
    if not url or not url.strip():
        raise ValueError(f"{variable} is empty; expected a Git URL or a path to a repository")
    if url != url.strip() or any(ord(c) < 32 or c == "\x7f" for c in url):
        raise ValueError(
            f"{variable}={shown!r}: must not start or end with whitespace or hold control characters"
        )
    if url.startswith("-"):
        raise ValueError(f"{variable}={shown!r}: must not start with '-' (git would read it as an option)")
    if "::" in url:
        raise ValueError(
            f"{variable}={shown!r}: transport::address forms (e.g. ext::) are refused; "
            "use an http(s)://, ssh://, git://, file:// URL or a path"
        )
    parts = urlsplit(url)
    if parts.scheme and "://" in url:
        if parts.scheme not in ("http", "https", "ssh", "git", "file"):
            raise ValueError(
                f"{variable}={shown!r}: scheme {parts.scheme!r} is not supported; "
                "use http(s)://, ssh://, git://, file:// or a path"
            )
        if parts.scheme != "file" and not parts.hostname:
            raise ValueError(f"{variable}={shown!r}: the URL names no host")
    return url  # scp-like `user@host:path` or a local path; git says clearly if it is not a repository


def _git_env(auth: GitAuth | None) -> dict[str, str]:
    env = {
        "GIT_TERMINAL_PROMPT": "0",  # never hang waiting for a password nobody will type
        "GIT_AUTHOR_NAME": COMMITTER_NAME,
        "GIT_AUTHOR_EMAIL": COMMITTER_EMAIL,
        "GIT_COMMITTER_NAME": COMMITTER_NAME,
        "GIT_COMMITTER_EMAIL": COMMITTER_EMAIL,
    }
    if auth is not None:
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": auth.header(),
            }
        )
    return env


def _push_progress() -> tuple[git.RemoteProgress, list[str]]:
    """A progress handler for a push, and the list that collects the lines it drops (what the
    remote printed that is not progress). Defined per push: its base class is GitPython's."""
    import git

    dropped: list[str] = []

    class _Progress(git.RemoteProgress):
        def line_dropped(self, line: str) -> None:
            dropped.append(line)

    return _Progress(), dropped


def _remote_lines(progress: git.RemoteProgress, dropped: list[str]) -> list[str]:
    out = []
    for line in [*progress.other_lines, *progress.error_lines, *dropped]:
        line = line.strip()
        if line.startswith("remote:"):
            text = line[len("remote:") :].strip()
            if text and not re.match(r"^(Resolving deltas|Counting objects|Compressing objects)", text):
                out.append(text)
        elif line.startswith(("error:", "fatal:", "hint:")) and line not in out:
            out.append(line)
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class PushResult:
    branch: str
    sha: str
    updated: bool
    """False when the remote already had this commit (nothing was sent)."""


class WorkCopy:
    """A clone of one remote, used by one process at a time (see `open_work_copy`)."""

    def __init__(self, repo: git.Repo, url: str, auth: GitAuth | None):
        self.repo = repo
        self.url = url
        self._auth = auth
        self._secrets = auth.secrets() if auth else ()

    @property
    def path(self) -> Path:
        tree = self.repo.working_tree_dir
        if tree is None:  # a work copy is a clone with a checkout, never a bare repository
            raise GitError(
                redact(
                    f"the work copy of {redact(self.url)} at {self.repo.git_dir} has no working tree",
                    self._secrets,
                )
            )
        return Path(tree)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        import git

        problem = None
        try:
            yield
        except git.GitCommandError as exc:
            stderr = (exc.stderr or "").strip().replace("stderr: ", "").strip("'\" \n")
            problem = f"{what} failed: {stderr or exc.status}"
        # The message is built outside the except block so the original exception (whose text
        # holds the command line) is not chained into what Dagster shows.
        if problem is not None:
            raise GitError(redact(problem, self._secrets))

    def fetch(self) -> None:
        with self._errors(f"git fetch from {redact(self.url)}"):
            self.repo.git.fetch("origin", "--prune", "--no-tags", "--quiet")

    def remote_head(self, branch: str) -> str | None:
        """The commit the remote's `branch` points at (as of the last fetch), or None."""
        import git

        ref = f"refs/remotes/origin/{branch}"
        try:
            return self.repo.git.rev_parse("--verify", "--quiet", ref + "^{commit}")
        except git.GitCommandError:
            return None

    def head(self) -> str | None:
        import git

        try:
            return self.repo.git.rev_parse("--verify", "--quiet", "HEAD^{commit}")
        except git.GitCommandError:
            return None

    def checkout_branch(self, branch: str, base: str | None = None) -> str:
        """Make the work tree exactly the remote's `branch`, or a new `branch` from the remote's `base`.

        With `base=None` a branch the remote lacks starts empty (an orphan), which is how the first
        commit to an empty repository is made. Leftovers of an earlier failed run are discarded.
        Returns how the branch was started: "existing", "from <base>" or "orphan".
        """
        _check_branch_name(branch)
        start, how = self.remote_head(branch), "existing"
        if start is None and base is not None:
            _check_branch_name(base)
            start, how = self.remote_head(base), f"from {base}"
            if start is None:
                raise GitError(
                    f"the remote {redact(self.url)} has no branch {base!r} to start {branch!r} from; "
                    "push a first commit to it (or set the base branch setting to one that exists)"
                )
        with self._errors(f"checking out {branch!r}"):
            if start is None:
                self.repo.git.checkout("--orphan", branch)
                self.repo.git.rm("-r", "-f", "-q", "--cached", "--ignore-unmatch", ".")
                how = "orphan"
            else:
                self.repo.git.checkout("-f", "-B", branch, start)
                self.repo.git.reset("--hard", "-q", start)
            self.repo.git.clean("-f", "-f", "-d", "-x", "-q")
        return how

    def write_files(
        self,
        files: Iterable[tuple[str, str | bytes]] | Mapping[str, str | bytes],
        *,
        folder: str,
        prune: bool = True,
    ) -> list[str]:
        """Write files (paths relative to `folder`) into the work tree; return the paths written.

        Every path must stay inside `folder` (checked on the text and on the disk: see `safe_path`), so names
        such as `../x`, `/etc/passwd` or `..\\x` raise `UnsafePathError` and nothing is written
        outside. With `prune`, files in `folder` that were not written now are removed, so the
        folder ends up holding exactly this set. Unchanged files are left untouched.
        """
        root = self.path.resolve()
        base = safe_path(root, folder)
        if base.is_symlink():
            raise UnsafePathError(
                f"folder {folder!r} is a symlink in the repository; refusing to write through it"
            )
        items = files.items() if isinstance(files, Mapping) else files
        written: set[Path] = set()
        names: list[str] = []
        for rel, content in items:
            target = safe_path(base, rel)
            if target in written:
                raise UnsafePathError(f"file {rel!r} is written twice in one set; names must be unique")
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()
            if not (target.is_file() and target.read_bytes() == data):
                target.write_bytes(data)
            written.add(target)
            names.append(target.relative_to(root).as_posix())
        if prune and base.is_dir():
            for dirpath, dirnames, filenames in os.walk(base, topdown=False, followlinks=False):
                here = Path(dirpath)
                for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
                    if here / name not in written:
                        (here / name).unlink()
                if here != base and not any(here.iterdir()):
                    here.rmdir()
        return names

    def commit_if_changed(self, message: str, paths: Iterable[str] = (".",)) -> str | None:
        """Stage `paths` and commit when the staged tree differs from HEAD. Returns the new sha or None."""
        import git

        with self._errors("staging files"):
            self.repo.git.add("-A", "--", *paths)
        has_head = self.head() is not None
        if has_head:
            try:
                self.repo.git.diff("--cached", "--quiet", "HEAD")
                return None  # same tree as HEAD: nothing to commit
            except git.GitCommandError as exc:
                if exc.status != 1:
                    raise GitError(
                        redact(f"comparing the index with HEAD failed: {exc.stderr}", self._secrets)
                    ) from None
        elif not self.repo.git.ls_files():
            return None
        with self._errors("git commit"):
            self.repo.git.commit("--no-verify", "-q", "-m", message)
        return self.head()

    def push(self, branch: str) -> PushResult:
        """Push `branch` to the same name on the remote (fast-forward only) and check the outcome.

        Raises `GitPushRejected` with the remote's reasons and messages when any ref was refused.
        """
        import git

        _check_branch_name(branch)
        sha = self.head()
        if sha is None:
            raise GitError(f"nothing to push: branch {branch!r} has no commit")
        progress, dropped = _push_progress()
        refspec = f"refs/heads/{branch}:refs/heads/{branch}"
        problem = None
        infos = None
        try:
            infos = self.repo.remote("origin").push(refspec, progress=progress)
        except git.GitCommandError as exc:
            problem = (exc.stderr or str(exc.status)).strip().replace("stderr: ", "").strip("'\" \n")
        messages = [redact(m, self._secrets) for m in _remote_lines(progress, dropped)]
        if problem is not None or not infos:
            raise GitPushRejected(
                redact(
                    f"push of {branch!r} to {redact(self.url)} failed: "
                    + (problem or "git reported no result")
                    + _tail(messages),
                    self._secrets,
                ),
                branch=branch,
                reasons=[redact(problem or "no result", self._secrets)],
                remote_messages=messages,
            )
        failed = [i for i in infos if _push_failed(i.flags)]
        if failed or infos.error is not None:
            reasons = [redact(i.summary.strip(), self._secrets) for i in failed] or [
                "git exited with an error"
            ]
            raise GitPushRejected(
                f"the remote {redact(self.url)} rejected the push of {branch!r}: "
                + "; ".join(reasons)
                + _tail(messages),
                branch=branch,
                reasons=reasons,
                remote_messages=messages,
            )
        updated = not all(i.flags & git.PushInfo.UP_TO_DATE for i in infos)
        with contextlib.suppress(GitError):
            self.fetch()  # so remote_head() reflects what was just pushed
        return PushResult(branch=branch, sha=sha, updated=updated)

    def changed_files(self, old: str | None, new: str) -> list[str]:
        """Paths that differ between commits `old` and `new` (all files of `new` when `old` is None)."""
        new = self._commit(new)
        with self._errors("listing changed files"):
            if old is None:
                out = self.repo.git.ls_tree("-r", "-z", "--name-only", new)
            else:
                out = self.repo.git.diff("-z", "--name-only", "--no-renames", self._commit(old), new)
        return sorted(p for p in out.split("\0") if p)

    def _commit(self, sha: str) -> str:
        import git

        if not isinstance(sha, str) or not SHA_RE.match(sha):
            raise GitError(f"{sha!r} is not a commit id (expected 4-64 hexadecimal digits)")
        try:
            return self.repo.git.rev_parse("--verify", "--quiet", sha + "^{commit}")
        except git.GitCommandError:
            raise GitError(
                f"commit {sha} is not in {redact(self.url)} (was the history rewritten?)"
            ) from None


def _tail(messages: list[str]) -> str:
    return (". The remote said: " + " | ".join(messages)) if messages else ""


_BRANCH_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/\-]+(?<![./])$")


def _check_branch_name(branch: str) -> None:
    if not isinstance(branch, str) or not _BRANCH_RE.match(branch) or branch.endswith(".lock"):
        raise GitError(f"branch name {branch!r} is not allowed (letters, digits, '.', '_', '-', '/')")


def safe_path(root: Path, rel: str) -> Path:
    """`root / rel`, refusing anything that could land outside `root` or inside a `.git` folder.

    Checked on the text (no absolute paths, no `..`, no NUL, backslash or control characters) and
    on the disk: no folder along the way may be a symlink, so a link planted in the repository
    cannot redirect a write. A symlink as the final component is replaced, never followed.
    """
    if not isinstance(rel, str) or not rel:
        raise UnsafePathError(f"file name {rel!r} is empty or not text")
    if "\0" in rel or "\\" in rel or any(ord(c) < 32 or c == "\x7f" for c in rel):
        raise UnsafePathError(f"file name {rel[:80]!r} holds a NUL, backslash or control character")
    pure = PurePosixPath(rel)
    if pure.is_absolute():
        raise UnsafePathError(f"file name {rel[:80]!r} is absolute; it must be relative to its folder")
    for part in pure.parts:
        if part in ("", ".", "..") or part.lower() == ".git":
            raise UnsafePathError(f"file name {rel[:80]!r} has a {part!r} component")
    root = Path(root).resolve()
    target = root.joinpath(*pure.parts)
    if target.parent.resolve() != target.parent:
        raise UnsafePathError(f"file name {rel[:80]!r} passes through a symlinked folder inside {root}")
    if not target.is_relative_to(root) or target == root:
        raise UnsafePathError(f"file name {rel[:80]!r} resolves outside its folder {root}")
    return target


@contextlib.contextmanager
def _locked(lock_path: Path, timeout_s: float) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise GitError(
                        f"another process has held {lock_path} for more than {timeout_s:.0f}s; "
                        "is a run stuck? (the lock is released when that process exits)"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def open_work_copy(
    url: str, work_dir: Path, *, auth: GitAuth | None = None, lock_timeout_s: float = 600.0
) -> Iterator[WorkCopy]:
    """A fresh, locked work copy of remote `url` in `work_dir` (cloned the first time, then fetched).

    Credentials inside `url` are split out (see `split_credentials`); `auth` overrides them. The
    lock (a file beside `work_dir`) keeps two runs on this machine from sharing the work tree.
    """
    validate_remote_url(url)
    clean, url_auth = split_credentials(url)
    auth = auth or url_auth
    secrets = auth.secrets() if auth else ()
    work_dir = Path(work_dir)
    env = _git_env(auth)
    with _locked(work_dir.with_name(work_dir.name + ".lock"), lock_timeout_s):
        repo = _open_or_clone(clean, work_dir, env, secrets)
        repo.git.update_environment(**env)
        wc = WorkCopy(repo, clean, auth)
        wc.fetch()
        try:
            yield wc
        finally:
            repo.close()


def _open_or_clone(url: str, work_dir: Path, env: dict[str, str], secrets: tuple[str, ...]) -> git.Repo:
    import git

    if (work_dir / ".git").is_dir():
        try:
            repo = git.Repo(work_dir)
            origin = repo.remote("origin")
            if origin.url != url:
                # TEMPLATES_REPO_URL changed: this copy belongs to another remote; start over.
                repo.close()
                shutil.rmtree(work_dir)
            else:
                return repo
        except (git.InvalidGitRepositoryError, ValueError):
            shutil.rmtree(work_dir)  # a damaged copy is only a cache of the remote
    elif work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.parent.mkdir(parents=True, exist_ok=True)
    problem = None
    try:
        repo = git.Repo.clone_from(url, work_dir, env=env, multi_options=["--no-tags", "--quiet"])
    except git.GitCommandError as exc:
        stderr = (exc.stderr or "").strip().replace("stderr: ", "").strip("'\" \n")
        problem = f"cloning {url} failed: {stderr or exc.status}"
    if problem is not None:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise GitError(redact(problem, secrets))
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", COMMITTER_NAME)
        cfg.set_value("user", "email", COMMITTER_EMAIL)
        cfg.set_value("core", "autocrlf", "false")  # bytes in the export are the bytes in Git
    return repo


# --- the embedded templates_data remote -------------------------------------------------------

SAMPLE_TEMPLATES: dict[str, str] = {
    "README.md": (
        "# templates_data\n\n"
        "Templates shared by the fleet's instances. This repository was created by\n"
        "`queue-assets init` as the embedded default remote (set `TEMPLATES_REPO_URL` to use your own).\n\n"
        "- `templates/` — code templates, one folder per language;\n"
        "- `patterns/` — aggregated patterns, committed hourly by the hub's pattern distribution;\n"
        "- `learned_patterns/` — learned artifacts, proposed daily on `feature/learned-patterns-YYYYMMDD`.\n"
    ),
    "templates/elixir/genserver_cache.ex.eex": (
        "defmodule <%= @module %>.Cache do\n"
        '  @moduledoc "A GenServer-backed cache with a time-to-live per entry."\n'
        "  use GenServer\n\n"
        "  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)\n"
        "  def get(key), do: GenServer.call(__MODULE__, {:get, key})\n"
        "  def put(key, value, ttl_ms \\\\ <%= @ttl_ms %>), do: GenServer.cast(__MODULE__, {:put, key, value, ttl_ms})\n\n"
        "  @impl true\n"
        "  def init(_opts), do: {:ok, %{}}\n\n"
        "  @impl true\n"
        "  def handle_call({:get, key}, _from, state) do\n"
        "    now = System.monotonic_time(:millisecond)\n"
        "    case Map.get(state, key) do\n"
        "      {value, expires} when expires > now -> {:reply, {:ok, value}, state}\n"
        "      _ -> {:reply, :miss, Map.delete(state, key)}\n"
        "    end\n"
        "  end\n\n"
        "  @impl true\n"
        "  def handle_cast({:put, key, value, ttl_ms}, state) do\n"
        "    {:noreply, Map.put(state, key, {value, System.monotonic_time(:millisecond) + ttl_ms})}\n"
        "  end\n"
        "end\n"
    ),
    "templates/rust/axum_service.rs": (
        "//! A minimal axum service with a health route.\n"
        "use axum::{routing::get, Router};\n\n"
        "#[tokio::main]\n"
        "async fn main() {\n"
        '    let app = Router::new().route("/health", get(|| async { "ok" }));\n'
        '    let listener = tokio::net::TcpListener::bind("0.0.0.0:{{port}}").await.unwrap();\n'
        "    axum::serve(listener, app).await.unwrap();\n"
        "}\n"
    ),
}


def embedded_templates_path(data_dir: Path) -> Path:
    return Path(data_dir) / "git" / TEMPLATES_REMOTE_NAME


def ensure_embedded_templates_remote(data_dir: Path) -> str:
    """Create (once) the local bare `templates_data` remote with sample templates on `main`.

    Returns its path, usable as `TEMPLATES_REPO_URL`. Safe to call any number of times and from
    several processes at once: an existing remote with a `main` branch is left as it is.
    """
    import git

    path = embedded_templates_path(data_dir).resolve()
    with _locked(path.with_name(path.name + ".lock"), 120.0):
        if path.is_dir():
            try:
                bare = git.Repo(path)
                if bare.bare and _has_branch(bare, "main"):
                    bare.close()
                    return str(path)
                bare.close()
            except git.InvalidGitRepositoryError:
                pass
        if not (path / "HEAD").exists():
            if path.exists():
                shutil.rmtree(path)
            git.Repo.init(path, bare=True, initial_branch="main").close()
        with tempfile.TemporaryDirectory(prefix="templates_seed_") as tmp:
            work = git.Repo.init(tmp, initial_branch="main")
            work.git.update_environment(**_git_env(None))
            for rel, text in SAMPLE_TEMPLATES.items():
                target = safe_path(Path(tmp), rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            work.git.add("-A")
            work.git.commit("--no-verify", "-q", "-m", "Sample templates (created by queue-assets init)")
            work.create_remote("origin", str(path))
            infos = work.remote("origin").push("refs/heads/main:refs/heads/main")
            if not infos or any(_push_failed(i.flags) for i in infos):
                raise GitError(f"could not seed the embedded templates remote at {path}")
            work.close()
    return str(path)


def _has_branch(repo: git.Repo, branch: str) -> bool:
    import git

    try:
        repo.git.rev_parse("--verify", "--quiet", f"refs/heads/{branch}")
        return True
    except git.GitCommandError:
        return False

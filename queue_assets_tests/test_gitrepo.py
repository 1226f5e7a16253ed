"""Git helpers on real repositories: bare remotes in tmp_path, real pushes, real hooks."""

from __future__ import annotations

import base64
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import git
import pytest

from queue_assets.git import repo as gitrepo
from queue_assets.git.repo import (
    GitError,
    GitPushRejected,
    UnsafePathError,
    ensure_embedded_templates_remote,
    open_work_copy,
    safe_path,
    split_credentials,
    validate_remote_url,
)
from queue_assets.redact import redact

HOOK_MESSAGE = "policy: the templates repository is frozen for review"


@pytest.fixture
def remote(tmp_path) -> str:
    return ensure_embedded_templates_remote(tmp_path / "data")


def _branches(remote: str) -> dict[str, str]:
    out = subprocess.run(
        ["git", "-C", remote, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split() for line in out.splitlines())


def _reject_pushes(remote: str) -> Path:
    hook = Path(remote) / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho '{HOOK_MESSAGE}' >&2\nexit 1\n")
    hook.chmod(0o755)
    return hook


def test_embedded_remote_is_created_once_with_sample_templates_on_main(tmp_path):
    first = ensure_embedded_templates_remote(tmp_path / "data")
    heads = _branches(first)
    again = ensure_embedded_templates_remote(tmp_path / "data")
    assert again == first
    assert _branches(first) == heads  # untouched by the second call
    assert list(heads) == ["main"]
    bare = git.Repo(first)
    assert bare.bare
    files = sorted(bare.git.ls_tree("-r", "--name-only", "main").splitlines())
    assert files == ["README.md", "templates/elixir/genserver_cache.ex.eex", "templates/rust/axum_service.rs"]
    assert int(bare.git.rev_list("--count", "main")) == 1


def test_commit_is_made_only_when_the_content_changed(remote, tmp_path):
    with open_work_copy(remote, tmp_path / "work") as wc:
        wc.checkout_branch("feature/x", base="main")
        wc.write_files({"a.json": "1\n"}, folder="out")
        first = wc.commit_if_changed("first")
        wc.write_files({"a.json": "1\n"}, folder="out")
        second = wc.commit_if_changed("second")
        wc.write_files({"a.json": "2\n"}, folder="out")
        third = wc.commit_if_changed("third")
        assert first is not None and second is None and third is not None and third != first
        assert int(wc.repo.git.rev_list("--count", "main..feature/x")) == 2


def test_write_files_with_prune_leaves_exactly_the_given_set_in_the_folder(remote, tmp_path):
    with open_work_copy(remote, tmp_path / "work") as wc:
        wc.checkout_branch("feature/x", base="main")
        wc.write_files({"a.json": "a", "sub/b.json": "b"}, folder="out")
        wc.write_files({"c.json": "c"}, folder="out")
        files = sorted(p.relative_to(wc.path).as_posix() for p in (wc.path / "out").rglob("*") if p.is_file())
        assert files == ["out/c.json"]
        assert (wc.path / "templates" / "rust" / "axum_service.rs").is_file()  # outside the folder: kept


def test_push_is_checked_and_a_remote_rejection_raises_with_the_remotes_message(remote, tmp_path):
    hook = _reject_pushes(remote)
    with open_work_copy(remote, tmp_path / "work") as wc:
        wc.checkout_branch("feature/x", base="main")
        wc.write_files({"a.json": "1"}, folder="out")
        wc.commit_if_changed("c")
        with pytest.raises(GitPushRejected) as info:
            wc.push("feature/x")
    assert HOOK_MESSAGE in str(info.value)
    assert HOOK_MESSAGE in info.value.remote_messages
    assert "pre-receive hook declined" in str(info.value)
    assert "feature/x" not in _branches(remote)
    hook.unlink()
    with open_work_copy(remote, tmp_path / "work") as wc:
        wc.checkout_branch("feature/x", base="main")
        wc.write_files({"a.json": "1"}, folder="out")
        sha = wc.commit_if_changed("c")
        result = wc.push("feature/x")
    assert result.updated and _branches(remote)["feature/x"] == sha


def test_a_push_that_is_not_a_fast_forward_is_rejected(remote, tmp_path):
    with open_work_copy(remote, tmp_path / "a") as a, open_work_copy(remote, tmp_path / "b") as b:
        for wc in (a, b):
            wc.checkout_branch("main")
        a.write_files({"x": "from a"}, folder="out")
        a.commit_if_changed("a")
        a.push("main")
        b.write_files({"x": "from b"}, folder="out")
        b.commit_if_changed("b")
        with pytest.raises(GitPushRejected) as info:
            b.push("main")
    assert "rejected" in str(info.value)


def test_pushing_an_unchanged_branch_reports_not_updated(remote, tmp_path):
    with open_work_copy(remote, tmp_path / "work") as wc:
        wc.checkout_branch("main")
        result = wc.push("main")
    assert result.updated is False


def test_checkout_discards_leftovers_of_a_failed_run(remote, tmp_path):
    with open_work_copy(remote, tmp_path / "work") as wc:
        wc.checkout_branch("feature/x", base="main")
        wc.write_files({"a.json": "unpushed"}, folder="out")
        wc.commit_if_changed("never pushed")
        (wc.path / "stray.txt").write_text("junk")
    with open_work_copy(remote, tmp_path / "work") as wc:
        assert wc.checkout_branch("feature/x", base="main") == "from main"
        assert not (wc.path / "out").exists() and not (wc.path / "stray.txt").exists()
        assert wc.head() == _branches(remote)["main"]


def test_changed_files_lists_the_paths_between_two_commits(remote, tmp_path):
    with open_work_copy(remote, tmp_path / "work") as wc:
        wc.checkout_branch("main")
        start = wc.head()
        wc.write_files({"one.json": "1", "two.json": "2"}, folder="patterns")
        mid = wc.commit_if_changed("two files")
        wc.write_files({"one.json": "1", "three.json": "3"}, folder="patterns")
        end = wc.commit_if_changed("one changed")
        assert wc.changed_files(start, mid) == ["patterns/one.json", "patterns/two.json"]
        assert wc.changed_files(mid, end) == ["patterns/three.json", "patterns/two.json"]
        assert wc.changed_files(end, end) == []
        assert wc.changed_files(None, end) == [
            "README.md",
            "patterns/one.json",
            "patterns/three.json",
            "templates/elixir/genserver_cache.ex.eex",
            "templates/rust/axum_service.rs",
        ]
        with pytest.raises(GitError, match="not a commit id"):
            wc.changed_files("--output=/tmp/x", end)
        with pytest.raises(GitError, match="is not in"):
            wc.changed_files("deadbeef" * 5, end)


def test_first_commit_to_an_empty_remote_starts_an_orphan_branch(tmp_path):
    bare = tmp_path / "empty.git"
    git.Repo.init(bare, bare=True, initial_branch="main").close()
    with open_work_copy(str(bare), tmp_path / "work") as wc:
        assert wc.checkout_branch("main") == "orphan"
        wc.write_files({"p.json": "{}"}, folder="patterns")
        sha = wc.commit_if_changed("first")
        wc.push("main")
    assert _branches(str(bare)) == {"main": sha}


def test_a_branch_from_a_missing_base_fails_with_a_clear_message(tmp_path):
    bare = tmp_path / "empty.git"
    git.Repo.init(bare, bare=True, initial_branch="main").close()
    with (
        open_work_copy(str(bare), tmp_path / "work") as wc,
        pytest.raises(GitError, match="has no branch 'main'"),
    ):
        wc.checkout_branch("feature/x", base="main")


@pytest.mark.parametrize(
    "name",
    [
        "../escape.json",
        "../../etc/passwd",
        "/etc/passwd",
        "..\\..\\windows.json",
        "a/../../b.json",
        "x\0y",
        ".git/hooks/pre-commit",
        "sub/.GIT/config",
        "",
        ".",
        "a\nb",
    ],
)
def test_safe_path_refuses_names_that_leave_the_folder(tmp_path, name):
    with pytest.raises(UnsafePathError):
        safe_path(tmp_path, name)


def test_safe_path_refuses_a_symlinked_folder_inside_the_tree(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symlink"):
        safe_path(root, "link/file.json")


def test_a_symlinked_export_folder_is_refused_and_nothing_is_written_through_it(remote, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    with open_work_copy(remote, tmp_path / "work") as wc:
        wc.checkout_branch("main")
        (wc.path / "out").symlink_to(outside)
        with pytest.raises(UnsafePathError):
            wc.write_files({"a.json": "x"}, folder="out")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "ext::sh -c touch% /tmp/pwned",
        "--upload-pack=touch /tmp/pwned",
        "",
        "ftp://example.com/repo.git",
        " https://example.com/r.git",
        "https:///nohost",
    ],
)
def test_validate_remote_url_refuses_unsafe_urls_naming_the_variable(url):
    with pytest.raises(ValueError, match="TEMPLATES_REPO_URL"):
        validate_remote_url(url)


def test_credentials_are_split_out_of_https_urls_and_redacted():
    clean, auth = split_credentials("https://bob:s3cret-token@git.example.com/acme/t.git")
    assert clean == "https://git.example.com/acme/t.git"
    assert (auth.username, auth.secret) == ("bob", "s3cret-token")
    assert "s3cret-token" not in repr(auth)
    clean, auth = split_credentials("https://ghp_abcdef123456@github.com/acme/t.git")
    assert (clean, auth.secret) == ("https://github.com/acme/t.git", "ghp_abcdef123456")
    assert (
        redact("fatal: could not read https://bob:s3cret-token@host/x")
        == "fatal: could not read https://bob:***@host/x"
    )
    assert split_credentials("ssh://git@host/acme/t.git") == ("ssh://git@host/acme/t.git", None)


def test_a_failed_clone_never_shows_the_urls_credentials(tmp_path):
    import socket

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://bob:URLSECRET-77@127.0.0.1:{port}/templates_data.git"
    with pytest.raises(GitError) as info, open_work_copy(url, tmp_path / "work"):
        pass
    assert "URLSECRET-77" not in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)


class _AuthRecordingHandler(SimpleHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):
        auth = self.headers.get("Authorization")
        self.seen.append(auth or "")
        if auth is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):
        pass


def test_url_credentials_reach_git_as_a_header_and_never_its_config(remote, tmp_path):
    subprocess.run(["git", "-C", remote, "update-server-info"], check=True)
    handler = partial(_AuthRecordingHandler, directory=str(Path(remote).parent))
    _AuthRecordingHandler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://bob:URLSECRET-88@127.0.0.1:{server.server_address[1]}/{Path(remote).name}"
        with open_work_copy(url, tmp_path / "work") as wc:
            assert wc.url == f"http://127.0.0.1:{server.server_address[1]}/{Path(remote).name}"
            assert (wc.path / "README.md").is_file()
            config = (wc.path / ".git" / "config").read_text()
    finally:
        server.shutdown()
        server.server_close()
    expected = "Basic " + base64.b64encode(b"bob:URLSECRET-88").decode()
    assert expected in _AuthRecordingHandler.seen
    assert "URLSECRET-88" not in config and base64.b64encode(b"bob:URLSECRET-88").decode() not in config


def test_two_processes_never_share_a_work_copy_at_once(remote, tmp_path):
    order: list[str] = []
    inside = threading.Event()

    def hold():
        with open_work_copy(remote, tmp_path / "work"):
            order.append("a in")
            inside.set()
            threading.Event().wait(0.5)
            order.append("a out")

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(10)
    with open_work_copy(remote, tmp_path / "work"):
        order.append("b in")
    t.join()
    assert order == ["a in", "a out", "b in"]


def test_a_held_lock_times_out_with_a_message_naming_the_lock(remote, tmp_path):
    with open_work_copy(remote, tmp_path / "work"):
        with pytest.raises(GitError, match=r"work\.lock"):
            with gitrepo.open_work_copy(remote, tmp_path / "work", lock_timeout_s=0.3):
                pass

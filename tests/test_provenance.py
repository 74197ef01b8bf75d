"""Where a run's figures came from: the commit of the code that ran, marked when it was not
the commit's own."""

import subprocess
from pathlib import Path

import pytest

from bistable import __version__
from bistable.train import provenance
from bistable.train.provenance import code_commit, source_checkout


def git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          text=True, capture_output=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("BISTABLE_COMMIT", raising=False)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "unit.py").write_text("x = 1\n")
    (tmp_path / "results.md").write_text("old\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first")
    return tmp_path


def test_a_clean_checkout_gives_its_commit(repo):
    assert code_commit(repo) == git(repo, "rev-parse", "--short", "HEAD")


@pytest.mark.parametrize("change, dirty", [
    (lambda r: (r / "src" / "unit.py").write_text("x = 2\n"), True),   # a tracked file changed
    (lambda r: (r / "src" / "new.py").write_text(""), True),           # untracked code
    (lambda r: (r / "benchmarks").mkdir() or (r / "benchmarks" / "b.py").write_text(""), True),
    (lambda r: (r / "notes.txt").write_text(""), False),               # untracked, not code
    (lambda r: (r / "results.md").write_text("new\n"), False),         # a tracked table rewritten
])
def test_code_that_is_not_the_commit_s_is_marked_dirty(repo, change, dirty):
    rev = git(repo, "rev-parse", "--short", "HEAD")
    change(repo)
    assert code_commit(repo) == rev + ("+dirty" if dirty else "")


def test_the_environment_names_the_commit_of_a_copied_tree(repo, monkeypatch):
    monkeypatch.setenv("BISTABLE_COMMIT", "abc1234")
    assert code_commit(repo) == "abc1234"


def test_outside_a_checkout_the_package_version(tmp_path, monkeypatch):
    monkeypatch.delenv("BISTABLE_COMMIT", raising=False)
    assert code_commit(tmp_path) == f"bistable {__version__}"


def _package(root, folder, project="bistable"):
    package = root / folder / "bistable"
    package.mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "{project}"\n')
    return package


def test_the_checkout_is_the_one_the_package_runs_from(tmp_path):
    assert source_checkout(_package(tmp_path, "src")) == tmp_path
    assert source_checkout() == Path(__file__).resolve().parents[1]  # this suite's checkout


@pytest.mark.parametrize("folder, project", [("deps", "bistable"), ("src", "their-project")])
def test_an_installed_copy_takes_no_folder_around_it_for_its_checkout(tmp_path, folder, project):
    # `pip install --target <their repo>/deps`, or a copy inside someone else's src/
    assert source_checkout(_package(tmp_path, folder, project)) is None


def test_an_installed_copy_names_its_version_not_the_repository_around_it(repo, monkeypatch):
    monkeypatch.setattr(provenance, "source_checkout", lambda: None)
    assert code_commit() == f"bistable {__version__}"

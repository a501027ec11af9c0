"""Names that become keys and paths: anything that could escape the store is refused (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evertrain.exceptions import InvalidNameError
from evertrain.faces.cli import main
from evertrain.store import Store
from evertrain.store.names import check_alias, check_model_name, parse_version

BAD_NAMES = [
    "../x",
    "a/b",
    "a\\b",
    "a\x00b",
    "",
    ".",
    "..",
    ".hidden",
    "x/../../y",
    "/etc",
    "a" * 129,
    "café",
]
BAD_VERSIONS = ["../1", "a/b", "1\x00", "", "0", "-1", "1.5", "\u0661", "1e3", "0x1", " 1"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_model_name_with_path_characters_is_refused(name: str) -> None:
    with pytest.raises(InvalidNameError, match="is not allowed"):
        check_model_name(name)


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_a_version_that_is_not_a_positive_integer_is_refused(version: str) -> None:
    with pytest.raises(InvalidNameError, match="not a positive integer"):
        parse_version(version)


@given(st.text(max_size=140))
def test_an_accepted_model_name_is_a_single_safe_path_segment(name: str) -> None:
    try:
        check_model_name(name)
    except InvalidNameError:
        return
    assert "/" not in name and "\\" not in name and "\x00" not in name and ".." not in name
    assert not name.startswith(".") and 1 <= len(name) <= 128
    assert name.isascii()


@given(st.text(max_size=40))
def test_an_accepted_alias_is_a_single_safe_path_segment(alias: str) -> None:
    try:
        check_alias(alias)
    except InvalidNameError:
        return
    assert alias.isascii() and all(c.islower() or c.isdigit() or c in "_-" for c in alias)
    assert 1 <= len(alias) <= 32


SPEC = "model: {name: m, target: y}\ndata: {source: {kind: csv, path: d.csv}}\n"


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_cli_refuses_bad_model_names_and_writes_nothing(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "model.json").write_text(json.dumps({"threshold": 1}))
    before = tree(tmp_path)
    commands = [
        ["register", name, str(project / "model.json")],
        ["versions", name],
        ["promote", name, "1"],
        ["rollback", name],
        ["lineage", name, "1"],
    ]
    for args in commands:
        code = main([*args, "--project", str(project)])
        err = capsys.readouterr().err
        assert code == 2, args
        assert err.startswith("error: model name") and err.count("\n") == 1, err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_the_cli_refuses_bad_versions_and_writes_nothing_outside_the_store(
    tmp_path: Path, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "evertrain.yaml").write_text(SPEC)
    with Store.for_project(project) as store:
        digest = store.artifacts.put(json.dumps({"threshold": 1}).encode())
        store.registry.register("m", digest, framework="json", actor="t")
    before = tree(tmp_path)
    for args in (
        ["promote", "m", version],
        ["lineage", "m", version],
        ["promote", "m", "1", "--expect", version],
    ):
        code = main([*args, "--project", str(project)])
        err = capsys.readouterr().err
        assert code == 2, args
        assert "not a positive integer" in err or "No such option" in err  # "-1" reads as an option
    after = tree(tmp_path)
    # Only the store's own files may change (SQLite's WAL side files come and go).
    assert {p for p in after ^ before if not p.startswith("project/.evertrain/")} == set()
    with Store.for_project(project) as store:
        assert store.registry.get_aliases("m") == {}
        assert len(store.audit.entries()) == 1

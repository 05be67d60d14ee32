"""`main.py review`: a bad worklist exits 2 in words; a good one opens the app on its first case."""

from __future__ import annotations

import json
import os

import pytest

from tests.cli.conftest import run_cli
from tests.review.cases import write_case_folder


def test_a_bad_worklist_is_a_usage_error(tmp_path):
    table = tmp_path / "list.csv"
    table.write_text("name,file\n")
    result = run_cli("review", table)
    assert result.returncode == 2
    assert f"{table}: the worklist CSV" in result.stderr


@pytest.mark.slow
def test_review_opens_the_app_on_the_worklist_and_saves_where_it_is(tmp_path, monkeypatch):
    folder = write_case_folder(tmp_path / "worklist", 3)
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.setenv("SEGBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    shot = tmp_path / "shot.png"
    result = run_cli("review", folder, "--screenshot", shot, "--quit-after", "12")
    assert result.returncode == 0, result.stderr[-2000:]
    state = json.loads((folder / "review" / "review.json").read_text())
    assert state["current"] == "case000_0000"
    assert os.path.getsize(shot) > 0

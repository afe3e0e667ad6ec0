"""The output guard and atomic writes called directly: a hard link to an input is the input, a
read-only folder is refused before any work, extra inputs of any kind are guarded, and OS errors
while writing are one line that leaves no file. tests/cli/test_output_paths_cli.py runs the guard
through the commands."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from qtool.errors import QtoolError, UsageError
from qtool.io import atomic
from qtool.io.outputs import guard_outputs
from tests.helpers.models import conv_net_with_data


@pytest.fixture
def work(tmp_path):
    return conv_net_with_data(tmp_path)


def test_hard_links_to_an_input_are_the_input(work):
    os.link(work / "x.npy", work / "y.npy")
    with pytest.raises(QtoolError, match="would overwrite the input"):
        guard_outputs([work / "y.npy"], inputs=[work / "x.npy"])


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.ENAMETOOLONG, errno.EACCES])
def test_os_errors_while_writing_are_one_line_and_leave_no_file(tmp_path, monkeypatch, code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    (tmp_path / "old.json").write_text("old")
    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(QtoolError) as info:
        atomic.write_json(tmp_path / "old.json", {"a": 1})
    assert str(info.value) == f"cannot write {tmp_path / 'old.json'}: {os.strerror(code)}"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]
    assert (tmp_path / "old.json").read_text() == "old"


def test_a_read_only_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    # root may write anywhere, so the permission check is asked what a normal user gets
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != folder)
    with pytest.raises(QtoolError, match=f"cannot write {folder / 'out.json'}: {folder}: "):
        guard_outputs([folder / "out.json"])


def test_guard_takes_extra_inputs_of_any_kind(tmp_path):
    (tmp_path / "metric.py").write_text("")
    (tmp_path / "data").mkdir()
    with pytest.raises(QtoolError, match="would overwrite the input"):
        guard_outputs([tmp_path / "metric.py"], inputs=[None, tmp_path / "metric.py"])
    with pytest.raises(QtoolError, match="inside the input folder"):
        guard_outputs([tmp_path / "data" / "new" / "out.json"], inputs=[tmp_path / "data"])
    with pytest.raises(UsageError):
        guard_outputs([tmp_path / "a.json", tmp_path / "." / "a.json"])
    guard_outputs([None, tmp_path / "fine.json"], inputs=[tmp_path / "data"])

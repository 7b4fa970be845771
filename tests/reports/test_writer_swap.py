"""write_files_atomically (through write_certify_report): the set is swapped in as a whole directory, the
previous report is reported as replaced, the directory is locked, stale leftovers are cleaned, and
directories that cannot be swapped (the current one, one holding folders, an empty path) are refused."""

from __future__ import annotations

import errno
import os

import pytest

from onnxdual import files as files_module
from onnxdual.errors import InvalidInputError, OutputBusyError
from onnxdual.files import clean_stale_temps, lock_dir, write_files_atomically
from onnxdual.reports import write_certify_report
from tests.reports.synthetic import make_meta, make_results


@pytest.fixture
def report():
    examples, summary, cascade = make_results(n=5, eps=(0.1,), stages=1, seed=3)
    return examples, summary, make_meta()


def test_first_write_is_not_a_replacement_second_is(tmp_path, report):
    examples, summary, meta = report
    out = tmp_path / "r"
    assert write_certify_report(out, examples, summary, meta).replaced is False
    (out / "notes.txt").write_text("mine")
    again = write_certify_report(out, examples.head(2), summary, meta)
    assert again.replaced is True
    assert (out / "notes.txt").read_text() == "mine"  # other plain files are carried over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_unrelated_files_alone_are_not_a_previous_report(tmp_path, report):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.txt").write_text("x")
    assert write_certify_report(tmp_path / "r", *report).replaced is False


def test_refuses_current_directory_its_parents_empty_path_and_folders(tmp_path, report, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for bad in ("", ".", str(tmp_path), str(tmp_path.parent)):
        with pytest.raises(InvalidInputError, match="empty path|current directory"):
            write_certify_report(bad, *report)
    (tmp_path / "r" / "sub").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="not a plain file"):
        write_certify_report(tmp_path / "r", *report)
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["sub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_locked_directory_is_busy(tmp_path, report):
    out = tmp_path / "r"
    out.mkdir()
    with lock_dir(out):
        with pytest.raises(OutputBusyError, match="another onnxdual run"):
            write_certify_report(out, *report)
    assert list(out.iterdir()) == []
    write_certify_report(out, *report)


def test_stale_leftovers_of_dead_processes_are_cleaned(tmp_path, report):
    out = tmp_path / "r"
    out.mkdir()
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    (out / f".examples.csv.{dead}.0123456789ab.tmp").write_text("torn")
    (out / f".metrics.csv.{os.getpid()}.0123456789ab.tmp").write_text("mine, live")
    (tmp_path / f".r.onnxdual-new.{dead}.abc123").mkdir()
    write_certify_report(out, *report)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    names = {p.name for p in out.iterdir()}
    assert not any(n.startswith(".examples") for n in names)
    # a live process's temp file is neither carried over nor deleted in the old directory by name match
    assert clean_stale_temps(tmp_path) == []


def test_without_rename_exchange_two_renames_and_a_killed_swap_is_restored(tmp_path, report, monkeypatch):
    examples, summary, meta = report
    out = tmp_path / "r"
    write_certify_report(out, examples, summary, meta)
    old = (out / "examples.csv").read_bytes()

    def no_exchange(a, b):
        raise OSError(errno.EINVAL, "not supported")

    monkeypatch.setattr(files_module, "_exchange", no_exchange)
    assert write_certify_report(out, examples.head(1), summary, meta).replaced
    assert (out / "examples.csv").read_bytes() != old
    # a run killed between the two renames: the target is gone, the previous set waits aside
    dead = 2 ** 22 + 12345
    aside = tmp_path / f".r.onnxdual-old.{dead}.xyz"
    os.rename(out, aside)
    written = write_files_atomically(out, {"x.txt": "new"})
    assert written.replaced is False
    assert (out / "x.txt").read_text() == "new" and (out / "examples.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]

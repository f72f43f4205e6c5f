"""fileio: an atomic write replaces its target only when complete (a failing writer leaves the old file and no
temp file), with the mode a plain open() would give; Ctrl-C ends a script in one line."""
import os
import pathlib
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fileio import (atomic_write, atomic_write_json, publish_checkpoint_dir, resolve_checkpoint_dir,  # noqa: E402
                    run_script, umask)


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_json(str(target), {"f1": 90.0})
    before = target.read_bytes()

    for error in (OSError("No space left on device"), KeyboardInterrupt()):  # a full disk, or Ctrl-C midway
        def fill(tmp, error=error):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write('{"f1": ')
            raise error
        with pytest.raises(type(error)):
            atomic_write(str(target), fill)
        assert target.read_bytes() == before
        assert os.listdir(tmp_path) == ["results.json"]
    # a new file in a folder not made yet: made, written whole, with the permissions a plain open() gives
    atomic_write(str(tmp_path / "new" / "a.txt"), lambda tmp: pathlib.Path(tmp).write_text("x"))
    assert (tmp_path / "new" / "a.txt").read_text() == "x"
    assert os.stat(tmp_path / "new" / "a.txt").st_mode & 0o777 == 0o644 & ~umask()


def test_ctrl_c_ends_a_script_in_one_line_with_status_130(capsys):
    def interrupted():
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as e:
        run_script(interrupted)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 130 and err.startswith("interrupted (Ctrl-C)") and "\n" not in err
    run_script(lambda: {"f1": 1.0})  # a main() that returns its results: no exit status made of them


def test_publish_checkpoint_dir_keeps_the_newest_and_never_the_one_just_written(tmp_path):
    """keep_last step dirs up to the one published are kept, older ones pruned (by step number, not by name: step-9
    is older than step-10); after a rewind (resumed from an earlier step) the dirs past the new one are left for the
    run to replace, and the one just written is never pruned, so `latest` always names a whole checkpoint."""
    root = tmp_path / "checkpoints"

    def save(step):
        return publish_checkpoint_dir(str(root), f"step-{step}",
                                      lambda tmp: pathlib.Path(tmp, "weights").write_text(str(step)), keep_last=2)

    for step in (9, 10, 20, 30):
        assert save(step) == str(root / f"step-{step}")
    assert sorted(os.listdir(root)) == ["latest", "step-20", "step-30"]
    assert resolve_checkpoint_dir(str(tmp_path)) == str(root / "step-30")
    # a rewind: the run resumed from step-10 saves step-15, then step-20 again over the abandoned one
    (root / "step-10").mkdir()
    (root / "step-10" / "weights").write_text("10")
    save(15)
    assert sorted(os.listdir(root)) == ["latest", "step-10", "step-15", "step-20", "step-30"]
    assert (root / "latest").read_text() == "step-15\n" and (root / "step-15" / "weights").read_text() == "15"
    (root / "step-20.tmp").mkdir()  # left by a crash mid-write
    publish_checkpoint_dir(str(root), "step-20", lambda tmp: pathlib.Path(tmp, "weights").write_text("20b"),
                           keep_last=1)
    assert sorted(os.listdir(root)) == ["latest", "step-20", "step-30"]
    assert (pathlib.Path(resolve_checkpoint_dir(str(root))) / "weights").read_text() == "20b"


def test_read_jsonl_drops_only_a_cut_last_line(tmp_path):
    """allow_cut_end drops a last line that a kill cut short (no line end, does not parse); a complete last line
    that does not parse is damage, and raises like any other."""
    import json

    from fileio import read_jsonl
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"st', encoding="utf-8")
    assert read_jsonl(str(log), allow_cut_end=True) == [{"step": 1}, {"step": 2}]
    with pytest.raises(json.JSONDecodeError):
        read_jsonl(str(log))
    log.write_text('{"step": 1}\n{"step": 2}', encoding="utf-8")  # no line end, but whole: kept
    assert read_jsonl(str(log), allow_cut_end=True) == [{"step": 1}, {"step": 2}]
    log.write_text('{"step": 1}\n{"st\n', encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        read_jsonl(str(log), allow_cut_end=True)


def test_check_makeable_needs_a_writable_folder_and_no_file_on_the_way(tmp_path, monkeypatch):
    """An output path is refused before any work when a file stands where a folder must be, or when its nearest
    existing folder may not be written into (os.access is stood in for: root may write anywhere)."""
    import fileio
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=r"--output_dir .*f/run: cannot be made, .*f is a file"):
        fileio.check_makeable(str(tmp_path / "f" / "run"), "--output_dir")
    fileio.check_makeable(str(tmp_path / "new" / "run"), "--output_dir")
    fileio.check_makeable(str(tmp_path / "f"), "--output_dir")  # an existing file: the caller's to judge
    monkeypatch.setattr(fileio.os, "access", lambda path, mode: not mode & os.W_OK)  # readable, not writable
    with pytest.raises(ValueError, match=r"--output_dir .*new/run: cannot be written, .* is not writable"):
        fileio.check_makeable(str(tmp_path / "new" / "run"), "--output_dir")
    assert not (tmp_path / "new").exists()

"""fileio: an atomic write replaces its target only when complete (a failing writer leaves the old file and no
temp file), with the mode a plain open() would give; Ctrl-C ends a script in one line."""
import os
import pathlib
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fileio import atomic_write, atomic_write_json, run_script, umask  # noqa: E402


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

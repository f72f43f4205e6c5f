"""Assertions shared by the script tests."""
import hashlib
import os

import pytest


def file_digests(root):
    """{relative path: sha256} of every file under root: proves a failed run left earlier outputs untouched."""
    return {os.path.relpath(os.path.join(dp, f), root): hashlib.sha256(open(os.path.join(dp, f), "rb").read()).digest()
            for dp, _, files in os.walk(root) for f in files}


def expect_fail(capsys, fn, argv, *needles):
    """The script exits 2 with one 'error:' line naming what is wrong, and no traceback; returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]

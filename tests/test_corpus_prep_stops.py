"""create_pretraining_data.py stopping cleanly: a worker killed mid-task or mid-message, a worker stopped in the instant
after fork, SIGTERM to the run, and temp dirs left by runs that were killed. Nothing partial is left behind and no
process is left running."""
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

import corpus_tasks
import create_pretraining_data as cpd
from helpers import corpus_prep_files, expect_fail


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return corpus_prep_files(tmp_path_factory.mktemp("cpd_stops"))


def run(argv):
    return cpd.main([str(a) for a in argv])


@pytest.fixture
def watchdog():
    """The old code hung for good here: fail the test instead of the run."""
    def on_alarm(signum, frame):
        raise TimeoutError("still running after 30 s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 30, 5)  # again every 5 s, should the first land in a cleanup
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("when", ["tokenising", "sending its result"])
def test_dead_worker_fails_the_run(files, tmp_path, monkeypatch, capsys, watchdog, when):
    if mp.get_start_method() != "fork":
        pytest.skip("the patches reach the workers through fork")
    parent = os.getpid()
    if when == "tokenising":  # as the out-of-memory killer would
        make_splitter = corpus_tasks.make_splitter

        def dying_splitter(name):
            split = make_splitter(name)
            return lambda line: os.kill(os.getpid(), signal.SIGKILL) if "제40조" in line else split(line)
        monkeypatch.setattr(corpus_tasks, "make_splitter", dying_splitter)
    else:  # killed with half a message in the pipe
        send = mp_connection.Connection._send_bytes

        def dying_send(self, buf):
            if os.getpid() == parent:
                return send(self, buf)
            self._send(struct.pack("!i", len(buf)) + bytes(buf[:10]))
            os.kill(os.getpid(), signal.SIGKILL)
        monkeypatch.setattr(mp_connection.Connection, "_send_bytes", dying_send)
    out = tmp_path / "out"
    expect_fail(capsys, run, ["--input_files", *files["inputs"], "--vocab_file", files["vocab"], "--output_dir", out,
                              "--num_workers", 2, "--task_chars", 2000], "worker", "died", "SIGKILL", alone=True)
    assert os.listdir(tmp_path) == [] and mp.active_children() == []


def test_worker_stopped_right_after_fork_does_not_become_a_second_parent(files, tmp_path, monkeypatch, watchdog):
    """An error just after the workers start terminates them at once. A worker still between fork and its own
    signal handlers used to run the parent's SIGTERM handler, raise in its copy of the parent's stack and go on
    running the caller's code (here: the rest of the test session) as a second parent. The window is widened to
    make the race certain."""
    if mp.get_start_method() != "fork":
        pytest.skip("the patch reaches the workers through fork")
    parent, escaped = os.getpid(), tmp_path / "escaped"
    fork = os.fork

    def slow_fork():
        pid = fork()
        if pid == 0:
            time.sleep(0.5)  # the parent's terminate() lands here
        return pid
    monkeypatch.setattr(os, "fork", slow_fork)

    def tasks():
        raise ValueError("bad input found right after the workers started")
        yield

    def on_sigterm(signum, frame):  # what create_pretraining_data installs
        raise cpd.Terminated
    old = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with pytest.raises(ValueError, match="right after"):
            for _ in corpus_tasks.run_tasks(tasks(), {"vocab_file": files["vocab"]}, num_workers=2):
                pass
    except BaseException:
        if os.getpid() != parent:  # a worker that escaped: record it and vanish
            escaped.write_text(str(os.getpid()))
            os._exit(0)
        raise
    finally:
        if os.getpid() == parent:
            signal.signal(signal.SIGTERM, old)
    if os.getpid() != parent:
        escaped.write_text(str(os.getpid()))
        os._exit(0)
    time.sleep(1)  # time for an escaped worker to write its file
    assert not escaped.exists() and mp.active_children() == []


def test_sigterm_removes_the_partial_output(files, tmp_path, monkeypatch, capsys):
    def unhandled(signum, frame):  # what the old code got: no handler of its own
        raise RuntimeError("SIGTERM not handled")
    old = signal.signal(signal.SIGTERM, unhandled)
    add = cpd.ShardWriter.add

    def add_then_sigterm(self, res):
        add(self, res)
        assert [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # mid-run: there is something to clean up
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(cpd.ShardWriter, "add", add_then_sigterm)
    try:
        with pytest.raises(SystemExit) as e:
            run(["--input_files", *files["inputs"], "--vocab_file", files["vocab"], "--output_dir", tmp_path / "out",
                 "--num_workers", 2, "--task_chars", 2000])
        assert signal.getsignal(signal.SIGTERM) is unhandled  # main() puts the caller's handler back
    finally:
        signal.signal(signal.SIGTERM, old)
    assert e.value.code == 143
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "SIGTERM" in err, err
    assert os.listdir(tmp_path) == [] and mp.active_children() == []


def test_stale_tmp_dirs_of_dead_runs_are_removed(files, tmp_path, capsys):
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    host = socket.gethostname()
    names = {"dead": f"out.tmp-{host}-{gone.pid}-abc_1234", "live": f"out.tmp-{host}-{os.getpid()}-abc_1234",
             "other_host": f"out.tmp-{host}x-{gone.pid}-abc_1234",
             "other_output": f"out2.tmp-{host}-{gone.pid}-abc_1234",
             "older_version": "out.tmp-abc_1234",  # no PID to tell whether its run is alive
             "not_ours": f"out.tmp-{host}-{gone.pid}-notes"}
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "shard_00000.ids.npy").write_bytes(b"x")
    run(["--input_files", files["inputs"][1], "--vocab_file", files["vocab"], "--output_dir", tmp_path / "out",
         "--sentence_splitter", "none", "--num_workers", 1])
    assert sorted(os.listdir(tmp_path)) == sorted(["out"] + [n for k, n in names.items() if k != "dead"])
    assert names["dead"] in capsys.readouterr().err

"""stages.py: stages as subprocesses, one at a time or several at once; time limits, failures and cached stages
recorded; a stage stopped with what it started, whether it ends on SIGTERM or ignores it, and when the pipeline
itself is stopped."""
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import stages  # noqa: E402


def test_run_stages_parallel_times_out_fails_and_reuses(tmp_path):
    """Jobs at once: one finishes, one fails, one outlives its limit and is stopped, one is cached (not run: its
    command would fail); each is reported to on_done as it ends, the stopped one last."""
    py = sys.executable
    (tmp_path / "cached.done").write_text("")
    quick = tmp_path / "quick.done"
    jobs = [("quick", [py, "-c", "open(r'%s', 'w').write('x')" % quick], str(quick)),
            ("fails", [py, "-c", "raise SystemExit(3)"], str(tmp_path / "fails.done")),
            ("slow", [py, "-c", "import time; time.sleep(60)"], str(tmp_path / "slow.done")),
            ("cached", [py, "-c", "raise SystemExit(1)"], str(tmp_path / "cached.done"))]
    recorded, ended = {}, []
    ok = stages.run_stages_parallel(jobs, recorded, str(tmp_path), max_parallel=3, timeout_s=3,
                                        on_done=lambda name, good: ended.append((name, good)))
    assert ok == {"quick": True, "fails": False, "slow": False, "cached": True}
    assert sorted(ended) == sorted(ok.items()) and ended[-1] == ("slow", False)
    assert recorded["fails"]["failed"] == 3 and recorded["slow"]["failed"] and recorded["cached"]["cached"]
    assert 3 <= recorded["slow"]["seconds"] < 5.5 and "failed" not in recorded["quick"]  # stopped at its limit
    assert recorded["quick"]["cached"] is False


def test_run_stages_parallel_stops_its_jobs_when_interrupted(tmp_path):
    """An error in the caller (here: in on_done) stops the jobs still running instead of leaving them behind."""
    py = sys.executable
    pid_file = tmp_path / "slow.pid"
    jobs = [("slow", [py, "-c", "import os, time; open(r'%s', 'w').write(str(os.getpid())); time.sleep(60)"
                      % pid_file], str(tmp_path / "slow.done")),
            ("quick", [py, "-c", "import time; time.sleep(1)"], str(tmp_path / "quick.done"))]

    def on_done(name, good):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stages.run_stages_parallel(jobs, {}, str(tmp_path), max_parallel=2, on_done=on_done)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone (and reaped)


def _gone(pid: int) -> bool:
    """pid has exited (a zombie not yet reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("stage_ends_on_sigterm", [False, True])
def test_a_stage_past_its_limit_is_stopped_with_what_it_started(tmp_path, monkeypatch, parallel,
                                                                stage_ends_on_sigterm):
    """A process started by the stage (as DataLoader workers are) ignores SIGTERM and shares the stage's output;
    the stage itself either ends on SIGTERM (as run_pretraining does) or ignores it too. Past its limit the stage
    is over within the grace period either way, and neither process is left."""
    monkeypatch.setattr(stages, "STOP_GRACE_S", 1)
    py = sys.executable
    stubborn = "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    worker = stubborn + "open(r'%s', 'w').write(str(os.getpid())); time.sleep(60)" % (tmp_path / "worker.pid")
    child = (("import os, time; " if stage_ends_on_sigterm else stubborn)
             + "import subprocess, sys; subprocess.Popen([sys.executable, '-c', %r]); "
             "open(r'%s', 'w').write(str(os.getpid())); time.sleep(60)" % (worker, tmp_path / "stage.pid"))
    job = ("stage", [py, "-c", child], str(tmp_path / "stage.done"))
    recorded = {}
    t0 = time.time()
    if parallel:
        ok = stages.run_stages_parallel([job], recorded, str(tmp_path), max_parallel=2, timeout_s=2)["stage"]
    else:
        ok = stages.run_stage(*job, recorded, str(tmp_path), timeout_s=2, check=False)
    assert not ok and recorded["stage"]["failed"] and time.time() - t0 < 20
    for name in ("stage.pid", "worker.pid"):
        pid = int((tmp_path / name).read_text())
        deadline = time.time() + 10
        while not _gone(pid) and time.time() < deadline:
            time.sleep(0.1)
        assert _gone(pid), name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_to_the_pipeline_stops_its_stage(tmp_path, sig):
    """The stages run in their own sessions, so a SIGTERM for the pipeline (a job scheduler's, say) or a SIGHUP (its
    terminal closed) does not reach them: exit_on_termination turns it into SystemExit, whose clean-up stops the
    running stage."""
    pid_file = tmp_path / "stage.pid"
    script = tmp_path / "pipeline.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {stages.ROOT!r})\n"
        "import stages\n"
        "stages.exit_on_termination()\n"
        f"cmd = [sys.executable, '-c', \"import os, time; open(r'{pid_file}', 'w').write(str(os.getpid())); "
        "time.sleep(60)\"]\n"
        f"stages.run_stage('stage', cmd, r'{tmp_path / 'stage.done'}', {{}}, r'{tmp_path}', check=False)\n",
        encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 128 + sig, proc.stderr.read()
    pid = int(pid_file.read_text())
    deadline = time.time() + 10
    while not _gone(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert _gone(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("parallel", [False, True])
def test_a_stage_that_ended_leaves_nothing_running(tmp_path, parallel):
    """A stage that exits while something it started runs on (holding its output pipe): the stage is over when it
    exits, not when the pipe closes (run_stage waited as long as the leftover ran), and the leftover is stopped."""
    py = sys.executable
    leftover = "import os, time; open(r'%s', 'w').write(str(os.getpid())); time.sleep(60)" % (tmp_path / "left.pid")
    stage = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', %r]); time.sleep(1); "
             "open(r'%s', 'w').write('x')" % (leftover, tmp_path / "stage.done"))
    job = ("stage", [py, "-c", stage], str(tmp_path / "stage.done"))
    recorded, t0 = {}, time.time()
    if parallel:
        assert stages.run_stages_parallel([job], recorded, str(tmp_path), max_parallel=2)["stage"]
    else:
        assert stages.run_stage(*job, recorded, str(tmp_path))
    assert time.time() - t0 < 20 and recorded["stage"]["seconds"] < 20
    pid, deadline = int((tmp_path / "left.pid").read_text()), time.time() + 10
    while not _gone(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert _gone(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_second_interrupt_while_stopping_still_stops_every_job(tmp_path, monkeypatch):
    """Ctrl-C, then Ctrl-C again during the first job's grace period: every job's group is killed, not the first
    one's alone (the second interrupt used to escape before the other jobs were reached)."""
    py = sys.executable
    stubborn = ("import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "open(r'%s', 'w').write(str(os.getpid())); time.sleep(60)")
    jobs = [(f"j{i}", [py, "-c", stubborn % (tmp_path / f"j{i}.pid")], str(tmp_path / f"j{i}.done")) for i in (1, 2)]
    real_stop = stages._stop

    def second_interrupt(proc, deadline=None):
        real_stop(proc, time.time())  # no grace: killed
        raise KeyboardInterrupt

    def first_interrupt(name, good):  # once both stubborn jobs run
        deadline = time.time() + 30
        while not all((tmp_path / f"j{i}.pid").exists() and (tmp_path / f"j{i}.pid").read_text() for i in (1, 2)):
            assert time.time() < deadline
            time.sleep(0.1)
        raise KeyboardInterrupt
    monkeypatch.setattr(stages, "_stop", second_interrupt)
    jobs.append(("quick", [py, "-c", "pass"], str(tmp_path / "quick.done")))
    with pytest.raises(KeyboardInterrupt):
        stages.run_stages_parallel(jobs, {}, str(tmp_path), max_parallel=3, on_done=first_interrupt)
    for i in (1, 2):
        pid, deadline = int((tmp_path / f"j{i}.pid").read_text()), time.time() + 10
        while not _gone(pid) and time.time() < deadline:
            time.sleep(0.1)
        assert _gone(pid), i


def test_a_cached_stage_whose_run_failed_after_writing_it_is_warned_about(tmp_path, capsys):
    done = tmp_path / "stage.done"
    done.write_text("x")
    recorded = {"stage": {"seconds": 1.0, "cached": False, "command": "python -c pass", "failed": 3}}
    assert stages.run_stage("stage", [sys.executable, "-c", "pass"], str(done), recorded, str(tmp_path))
    err = capsys.readouterr().err
    assert "stage 'stage' is cached, but the run that wrote" in err and "then failed (exit code 3)" in err



def test_a_stage_cached_from_another_command_line_is_used_and_warned_about(tmp_path, capsys):
    """Its output is reused (nothing runs), with one warning naming the command that made it; the same command
    is reused silently."""
    done = tmp_path / "stage.done"
    done.write_text("x")
    recorded = {"stage": {"seconds": 1.0, "cached": False, "command": "python make.py --steps 20"}}
    assert stages.run_stage("stage", [sys.executable, "-c", "raise SystemExit(5)"], str(done), recorded,
                            str(tmp_path))
    err = capsys.readouterr().err
    assert err.count("warning") == 1
    assert "is cached from another command line (before: python make.py --steps 20)" in err
    assert recorded["stage"]["cached"] and done.read_text() == "x"
    cmd = [sys.executable, "-c", "raise SystemExit(5)"]
    again = {"stage": {"seconds": 1.0, "cached": False, "command": stages.command_line(cmd)}}
    stages.run_stage("stage", cmd, str(done), again, str(tmp_path))
    assert "warning" not in capsys.readouterr().err


def test_command_lines_are_printed_relative_to_the_repository():
    """As recorded and printed: the interpreter by its name, paths inside the repository relative to it (to paste
    there as is, and the same from any checkout), other paths as given, each quoted for the shell."""
    inside = os.path.join(stages.ROOT, "runs", "a b", "vocab.txt")
    cmd = [sys.executable, os.path.join(stages.ROOT, "tokenization.py"), "build-vocab", "--output", inside,
           "--corpus", "/elsewhere/x.txt", stages.ROOT + "-other/y.txt"]
    line = stages.command_line(cmd)
    assert line.startswith(os.path.basename(sys.executable) + " tokenization.py build-vocab ")
    assert shlex.split(line)[1:] == ["tokenization.py", "build-vocab", "--output",
                                     os.path.join("runs", "a b", "vocab.txt"), "--corpus", "/elsewhere/x.txt",
                                     stages.ROOT + "-other/y.txt"]


def test_one_job_at_a_time_a_failure_is_recorded_and_the_next_job_runs(tmp_path, capsys):
    """max_parallel=1 runs each job as run_stage does: its output on screen as well as in its log."""
    py = sys.executable
    jobs = [("fails", [py, "-c", "print('job one', 'says hi'); raise SystemExit(3)"], str(tmp_path / "fails.done")),
            ("next", [py, "-c", "open(r'%s', 'w').write('x')" % (tmp_path / "next.done")], str(tmp_path / "next.done"))]
    recorded = {}
    assert stages.run_stages_parallel(jobs, recorded, str(tmp_path), max_parallel=1) == {"fails": False, "next": True}
    assert recorded["fails"]["failed"] == 3 and (tmp_path / "next.done").exists()
    assert "job one says hi" in capsys.readouterr().out
    assert "job one says hi" in (tmp_path / "fails.log").read_text()


def test_at_most_max_parallel_jobs_run_at_once_sharing_the_cores(tmp_path, monkeypatch):
    """Three jobs, two at a time: the third starts only once one has ended, and each job gets its share of the
    usable cores as OMP_NUM_THREADS (unless that is set already)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    py = sys.executable
    job = ("import os, time; t = time.time(); time.sleep(1.0); "
           "open(r'%s', 'w').write(f\"{t} {time.time()} {os.environ.get('OMP_NUM_THREADS')}\")")
    jobs = [(f"j{i}", [py, "-c", job % (tmp_path / f"j{i}.txt")], str(tmp_path / f"j{i}.done")) for i in range(3)]
    assert all(stages.run_stages_parallel(jobs, {}, str(tmp_path), max_parallel=2).values())
    spans = [(tmp_path / f"j{i}.txt").read_text().split() for i in range(3)]
    starts_ends = [(float(s), float(e)) for s, e, _ in spans]
    assert max(sum(s <= t < e for s, e in starts_ends) for t, _ in starts_ends) == 2
    assert {n for _, _, n in spans} == {str(max(1, stages.usable_cpus() // 2))}

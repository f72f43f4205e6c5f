"""Pipeline stages as subprocesses, for quickstart.py and bench/cram.py: each stage an ordinary script whose
command line is printed and recorded, skipped when its output exists, stopped past a time limit together with
what it started, and several at once when they are independent.

    stages = {}
    run_stage("vocab", [sys.executable, "tokenization.py", "build-vocab", ...], "runs/x/vocab.txt", stages, "runs/x")
    run_stages_parallel([(name, cmd, done_marker), ...], stages, log_dir, max_parallel=4, timeout_s=300)
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time

from train_utils import fail, usable_cpus, warn

ROOT = os.path.dirname(os.path.abspath(__file__))  # stages run from the repository, and are printed relative to it


def run_stage(name, cmd, done_marker, stages, log_dir, timeout_s=None, check=True):
    """Run one stage as a subprocess unless its output exists; record its wall time and command line (a cached
    stage whose recorded command differs is warned about). True when it succeeded.

    A stage still running after timeout_s is stopped (_stop). A failed stage exits the pipeline, unless
    check=False: then the failure is recorded in `stages` and False returned, for pipelines that report what they
    have. Whatever stops this function early (Ctrl-C included) stops the stage too.
    """
    printable = command_line(cmd)
    if os.path.exists(done_marker):
        return _reuse(name, printable, done_marker, stages)
    print(f"\n[{name}] $ {printable}", flush=True)
    t0 = time.time()
    log_path = os.path.join(log_dir, f"{name}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        timed_out = []
        timer = threading.Timer(timeout_s, lambda: (timed_out.append(1), _stop(proc))) if timeout_s else None
        # tee raw bytes on a thread of its own: progress bars keep redrawing in place (\r) on screen, the stage log
        # gets everything, and the stage's end is its own exit, not the end of the pipe (which anything it left
        # running would hold open)
        reader = threading.Thread(target=_tee, args=(proc.stdout, log), daemon=True)
        try:
            if timer:
                timer.start()
            reader.start()
            rc = proc.wait()
        finally:
            if timer:
                timer.cancel()
            _stop(proc)  # a stage that ended leaves nothing behind either
            reader.join(timeout=10)  # the group is gone, and with it the pipe's writers
    why = _record(name, printable, t0, rc, bool(timed_out), timeout_s, log_path, stages)
    if why is not None:
        if check:
            fail(why)
        print(f"error: {why}", file=sys.stderr, flush=True)
    return why is None


def _tee(pipe, log):
    out = getattr(sys.stdout, "buffer", None)  # a notebook's stdout takes text only
    for chunk in iter(lambda: pipe.read1(1 << 16), b""):
        if out is not None:
            out.write(chunk)
            out.flush()
        else:
            sys.stdout.write(chunk.decode("utf-8", "replace"))
        log.write(chunk)


def _reuse(name, printable, done_marker, stages) -> bool:
    """A stage whose output exists is not run again (and warned about if it was made by another command, or if
    its run failed after writing it)."""
    print(f"[{name}] cached ({os.path.relpath(done_marker)} exists)", flush=True)
    ran = stages.setdefault(name, {}).get("command")
    if ran is not None and ran != printable:
        warn(f"stage '{name}' is cached from another command line (before: {ran}); delete "
             f"{os.path.relpath(done_marker)} to run it with the new one")
    if stages[name].get("failed") is not None:
        warn(f"stage '{name}' is cached, but the run that wrote {os.path.relpath(done_marker)} then failed (exit "
             f"code {stages[name]['failed']}): check it, or delete it to run the stage again")
    stages[name]["cached"] = True
    return True


def _record(name, printable, t0, rc, late, timeout_s, log_path, stages) -> str | None:
    """Record a stage that ran in `stages`; None when it succeeded, else why it failed (one line)."""
    stages[name] = {"seconds": round(time.time() - t0, 1), "cached": False, "command": printable}
    if rc == 0:
        return None
    stages[name]["failed"] = rc
    return (f"stage '{name}' " + (f"ran past {timeout_s} s and was stopped" if late
                                  else f"failed with exit code {rc}") + f"; see {log_path}")


def command_line(cmd) -> str:
    """cmd as printed and recorded: relative to the repository, so it can be pasted from there as is."""
    return " ".join(shlex.quote(os.path.relpath(c, ROOT) if c.startswith(ROOT + os.sep) else c)
                    for c in [os.path.basename(cmd[0])] + cmd[1:])


def run_stages_parallel(jobs, stages, log_dir, max_parallel, timeout_s=None, on_done=None) -> dict[str, bool]:
    """run_stage for many independent stages, at most max_parallel at a time: jobs is a list of (name, cmd,
    done_marker). Each one's output goes to LOG_DIR/NAME.log only (a line on screen when it starts and ends); a
    job running past timeout_s is stopped. on_done(name, succeeded) is called as each one ends (or is found
    cached), so results can be recorded before the others finish. Returns name -> succeeded; failures are
    recorded in `stages`, not fatal. Whatever stops this function early stops the jobs still running too.

    For small models, whose fine-tuning keeps the GPU mostly idle while Python launches kernels: several runs at
    once share one GPU with little slowdown each.
    """
    ok = {}

    def finish(name, succeeded):
        ok[name] = succeeded
        if on_done is not None:
            on_done(name, succeeded)

    if max_parallel <= 1:
        for name, cmd, done in jobs:
            finish(name, run_stage(name, cmd, done, stages, log_dir, timeout_s, check=False))
        return ok
    # the cores are shared by the runs going at once (unless OMP_NUM_THREADS says otherwise)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                           str(max(1, usable_cpus() // max_parallel)))}
    todo, running = list(jobs), {}
    try:
        while todo or running:
            while todo and len(running) < max_parallel:
                name, cmd, done = todo.pop(0)
                if os.path.exists(done):
                    finish(name, _reuse(name, command_line(cmd), done, stages))
                    continue
                print(f"[{name}] started: {command_line(cmd)}", flush=True)
                with open(os.path.join(log_dir, f"{name}.log"), "wb") as log:  # the child keeps its own copy
                    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
                running[name] = (proc, time.time(), cmd)
            time.sleep(0.5)
            for name, (proc, t0, cmd) in list(running.items()):
                rc = proc.poll()
                late = rc is None and timeout_s is not None and time.time() - t0 > timeout_s
                if rc is None and not late:
                    continue
                rc = _stop(proc) if late else rc
                _kill_group(proc)  # what the job started and left running goes with it
                del running[name]
                why = _record(name, command_line(cmd), t0, rc, late, timeout_s,
                              os.path.join(log_dir, f"{name}.log"), stages)
                if why is not None:
                    print(f"error: {why}", file=sys.stderr, flush=True)
                else:
                    print(f"[{name}] done in {stages[name]['seconds']} s", flush=True)
                finish(name, why is None)
    finally:
        for proc, _, _ in running.values():  # all at once: one grace period, not one per job
            if proc.poll() is None:
                proc.terminate()
        deadline = time.time() + STOP_GRACE_S
        try:
            for proc, _, _ in running.values():
                _stop(proc, deadline)
        finally:  # a second Ctrl-C in one job's grace period: every job's group goes, not that one's alone
            for proc, _, _ in running.values():
                _kill_group(proc)
    return ok


STOP_GRACE_S = 30


def _stop(proc, deadline: float | None = None) -> int:
    """SIGTERM to the stage (run_pretraining then saves a checkpoint and stops; other scripts just end), then, once
    it has ended or STOP_GRACE_S (or `deadline`, a time.time()) has passed, SIGKILL to its whole process group. The
    stages start in their own session, so the group holds what they started too, such as DataLoader workers, which
    ignore SIGTERM and would keep the stage's output pipe open after it ended. An interrupt while waiting (a second
    Ctrl-C) kills the group at once. The exit code."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=max(0.0, (deadline or time.time() + STOP_GRACE_S) - time.time()))
    except subprocess.TimeoutExpired:
        pass
    finally:  # a second Ctrl-C lands here too, and goes on up once the group is killed
        _kill_group(proc)
    return proc.wait()


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing left in it
        pass


def exit_on_termination():
    """SIGTERM and SIGHUP end this process through SystemExit(128 + signal), so that run_stage's and
    run_stages_parallel's clean-up stops the stages, which run in their own sessions and do not get the signal.
    For the scripts' entry points (not for main(), which tests call in their own process)."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)

"""The quickstart end to end at a tiny budget: every stage leaves its output, results.json has both rows seed by
seed, and a re-run reuses the finished stages instead of redoing them."""
import json
import os
import shutil
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import quickstart  # noqa: E402
SMOKE = ["--max_corpus_mb", "0.3", "--vocab_size", "2000", "--ft_epochs", "1", "--max_train_examples", "96",
         "--max_eval_examples", "64", "--device", "cpu"]


def run_quickstart(out, steps=20, seeds="1-2"):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "quickstart.py", "--output_dir", str(out), *SMOKE, "--pretrain_steps",
                           str(steps), "--ft_seeds", seeds], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def rerun(capsys, out, steps=20, seeds="1-2"):
    """quickstart.main in this process, for the re-runs whose stages are cached or refused (a process each would
    start torch, scipy and matplotlib again): (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        quickstart.main(["--output_dir", str(out), *SMOKE, "--pretrain_steps", str(steps), "--ft_seeds", seeds])
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_quickstart_smoke_and_cache(tmp_path, capsys):
    out = tmp_path / "qs"
    proc = run_quickstart(out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    paths = ["vocab.txt", "shards/meta.json", "pretrain/DONE", "pretrain/log.jsonl", "pretrain_loss.png",
             "finetune_dev.png", "results.json"]
    for name in ("pretrained", "scratch"):
        paths += [f"korsts_{name}/seed_grid.json"] + [f"korsts_{name}/seed-{s}/{f}" for s in (1, 2) for f in
                                                      ("best/model.safetensors", "test/eval_results.json")]
    for path in paths:
        assert (out / path).exists(), path
    res = json.loads((out / "results.json").read_text())
    tested = {}
    for name in ("pretrained", "scratch"):
        tests = tested[name] = [json.loads((out / f"korsts_{name}" / f"seed-{s}" / "test" / "eval_results.json")
                                           .read_text()) for s in (1, 2)]
        assert all(t["examples"] == 64 and t["checkpoint"].endswith(f"seed-{s}/best") for s, t in zip((1, 2), tests))
        assert [v["test_spearman"] for v in res[name]["seeds"].values()] == [t["spearman"] for t in tests]
        assert res[name]["spearman"] == pytest.approx(statistics.mean(t["spearman"] for t in tests))
        assert res[name]["spearman_std"] == pytest.approx(statistics.stdev(t["spearman"] for t in tests))
        grid = json.loads((out / f"korsts_{name}" / "seed_grid.json").read_text())
        assert res[name]["dev_spearman_mean"] == grid["dev_spearman_mean"]
        best = grid["best_seed_on_dev"]
        assert res[name]["test_spearman_of_best_seed_on_dev"] == tests[best - 1]["spearman"]
    diff = res["pretrained_minus_scratch"]["test_spearman_per_seed"]
    assert diff == {str(s): p["spearman"] - c["spearman"]
                    for s, p, c in zip((1, 2), tested["pretrained"], tested["scratch"])}
    # a step count, not a time budget, ended pretraining: exactly that many steps
    assert res["pretraining"]["steps"] == 20 and res["pretraining"]["loss_start"] > 0
    # the "pretrained" row really started from the pretraining checkpoint, the control from nothing
    pre_args = json.loads((out / "korsts_pretrained" / "seed_grid.json").read_text())["args"]
    scratch_args = json.loads((out / "korsts_scratch" / "seed_grid.json").read_text())["args"]
    assert pre_args["checkpoint"].endswith("pretrain/checkpoints/step-20") and scratch_args["checkpoint"] is None
    assert pre_args["seeds"] == scratch_args["seeds"] == "1-2" and pre_args["group_by_length"]
    stages = {"vocab", "shards", "pretrain", "finetune_pretrained", "finetune_scratch"}
    stages |= {f"test_{name}_seed{s}" for name in ("pretrained", "scratch") for s in (1, 2)}
    assert set(res["stages_seconds"]) == stages
    shards_mtime = os.path.getmtime(out / "shards" / "meta.json")

    code, stdout, stderr = rerun(capsys, out)
    assert code == 0, stderr[-2000:]
    assert stdout.count("cached") == len(stages)
    assert os.path.getmtime(out / "shards" / "meta.json") == shards_mtime
    assert json.loads((out / "results.json").read_text())["pretrained"] == res["pretrained"]
    assert "warning" not in stderr

    # a stage cached from another command line is used, but not silently
    code, stdout, stderr = rerun(capsys, out, steps=30)
    assert code == 0 and stdout.count("cached") == len(stages)
    assert "stage 'pretrain' is cached from another command line (before: python run_pretraining.py" in stderr
    assert "--max_steps 20" in stderr and stderr.count("warning") == 1
    # a folder of an older quickstart, which recorded no command lines: its step count is checked
    stage_file = out / "stages.json"
    stage_file.write_text(json.dumps({k: {"seconds": 1.0} for k in stages}))
    code, stdout, stderr = rerun(capsys, out, steps=30)
    assert code == 0
    assert "ended at step-20, not at step 30 (another run's settings)" in stderr
    # other seeds than the cached fine-tuning holds: one line, not a crash in a later stage
    code, stdout, stderr = rerun(capsys, out, seeds="1-3")
    assert code == 2
    assert stderr.strip().endswith("holds the fine-tuning of seeds 1, 2 (another run's), not --ft_seeds 1-3: "
                                   "delete it to fine-tune again")
    # a finished stage's output cut outside the pipeline: one line naming it, not a JSONDecodeError traceback; the
    # record of the commands run is only warned about
    test_json = out / "korsts_scratch" / "seed-1" / "test" / "eval_results.json"
    whole = test_json.read_bytes()
    test_json.write_bytes(whole[:20])
    (out / "stages.json").write_text('{"vocab": {"sec')
    code, stdout, stderr = rerun(capsys, out)
    assert code == 2 and "stages.json is unreadable" in stderr
    last = stderr.strip().splitlines()[-1]
    assert "korsts_scratch/seed-1/test/eval_results.json is unreadable (" in last
    assert last.endswith("): delete it to run the stage that wrote it again")
    test_json.write_bytes(whole)
    # pretraining made again: the fine-tuning built on the earlier one, finished or not (here: no seed_grid.json,
    # its seeds' results still there), is not reused as if it were this one's
    shutil.rmtree(out / "pretrain")
    (out / "korsts_pretrained" / "seed_grid.json").unlink()
    code, stdout, stderr = rerun(capsys, out)
    assert code == 2 and (out / "pretrain" / "DONE").exists()
    assert stderr.strip().endswith("korsts_pretrained was made from the earlier pretrain stage's output, which "
                                   "this run made again: delete it to redo it")


def test_pretraining_stops_by_steps_or_by_wall_time():
    assert quickstart.pretrain_stop_flags(dict(quickstart.CPU)) == ["--max_steps", "1400"]
    assert quickstart.pretrain_stop_flags(dict(quickstart.CPU, pretrain_steps=None, budget_minutes=2.5)) == [
        "--max_steps", "1000000", "--max_time_minutes", "2.5", "--schedule_by_time"]
    assert quickstart.pretrain_stop_flags(dict(quickstart.GPU))[2:4] == ["--max_time_minutes", "10.0"]


def test_pretraining_command_on_each_device(tmp_path):
    """The CPU command keeps its one loader worker, eager; the GPU one compiles with CUDA graphs and leaves the
    workers to run_pretraining's default. Both pass run_pretraining's own checks."""
    from pretraining_start import check_args
    from run_pretraining import build_parser
    (tmp_path / "meta.json").write_text("{}", encoding="utf-8")
    for d, device_flags, want in ((quickstart.CPU, ["--no_cuda"], (1, False, "default")),
                                  (quickstart.GPU, [], (None, True, "reduce-overhead"))):  # None: the default
        cmd = quickstart.pretrain_command("python", dict(d), "c.json", str(tmp_path), "out", 42, device_flags)
        args = build_parser().parse_args(cmd[2:])
        check_args(args)  # raises ValueError on a combination it refuses
        assert (args.num_workers, args.compile, args.compile_mode) == want
        assert (args.train_batch_size, args.amp) == (d["batch"], d["amp"])
        assert args.resume == "auto"  # a re-run after an interruption continues from the last checkpoint


@pytest.mark.parametrize("argv, message", [
    (["--pretrain_steps", "5", "--budget_minutes", "1"], "not allowed with argument"),
    (["--pretrain_steps", "0"], "--pretrain_steps 0: must be at least 1"),
    (["--budget_minutes", "0"], "--budget_minutes 0.0: must be positive"),
    (["--ft_seeds", "1-x"], "--ft_seeds '1-x': expected ranges and lists like 1-10 or 1,3,5"),
    (["--max_corpus_mb", "-1"], "--max_corpus_mb -1.0: must be a positive number"),
    (["--device", "cuda"], "--device cuda: no CUDA device is visible here"),  # the GPU recipe ran on the CPU
    # fine-tuning's values failed only after the pretraining they follow
    (["--ft_epochs", "0"], "--ft_epochs 0: must be at least 1"),
    (["--max_train_examples", "0"], "--max_train_examples 0: must be at least 1"),
    (["--max_eval_examples", "-1"], "--max_eval_examples -1: must be at least 1"),
    (["--vocab_size", "2"], "--vocab_size 2: must be at least 6"),
    (["--output_dir", "{tmp}/a_file/qs"], "a_file is a file"),
])
def test_bad_flags_fail_before_anything_is_written(tmp_path, capsys, monkeypatch, argv, message):
    out = tmp_path / "qs"
    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(quickstart.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        quickstart.main(["--output_dir", str(out), "--device", "cpu", *[a.format(tmp=tmp_path) for a in argv]])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_steps_done_come_from_done_not_the_last_log_row(tmp_path):
    """A time budget stops between two log rows (every 10 steps): the summary's step count is DONE's (it was the
    last logged step, 10 where 13 were trained)."""
    rows = [{"step": 10, "loss": 8.1}]
    assert quickstart.steps_done(str(tmp_path), rows) == 10  # no DONE: the log is all there is
    assert quickstart.steps_done(str(tmp_path), [{"step": 5}, {"step": 10}, {"step": 15}]) == 15  # its last row
    assert quickstart.steps_done(str(tmp_path), []) is None
    (tmp_path / "DONE").write_text(json.dumps({"step": 13, "checkpoint": "step-13"}))
    assert quickstart.steps_done(str(tmp_path), rows) == 13


def test_corpus_slice_is_a_prefix_cut_at_a_document_end(tmp_path):
    """--max_corpus_mb: the slice is the corpus's first bytes, continued to the end of the document the limit falls
    in (a blank line), so no document is cut in half; each file still ends its last document."""
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("첫 문서 첫 줄\n첫 문서 둘째 줄\n\n둘째 문서 한 줄\n둘째 문서 끝\n\n셋째 문서\n", encoding="utf-8")
    b.write_text("다른 파일 문서\n", encoding="utf-8")
    whole = a.read_text(encoding="utf-8") + "\n" + b.read_text(encoding="utf-8") + "\n"
    for n_bytes in range(1, len(whole.encode("utf-8")) + 2):
        out = tmp_path / f"slice_{n_bytes}.txt"
        quickstart._write_corpus_slice([str(a), str(b)], str(out), n_bytes)
        text = out.read_text(encoding="utf-8")
        assert len(text.encode("utf-8")) >= min(n_bytes, len(whole.encode("utf-8")))
        core = text.rstrip("\n") + "\n"  # then a blank line: the document's end, or the end of the corpus
        assert whole.startswith(core) and whole[len(core):][:1] in ("\n", ""), (n_bytes, text)


def test_flags_reach_the_stage_command_lines(tmp_path, monkeypatch):
    """--vocab_size (and the other overrides) change the commands the stages run, not only the defaults' table."""
    commands = {}

    class Stop(Exception):
        pass

    def record(name, cmd, *args, **kwargs):
        commands[name] = cmd
        raise Stop

    monkeypatch.setattr(quickstart, "run_stage", record)
    with pytest.raises(Stop):
        quickstart.main(["--output_dir", str(tmp_path / "qs"), "--device", "cpu", "--vocab_size", "1234"])
    cmd = commands["vocab"]
    assert cmd[cmd.index("--vocab_size") + 1] == "1234"

"""The quickstart end to end at a tiny budget: every stage leaves its output, results.json has both rows, and a
re-run reuses the finished stages instead of redoing them."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--max_corpus_mb", "0.3", "--vocab_size", "2000", "--budget_minutes", "0.1", "--ft_epochs", "1",
         "--max_train_examples", "96", "--max_eval_examples", "64", "--device", "cpu"]


def run_quickstart(out):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "quickstart.py", "--output_dir", str(out), *SMOKE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_quickstart_smoke_and_cache(tmp_path):
    out = tmp_path / "qs"
    proc = run_quickstart(out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for path in ["vocab.txt", "shards/meta.json", "pretrain/DONE", "pretrain/log.jsonl",
                 "korsts_pretrained/best/model.safetensors", "korsts_pretrained/eval_results.json",
                 "korsts_pretrained/test/eval_results.json", "korsts_scratch/best/model.safetensors",
                 "korsts_scratch/test/eval_results.json", "pretrain_loss.png", "finetune_dev.png", "results.json"]:
        assert (out / path).exists(), path
    res = json.loads((out / "results.json").read_text())
    for name in ("pretrained", "scratch"):
        assert -100 <= res[name]["spearman"] <= 100
        test = json.loads((out / f"korsts_{name}" / "test" / "eval_results.json").read_text())
        assert res[name]["spearman"] == test["spearman"] and test["examples"] == 64
    assert res["pretraining"]["steps"] >= 1 and res["pretraining"]["loss_start"] > 0
    # the "pretrained" row really started from the pretraining checkpoint, the control from nothing
    pre_args = json.loads((out / "korsts_pretrained" / "eval_results.json").read_text())["args"]
    scratch_args = json.loads((out / "korsts_scratch" / "eval_results.json").read_text())["args"]
    assert "pretrain/checkpoints/step-" in pre_args["checkpoint"] and scratch_args["checkpoint"] is None
    assert set(res["stages_seconds"]) == {"vocab", "shards", "pretrain", "finetune_pretrained", "test_pretrained",
                                          "finetune_scratch", "test_scratch"}
    shards_mtime = os.path.getmtime(out / "shards" / "meta.json")

    again = run_quickstart(out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("cached") == 7
    assert os.path.getmtime(out / "shards" / "meta.json") == shards_mtime
    assert json.loads((out / "results.json").read_text())["pretrained"] == res["pretrained"]

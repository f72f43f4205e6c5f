"""Shared by the classifier script tests (test_classifier_scripts.py, test_classifier_training.py): data paths,
command lines and readers. The fixtures built on them (cls_env, korsts_run) are in conftest.py."""
import json
import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STS_DIR = os.path.join(ROOT, "data", "korsts")
NLI_DIR = os.path.join(ROOT, "data", "kornli")
STS_TRAIN = os.path.join(STS_DIR, "sts-train.tsv")
NLI_DEV = os.path.join(NLI_DIR, "xnli.dev.ko.tsv")


def train_argv(cls_env, out, *extra, task="korsts", n_train=64, epochs=1):
    data = ["--data_dir", STS_DIR] if task == "korsts" else ["--data_dir", NLI_DIR, "--train_file", NLI_DEV]
    return ["--task_name", task, *data, "--config_file", cls_env["config"], "--vocab_file", cls_env["vocab"],
            "--max_train_examples", str(n_train), "--max_eval_examples", "100", "--num_train_epochs", str(epochs),
            "--train_batch_size", "16", "--learning_rate", "1e-3", "--seed", "7", "--num_workers", "0",
            "--logging_steps", "2", "--no_cuda", "--output_dir", str(out), *extra]


def eval_argv(ckpt, task="korsts", *extra):
    return ["--task_name", task, "--data_dir", STS_DIR if task == "korsts" else NLI_DIR, "--checkpoint", str(ckpt),
            "--max_eval_examples", "100", "--no_cuda", *extra]


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_predictions(path):
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "guid\tgold\tprediction" and lines[-1] == ""
    return [line.split("\t") for line in lines[1:-1]]


def copy_checkpoint(src, dst, **task_json):
    """A copy of a checkpoint dir, with task.json fields overridden."""
    shutil.copytree(src, dst)
    meta = read_json(dst / "task.json")
    (dst / "task.json").write_text(json.dumps({**meta, **task_json}), encoding="utf-8")
    return dst

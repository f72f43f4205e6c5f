"""Helpers for the run_pretraining.py tests (test_run_pretraining.py, test_run_pretraining_inputs.py, test_ddp.py):
shards built from ~200 KB of the bundled Korean text (once per session: conftest.py's pretrain_data), the command
line, and readers of a run's log, weights and train state."""
import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import create_pretraining_data  # noqa: E402
import tokenization  # noqa: E402
from fileio import read_jsonl  # noqa: E402

TEXT = os.path.join(ROOT, "data", "korean_text")


def prepare_pretraining_data(base):
    """vocab (1000 pieces), shards of ~200 KB and of ~5 KB (a few steps per epoch), tiny configs. Cached on disk,
    so test_ddp.py reuses what this module built in the same session."""
    d = base / "pretrain_data"
    if (d / "ready").exists():
        return d
    d.mkdir(exist_ok=True)
    files = [os.path.join(TEXT, "konlpy", "kolaw", "constitution.txt")]
    kobill = os.path.join(TEXT, "konlpy", "kobill")
    files += sorted(os.path.join(kobill, f) for f in os.listdir(kobill))
    text = "".join(open(f, encoding="utf-8").read().replace("\r\n", "\n") + "\n\n" for f in files)
    with open(os.path.join(TEXT, "boddari", "wikinews.txt"), encoding="utf-8") as f:
        text += f.read(20000).rsplit("\n", 1)[0] + "\n"
    (d / "corpus.txt").write_text(text, encoding="utf-8")
    (d / "small.txt").write_text(text[:4000].rsplit("\n", 1)[0] + "\n", encoding="utf-8")
    tokenization.main(["build-vocab", "--corpus", str(d / "corpus.txt"), "--vocab_size", "1000",
                       "--output", str(d / "vocab.txt")])
    for name, corpus in (("shards", "corpus.txt"), ("small_shards", "small.txt")):
        create_pretraining_data.main(["--input_files", str(d / corpus), "--vocab_file", str(d / "vocab.txt"),
                                      "--output_dir", str(d / name), "--sentence_splitter", "regex",
                                      "--num_workers", "1"])
    cfg = json.load(open(os.path.join(ROOT, "models", "configs", "tiny.json")))
    cfg["vocab_size"] = sum(1 for _ in open(d / "vocab.txt", encoding="utf-8"))
    (d / "tiny.json").write_text(json.dumps(cfg))
    nodrop = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (d / "tiny_nodrop.json").write_text(json.dumps(cfg | nodrop))
    (d / "ready").write_text("")
    return d


def argv(data, out, config="tiny.json", shards="shards", **flags):
    a = {"config_file": data / config if config else None, "input_dir": data / shards, "output_dir": out,
         "max_seq_length": 64, "max_predictions_per_seq": 10, "train_batch_size": 8, "learning_rate": 1e-3,
         "max_steps": 8, "log_steps": 1, "save_steps": 4, "num_workers": 0, "seed": 1, "no_cuda": True}
    a.update(flags)
    out = []
    for k, v in a.items():
        if v is None:
            continue
        out += [f"--{k}"] if v is True else [f"--{k}", str(v)]
    return out


def rows(out):
    return read_jsonl(os.path.join(out, "log.jsonl"))


def weights(out, step):
    return load_file(os.path.join(out, "checkpoints", f"step-{step}", "model.safetensors"))


def train_state(out, step):
    return torch.load(os.path.join(out, "checkpoints", f"step-{step}", "train_state.pt"), weights_only=True)


def latest(out):
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        return f.read().strip()


def assert_same_run(rows_a, rows_b, steps, tol=1e-6):
    a = {r["step"]: r for r in rows_a}
    b = {r["step"]: r for r in rows_b}
    for s in steps:
        for k in ("loss", "mlm_loss", "sop_loss", "grad_norm", "lr"):
            assert b[s][k] == pytest.approx(a[s][k], rel=tol, abs=tol), (s, k)


def assert_same_weights(wa, wb, tol=1e-6):
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=tol, msg=k)


# ----------------------------------------------------------------------------------------------------------------


def snapshot(d):
    return {os.path.join(r, f): os.stat(os.path.join(r, f)).st_mtime_ns for r, _, fs in os.walk(d) for f in fs}

"""Fixtures shared by several test modules: the classifier scripts' tiny model files and one KorSTS run trained
once per session (read by test_classifier_scripts.py and test_classifier_training.py); the QA scripts' model files
and KorQuAD slices, and one run_qa run (read by test_run_qa.py and test_eval_qa.py); the pretraining shards and a
finished run_pretraining run (test_run_pretraining.py, test_run_pretraining_inputs.py, test_ddp.py)."""
import json
import os
import sys

import pytest
import torch

import pretraining_helpers
import qa_helpers
from cls_helpers import ROOT, train_argv
from helpers import tiny_model_files

sys.path.insert(0, ROOT)

import run_classifier  # noqa: E402
import run_pretraining  # noqa: E402
import run_qa  # noqa: E402


@pytest.fixture(scope="session")
def cls_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls_scripts")
    lines = []
    for name, n in (("unlabeled_comments_5.txt", 3000), ("boddari/wikinews.txt", 1500)):
        with open(os.path.join(ROOT, "data", "korean_text", name), encoding="utf-8") as f:
            lines += [f.readline() for _ in range(n)]
    vocab, config, nodrop = tiny_model_files(d, "".join(lines), 3000)
    return {"dir": d, "vocab": vocab, "config": config, "nodrop": nodrop}


@pytest.fixture(scope="session")
def korsts_run(cls_env):
    out = cls_env["dir"] / "korsts"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")  # an unrelated file already in the output dir
    # one thread, as helpers.one_thread gives the modules that use it: a session fixture is set up before theirs
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = run_classifier.main(train_argv(cls_env, out, "--do_eval", "--do_test", n_train=200, epochs=2))
    finally:
        torch.set_num_threads(before)
    return out, results


@pytest.fixture(scope="session")
def qa_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa_scripts")
    with open(os.path.join(ROOT, "data", "korean_text", "boddari", "wikinews.txt"), encoding="utf-8") as f:
        vocab, config, nodrop = tiny_model_files(d, "".join(f.readline() for _ in range(3000)), 4000)
    with open(qa_helpers.DEV, encoding="utf-8") as f:
        dev = json.load(f)
    return {"dir": d, "vocab": vocab, "config": config, "nodrop": nodrop, "dev": dev,
            "train": qa_helpers.slice_file(d / "train.json", dev["data"][:3], 40),
            "eval": qa_helpers.slice_file(d / "eval.json", dev["data"][10:13], 30)}


@pytest.fixture(scope="session")
def qa_trained(qa_env):
    out = qa_env["dir"] / "run_a"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")  # an unrelated file already in the output dir
    before = torch.get_num_threads()  # one thread, as for korsts_run
    torch.set_num_threads(1)
    try:
        results = run_qa.main(qa_helpers.train_argv(qa_env, out))
    finally:
        torch.set_num_threads(before)
    return out, results


@pytest.fixture(scope="session")
def korean_shards(tmp_path_factory):
    """Shards of about 0.67 MB of real Korean text (news, a report, the constitution) in 40k-token shards
    (test_pretraining_data.py, test_pretraining_loader.py)."""
    import create_pretraining_data
    from helpers import KOREAN_TEXT, text_lines, wikinews_vocab
    d = tmp_path_factory.mktemp("pd")
    vocab = wikinews_vocab(d, 3000, 4000)
    text = text_lines("boddari/wikinews.txt", 3000, 4187) + [""] + text_lines("boddari/unesco_report.txt", 0, 700)
    (d / "c.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    out = str(d / "shards")
    create_pretraining_data.main(["--input_files", str(d / "c.txt"),
                                  os.path.join(KOREAN_TEXT, "konlpy/kolaw/constitution.txt"), "--vocab_file", vocab,
                                  "--output_dir", out, "--sentence_splitter", "regex", "--num_workers", "1",
                                  "--shard_size_tokens", "40000"])
    return out


@pytest.fixture(scope="session")
def pretrain_data(tmp_path_factory):
    """Shards, vocab and tiny configs (pretraining_helpers.prepare_pretraining_data)."""
    return pretraining_helpers.prepare_pretraining_data(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def pretrain_run(pretrain_data, tmp_path_factory):
    """60 steps, checkpoints every 20, keeping 2: a finished run to read, resume from or refuse to overwrite (once
    per module that asks: the modules that use it run with one thread, helpers.one_thread)."""
    out = tmp_path_factory.mktemp("trained")
    assert run_pretraining.main(pretraining_helpers.argv(
        pretrain_data, out, train_batch_size=16, learning_rate=3e-3, warmup_proportion=0.05, max_steps=60,
        save_steps=20, keep_last=2)) == 0
    return out

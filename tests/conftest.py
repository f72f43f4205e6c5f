"""Fixtures shared by several test modules: the classifier scripts' tiny model files and one KorSTS run trained
once per session (read by test_classifier_scripts.py and test_classifier_training.py); the QA scripts' model files
and KorQuAD slices, and one run_qa run (read by test_run_qa.py and test_eval_qa.py)."""
import json
import os
import sys

import pytest
import torch

import qa_helpers
from cls_helpers import ROOT, train_argv
from helpers import tiny_model_files

sys.path.insert(0, ROOT)

import run_classifier  # noqa: E402
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

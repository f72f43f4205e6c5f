"""Assertions shared by the script tests."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest


KOREAN_TEXT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "korean_text")


def text_lines(rel, start=0, stop=None):
    """Lines [start, stop) of a bundled Korean text file (path relative to data/korean_text)."""
    with open(os.path.join(KOREAN_TEXT, rel), encoding="utf-8") as f:
        return f.read().splitlines()[start:stop]


# torch.compile's CPU backend generates C++ and builds it with the system compiler
needs_cxx = pytest.mark.skipif(not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++")),
                               reason="torch.compile on the CPU needs a C++ compiler (g++)")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """For modules that train a 64-wide model: it gains nothing from intra-op threads, and on a shared 2-core
    machine spinning OpenMP workers make each step an order of magnitude slower. Import it to use it."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def file_digests(root):
    """{relative path: sha256} of every file under root: proves a failed run left earlier outputs untouched."""
    return {os.path.relpath(os.path.join(dp, f), root): hashlib.sha256(open(os.path.join(dp, f), "rb").read()).digest()
            for dp, _, files in os.walk(root) for f in files}


def expect_fail(capsys, fn, argv, *needles, alone=False):
    """The script exits 2 with one 'error:' line naming what is wrong, and no traceback; returns that line.
    alone=True: that line is all it wrote to stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    if alone:
        assert err.strip() == errors[0], err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def wikinews_vocab(d, n_lines, vocab_size):
    """d/vocab.txt, a WordPiece vocab of vocab_size pieces built on the first n_lines Wikinews lines; its path.
    Inputs for shards are then taken from the lines after n_lines, which the vocab never saw."""
    import tokenization

    vocab_src = d / "vocab_corpus.txt"
    vocab_src.write_text("\n".join(text_lines("boddari/wikinews.txt", 0, n_lines)) + "\n", encoding="utf-8")
    vocab = str(d / "vocab.txt")
    tokenization.main(["build-vocab", "--corpus", str(vocab_src), "--vocab_size", str(vocab_size), "--output", vocab])
    return vocab


def corpus_prep_files(d):
    """For create_pretraining_data's tests, in folder d: a 4000-piece vocab from 3000 Wikinews lines, and two inputs,
    held-out Wikinews lines (blank lines between documents) and the CRLF constitution."""
    vocab = wikinews_vocab(d, 3000, 4000)
    news = d / "news.txt"
    news.write_text("\n".join(text_lines("boddari/wikinews.txt", 3000, 3700)) + "\n", encoding="utf-8")
    return {"dir": d, "vocab": vocab, "inputs": [str(news), os.path.join(KOREAN_TEXT, "konlpy/kolaw/constitution.txt")]}


def tiny_config(**kw):
    """models/configs/tiny.json (2 layers x 64 hidden, vocab 1000) as a BertConfig, with kw replaced."""
    import dataclasses

    from models.config import BertConfig
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dataclasses.replace(BertConfig.from_json_file(os.path.join(root, "models", "configs", "tiny.json")), **kw)


def tiny_batch():
    """(input_ids, token_type_ids, attention_mask) [2, 10] for the tiny config, the second row padded after 6."""
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, tiny_config().vocab_size, (2, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, torch.zeros_like(ids), mask


def tiny_model_files(d, corpus_text, vocab_size):
    """A WordPiece vocab built (through the CLI) on corpus_text, and models/configs/tiny.json sized to it, with
    and without dropout, all under d. Returns (vocab, config, config_without_dropout) paths as strings."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (d / "corpus.txt").write_text(corpus_text, encoding="utf-8")
    vocab = d / "vocab.txt"
    proc = subprocess.run([sys.executable, os.path.join(root, "tokenization.py"), "build-vocab", "--corpus",
                           str(d / "corpus.txt"), "--vocab_size", str(vocab_size), "--output", str(vocab)],
                          cwd=root, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(root, "models", "configs", "tiny.json"), encoding="utf-8") as f:
        config = {**json.load(f), "vocab_size": len(vocab.read_text(encoding="utf-8").splitlines())}
    (d / "tiny.json").write_text(json.dumps(config))
    (d / "tiny_nodrop.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.0,
                                                    "attention_probs_dropout_prob": 0.0}))
    return str(vocab), str(d / "tiny.json"), str(d / "tiny_nodrop.json")


def record_graph_steps(monkeypatch, model_cls):
    """Stand-ins for torch.compile (the model itself; the mode is recorded) and for the CUDA-graph step mark, and a
    spy on model_cls.forward, so that --compile_mode reduce-overhead runs eagerly on the CPU and shows its marks.
    Returns (modes, events): events in order, "mark", "forward" (training) or "eval"."""
    import torch
    modes, events = [], []
    forward = model_cls.forward

    def spy(self, *a, **k):
        events.append("forward" if self.training else "eval")
        return forward(self, *a, **k)
    monkeypatch.setattr(model_cls, "forward", spy)
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or model)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: events.append("mark"))
    return modes, events


def overflowing_scaler(first_k):
    """fp16's loss scaler as the training loops use it (their --amp fp16 needs CUDA), on the CPU: the gradients of
    its first `first_k` steps overflow (one is set to inf before unscale_, where a real overflow would show), so the
    real GradScaler skips those steps and halves its scale, as under fp16."""
    import torch

    class OverflowingScaler(torch.amp.GradScaler):
        def __init__(self):
            super().__init__("cpu")
            self.left = first_k

        def unscale_(self, optimizer):
            if self.left:
                self.left -= 1
                next(p for g in optimizer.param_groups for p in g["params"] if p.grad is not None).grad.fill_(
                    float("inf"))
            return super().unscale_(optimizer)
    return OverflowingScaler()


def patch_epoch_1(monkeypatch, per_rank=None, error=None):
    """PretrainingDataset.set_epoch with epoch 1 holding only `per_rank` examples, or raising ValueError(error)
    (every other epoch as built)."""
    from pretraining_data import PretrainingDataset
    set_epoch = PretrainingDataset.set_epoch

    def patched(self, epoch):
        if epoch == 1 and error is not None:
            raise ValueError(error)
        set_epoch(self, epoch)
        if epoch == 1 and per_rank is not None:
            self._per_rank = per_rank
    monkeypatch.setattr(PretrainingDataset, "set_epoch", patched)

"""run_qa.py end to end on real KorQuAD dev slices with a tiny model on the CPU: outputs, determinism,
accumulation and ranks, compilation, grouping, bad input. eval_qa.py's own tests: test_eval_qa.py.

The overfit test is the functional proof: a model that memorises a handful of questions must get EM 100 through
the whole path (features -> training labels -> logits -> n-best post-processing -> official metric).
"""
import functools
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import eval_qa  # noqa: E402
import run_qa  # noqa: E402
from helpers import (expect_fail, file_digests, needs_cxx, one_thread, overflowing_scaler,  # noqa: E402,F401
                     record_graph_steps)
from qa_helpers import question_ids, train_argv  # noqa: E402


def test_run_qa_writes_checkpoints_logs_and_dev_predictions(qa_env, qa_trained):
    out, results = qa_trained
    assert (out / "notes.txt").read_text() == "keep me"
    for name in ("epoch-1", "final", "best"):
        assert {"model.safetensors", "config.json", "vocab.txt"} <= set(os.listdir(out / name))
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no half-written checkpoint left behind
    rows = [json.loads(line) for line in open(out / "log.jsonl", encoding="utf-8")]
    steps = [r for r in rows if "loss" in r]
    assert steps[-1]["step"] == results["total_steps"] and all(r["lr"] >= 0 and r["loss"] > 0 for r in steps)
    assert steps[-1]["lr"] == 0.0  # linear decay ends at zero on the last step
    preds = json.load(open(out / "epoch-1" / "predictions.json", encoding="utf-8"))
    assert list(preds) == question_ids(qa_env["eval"])
    nbest = json.load(open(out / "epoch-1" / "nbest_predictions.json", encoding="utf-8"))
    assert set(nbest) == set(preds) and all(nbest[q][0]["text"] == preds[q] for q in preds)
    metrics = json.load(open(out / "epoch-1" / "eval_results.json", encoding="utf-8"))
    assert 0 <= metrics["exact_match"] <= metrics["f1"] <= 100 and metrics["amp"] == "no"
    assert results["epochs"][0]["dev_f1"] == metrics["f1"] and results["best_epoch"] == 1



def test_optimizer_and_scheduler_flags_reach_the_run(qa_env, tmp_path, monkeypatch):
    """--optimizer lamb --scheduler poly: LAMB steps (its trust ratio: test_classifier_training) and the lr after
    step s of T is lr * (1 - s / T) ** 0.5; the loop's clipping is the only one (LAMB gets no max_grad_norm)."""
    built, build = [], run_qa.build_optimizer

    def spy(name, groups, lr, **kw):
        built.append((name, kw.get("max_grad_norm")))
        return build(name, groups, lr, **kw)
    monkeypatch.setattr(run_qa, "build_optimizer", spy)
    out = tmp_path / "run"
    results = run_qa.main(train_argv(qa_env, out, "--optimizer", "lamb", "--scheduler", "poly",
                                     "--warmup_proportion", "0", "--logging_steps", "1"))
    assert built == [("lamb", None)]
    rows = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    total = results["total_steps"]
    assert [r["step"] for r in rows] == list(range(1, total + 1)) and total >= 2
    assert [r["lr"] for r in rows] == pytest.approx([1e-3 * (1 - s / total) ** 0.5 for s in range(1, total + 1)])



def test_a_step_the_loss_scaler_skips_leaves_the_schedule_where_it_was(qa_env, tmp_path, monkeypatch):
    """Steps fp16's loss scaler skips (their gradients overflowed) do not advance the schedule: with the first 2 of
    T skipped, the lr after step s is lr (1 - (s - 2) / T) from step 2 on."""
    scaler = overflowing_scaler(2)
    monkeypatch.setattr(run_qa.tu, "make_grad_scaler", lambda rt: scaler)
    out = tmp_path / "run"
    total = run_qa.main(train_argv(qa_env, out, "--warmup_proportion", "0", "--logging_steps", "1"))["total_steps"]
    rows = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert scaler.get_scale() == 2.0 ** 14 and total == len(rows) > 2
    assert [r["lr"] for r in rows] == pytest.approx([1e-3 * (1 - max(s - 2, 0) / total) for s in range(1, total + 1)])

def test_best_is_the_best_dev_epoch_decoded_with_the_flags(qa_env, tmp_path, monkeypatch):
    """best/ is the epoch with the best dev F1, not the last one (the other runs here train one epoch), and the dev
    answers are decoded with --n_best_size and --max_answer_length as given."""
    f1s, decoded = iter([50.0, 40.0]), []
    monkeypatch.setattr(run_qa, "score", lambda *a: ({"exact_match": 0.0, "f1": next(f1s)}, None))
    postprocess = run_qa.qa_data.postprocess_predictions

    def spy(examples, feats, start, end, n_best_size, max_answer_length):
        decoded.append((n_best_size, max_answer_length))
        return postprocess(examples, feats, start, end, n_best_size, max_answer_length)
    monkeypatch.setattr(run_qa.qa_data, "postprocess_predictions", spy)
    out = tmp_path / "run"
    results = run_qa.main(train_argv(qa_env, out, "--num_train_epochs", "2", "--n_best_size", "3",
                                     "--max_answer_length", "2"))
    assert decoded == [(3, 2), (3, 2)]
    assert results["best_epoch"] == 1
    assert json.load(open(out / "best" / "qa_train.json", encoding="utf-8"))["epoch"] == 1
    best, first, last = (load_file(str(out / d / "model.safetensors")) for d in ("best", "epoch-1", "epoch-2"))
    assert all(torch.equal(best[k], first[k]) for k in best) and not all(torch.equal(best[k], last[k]) for k in best)
    nbest = json.load(open(out / "epoch-1" / "nbest_predictions.json", encoding="utf-8"))
    assert max(len(v) for v in nbest.values()) <= 3


def test_same_seed_gives_identical_run(qa_env, qa_trained):
    out_a, results_a = qa_trained
    out_b = qa_env["dir"] / "run_b"
    results_b = run_qa.main(train_argv(qa_env, out_b))
    assert [r["train_loss"] for r in results_b["epochs"]] == [r["train_loss"] for r in results_a["epochs"]]
    for name in ("predictions.json", "nbest_predictions.json"):
        assert (out_b / "epoch-1" / name).read_bytes() == (out_a / "epoch-1" / name).read_bytes()


@pytest.mark.parametrize("last_window", ["one short micro-batch", "a full and a short micro-batch"])
def test_accumulation_gives_the_same_steps_including_a_short_last_window(qa_env, qa_trained, last_window):
    """2 x m accumulated = one batch of 2m, step for step (the gradient norm of every step is logged), also for
    the epoch's last step, which m is picked to leave short: either a single micro-batch, or a full one and a
    short one (a plain mean of the two micro-batch means would weight the short one's rows more). Dropout is
    off; each micro-batch is cut to its own longest window, which the loss does not see (padding is masked out
    of the attention and of the start/end softmax)."""
    n = qa_trained[1]["train_windows"]
    if last_window == "one short micro-batch":
        m = next(m for m in range(15, 3, -1) if 0 < n % (2 * m) <= m)
    else:
        m = next(m for m in range(15, 3, -1) if m < n % (2 * m) < 2 * m - 1)  # rows m + r, r well below m
    norms = {}
    for accum in ("1", "2"):
        out = qa_env["dir"] / f"accum_{accum}_{m}"
        argv = train_argv(qa_env, out, "--config_file", qa_env["nodrop"], "--train_batch_size", str(2 * m),
                          "--gradient_accumulation_steps", accum, "--logging_steps", "1", "--predict_file", "")
        argv.remove("--per_gpu_train_batch_size"), argv.remove("16")
        assert run_qa.main(argv)["total_steps"] == -(-n // (2 * m))
        rows = [json.loads(line) for line in open(out / "log.jsonl", encoding="utf-8")]
        norms[accum] = [r["grad_norm"] for r in rows if "grad_norm" in r]
    assert len(norms["1"]) == -(-n // (2 * m)) and norms["2"] == pytest.approx(norms["1"], rel=1e-4)


@needs_cxx
def test_compile_trains_like_eager(qa_env):
    """--compile on windows cut to each batch's width (a second compile with dynamic shapes): the same losses and
    dev predictions as eager (dropout off), scored by the plain model."""
    from torch._dynamo.utils import counters
    res = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        counters.clear()
        res[name] = run_qa.main(train_argv(qa_env, qa_env["dir"] / f"compile_{name}", "--config_file", qa_env["nodrop"],
                                           *extra))
        assert (counters["stats"]["unique_graphs"] > 0) == (name == "compiled")
    a, b = res["eager"]["epochs"][0], res["compiled"]["epochs"][0]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    assert (b["dev_exact_match"], b["dev_f1"]) == pytest.approx((a["dev_exact_match"], a["dev_f1"]), abs=0.5)


def test_compile_mode_reaches_torch_compile_and_marks_each_step(qa_env, qa_trained, monkeypatch):
    """--compile_mode reduce-overhead with stand-ins for torch.compile and the CUDA-graph step mark (graphs are made
    on a GPU only): the mode arrives, every training forward is marked, and the run is the eager one (`qa_trained`,
    the same command line without the flags)."""
    modes, events = record_graph_steps(monkeypatch, run_qa.BertForQuestionAnswering)
    res = run_qa.main(train_argv(qa_env, qa_env["dir"] / "graphs", "--compile", "--compile_mode", "reduce-overhead"))
    assert modes == ["reduce-overhead"] and res["total_steps"] == qa_trained[1]["total_steps"]
    assert [e for e in events if e != "eval"] == ["mark", "forward"] * res["total_steps"]
    assert res["epochs"][0]["train_loss"] == qa_trained[1]["epochs"][0]["train_loss"]


def test_group_by_length_trains_on_less_padding(qa_env, qa_trained, monkeypatch):
    widths = {}
    forward = run_qa.BertForQuestionAnswering.forward

    def spy(self, input_ids, *a, **k):
        if self.training:  # training batches only (evaluation keeps its own batching)
            mask = k.get("attention_mask")  # a batch of full rows comes without one
            widths.setdefault(key[0], []).append((input_ids.shape, input_ids.numel() if mask is None
                                                  else int(mask.sum())))
        return forward(self, input_ids, *a, **k)
    monkeypatch.setattr(run_qa.BertForQuestionAnswering, "forward", spy)
    key = ["random"]
    run_qa.main(train_argv(qa_env, qa_env["dir"] / "len_random"))
    key[0] = "grouped"
    results = run_qa.main(train_argv(qa_env, qa_env["dir"] / "len_grouped", "--group_by_length"))
    key[0] = "rounded"
    run_qa.main(train_argv(qa_env, qa_env["dir"] / "len_rounded", "--group_by_length", "--pad_to_multiple_of", "24"))
    # --pad_to_multiple_of reaches the training batches: grouped's widths rounded up to 24s, at most 128
    assert [s[1] for s, _ in widths.pop("rounded")] == [min(-(-s[1] // 24) * 24, 128) for s, _ in widths["grouped"]]
    real = {k: sum(n for _, n in v) for k, v in widths.items()}
    fed = {k: sum(s[0] * s[1] for s, _ in v) for k, v in widths.items()}
    # the same windows (grouping repeats a few to fill its last batch), in batches that carry less padding
    assert real["random"] <= real["grouped"] < real["random"] * 1.15
    assert fed["grouped"] / real["grouped"] < fed["random"] / real["random"]
    assert results["epochs"][0]["dev_f1"] >= 0 and results["total_steps"] == len(widths["grouped"])


def test_overfits_a_few_questions_to_em_100(qa_env):
    """6 questions whose answers start and end on token boundaries, short contexts, no dropout, high lr."""
    from tokenization import build_fast_tokenizer

    tok = build_fast_tokenizer(qa_env["vocab"])
    picked = []
    for art in qa_env["dev"]["data"][20:80]:
        para = art["paragraphs"][0]
        qa, ans = para["qas"][0], para["qas"][0]["answers"][0]
        ctx, s = para["context"], ans["answer_start"]
        e = s + len(ans["text"])
        lo = ctx.rfind(" ", 0, max(0, s - 50)) + 1
        hi = ctx.find(" ", e + 50) if ctx.find(" ", e + 50) >= 0 else len(ctx)
        offsets = tok.encode(ctx[lo:hi], add_special_tokens=False).offsets
        if any(o[0] == s - lo for o in offsets) and any(o[1] == e - lo for o in offsets):
            picked.append({"context": ctx[lo:hi], "qas": [{"id": qa["id"], "question": qa["question"],
                                                           "answers": [{"text": ans["text"], "answer_start": s - lo}]}]})
        if len(picked) == 6:
            break
    assert len(picked) == 6
    d = qa_env["dir"] / "overfit"
    d.mkdir()
    (d / "eval.json").write_text(json.dumps({"version": "KorQuAD_v1.0", "data": [{"title": "t", "paragraphs": picked}]},
                                            ensure_ascii=False), encoding="utf-8")
    # 16 copies of each question (own ids) so that an epoch is several optimizer steps
    copies = [{"context": p["context"], "qas": [{**q, "id": f"{q['id']}-{k}"} for q in p["qas"]]}
              for k in range(16) for p in picked]
    (d / "train.json").write_text(json.dumps({"version": "KorQuAD_v1.0", "data": [{"title": "t", "paragraphs": copies}]},
                                             ensure_ascii=False), encoding="utf-8")
    run_qa.main(["--config_file", qa_env["nodrop"], "--vocab_file", qa_env["vocab"],
                 "--train_file", str(d / "train.json"), "--max_seq_length", "128", "--max_query_length", "32",
                 "--per_gpu_train_batch_size", "16", "--learning_rate", "3e-3", "--num_train_epochs", "8",
                 "--warmup_proportion", "0.05", "--weight_decay", "0", "--num_workers", "0",
                 "--output_dir", str(d / "run")])
    results = eval_qa.main(["--checkpoint", str(d / "run" / "final"), "--predict_file", str(d / "eval.json"),
                            "--max_seq_length", "128", "--max_query_length", "32", "--output_dir", str(d / "eval")])
    assert results["exact_match"] == 100.0 and results["f1"] == 100.0
    gold = {p["qas"][0]["id"]: p["qas"][0]["answers"][0]["text"] for p in picked}
    assert json.load(open(d / "eval" / "predictions.json", encoding="utf-8")) == gold


# ------------------------------------------------------------------------------------------------------------
# bad input


def test_bad_training_files_fail_with_one_line(qa_env, tmp_path, capsys):
    out = tmp_path / "out"
    argv = train_argv(qa_env, out)
    i = argv.index("--train_file") + 1

    def with_train(path):
        return argv[:i] + [str(path)] + argv[i + 1:]

    expect_fail(capsys, run_qa.main, with_train(tmp_path / "missing.json"), "missing.json")
    v2 = tmp_path / "korquad2.json"
    v2.write_text(json.dumps({"version": "KorQuAD_2.0_train", "data": [{"title": "t", "context": "<p>x</p>",
                                                                       "qas": []}]}))
    expect_fail(capsys, run_qa.main, with_train(v2), "korquad2.json", "2.0")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"version": "KorQuAD_v1.0_train", "data": []}))
    expect_fail(capsys, run_qa.main, with_train(empty), "empty.json", "no questions")
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\xff not json")
    expect_fail(capsys, run_qa.main, with_train(garbage), "garbage.json")
    # a training question without an "answers" key is a broken file (a test set to predict may leave them out)
    data = json.load(open(qa_env["train"], encoding="utf-8"))
    del data["data"][0]["paragraphs"][0]["qas"][0]["answers"]
    keyless = tmp_path / "keyless.json"
    keyless.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    expect_fail(capsys, run_qa.main, with_train(keyless), "keyless.json", 'without "id" and "question" and "answers"')
    # every answer away from its answer_start: each question is skipped (with a warning), none is left to train on
    for qa in (qa for para in data["data"][0]["paragraphs"] for qa in para["qas"]):
        qa["answers"] = [{"text": "답", "answer_start": 0}]
    displaced = tmp_path / "displaced.json"
    displaced.write_text(json.dumps({"version": data["version"], "data": data["data"][:1]}, ensure_ascii=False),
                         encoding="utf-8")
    expect_fail(capsys, run_qa.main, with_train(displaced), "displaced.json", "no usable questions")
    expect_fail(capsys, run_qa.main, argv + ["--max_seq_length", "20"], "--max_seq_length")
    assert not out.exists() or not os.listdir(out)


def test_training_windows_containing_the_answer_are_counted(qa_env, tmp_path, capsys):
    """The features line counts the training windows that contain their answer: those whose context characters
    (the offsets' span) cover the answer's, counted here from the offsets alone; short windows leave some out."""
    from types import SimpleNamespace

    import numpy as np
    import qa_predict
    from models.config import BertConfig
    rt = SimpleNamespace(is_main=True, distributed=False)
    examples, feats = qa_predict.load_qa_features(
        qa_env["train"], True, 12, BertConfig.from_json_file(qa_env["config"]), qa_env["vocab"], rt,
        max_seq_length=64, doc_stride=24, max_query_length=32, cache_dir=None)
    covering = 0
    for row, ex in zip(feats.offsets, (examples[i] for i in feats.example_index)):
        on = row[:, 0] >= 0
        covering += int(row[on, 0].min() <= ex.answer_start
                        and ex.answer_start + len(ex.answer_text) <= row[on, 1].max())
    assert 0 < covering < len(feats)
    assert f"12 questions -> {len(feats)} windows ({covering} containing the answer)" in capsys.readouterr().out
    assert np.count_nonzero(feats.start_positions) == covering


def test_unlabelled_predict_file_fails_before_training(qa_env, tmp_path, capsys):
    """--predict_file is scored after every epoch: a question without a gold answer is refused up front, with
    nothing written, so the same --output_dir takes the corrected command (here: --do_predict=false)."""
    data = json.load(open(qa_env["eval"], encoding="utf-8"))
    data["data"][0]["paragraphs"][0]["qas"][1]["answers"] = []
    test_set = tmp_path / "test_set.json"
    test_set.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "run"
    argv = train_argv(qa_env, out, "--predict_file", str(test_set))
    expect_fail(capsys, run_qa.main, argv, "--predict_file", "test_set.json", "no gold answer")
    assert not out.exists() or not os.listdir(out)
    results = run_qa.main(argv + ["--do_train=True", "--do_predict=false"])
    assert (out / "final").is_dir() and not (out / "epoch-1" / "predictions.json").exists()
    assert "dev_f1" not in results["epochs"][0] and results["best_epoch"] is None


def test_google_bert_flag_spellings(qa_env, tmp_path, capsys):
    """run_squad.py's --do_train/--do_predict, bare or with absl's =True/=False, are accepted (eval_qa.py's
    --do_train as false only, run_qa.py's as true only)."""
    base = train_argv(qa_env, tmp_path / "r")
    for extra, want in ((["--do_train", "--do_predict"], (True, True)),
                        (["--do_train=True", "--do_predict=False"], (True, False)),
                        (["--do_train", "true", "--do_predict=1"], (True, True)), ([], (None, None))):
        args = run_qa.build_parser().parse_args(base + extra)
        assert (args.do_train, args.do_predict) == want, extra
    assert eval_qa.build_parser().parse_args(["--do_predict=True"]).do_predict is True
    # the classifier scripts' --eval_batch_size spells the QA scripts' --batch_size too
    assert eval_qa.build_parser().parse_args(["--eval_batch_size", "7"]).batch_size == 7
    assert run_qa.build_parser().parse_args(base + ["--eval_batch_size", "7"]).batch_size == 7
    # bert's cased command lines spell the default out; the release's say --do_lower_case alone
    assert not run_qa.build_parser().parse_args(base + ["--do_lower_case=False"]).do_lower_case
    assert run_qa.build_parser().parse_args(base + ["--do_lower_case"]).do_lower_case is True
    with pytest.raises(SystemExit) as e:
        run_qa.build_parser().parse_args(base + ["--do_train=maybe"])
    assert e.value.code == 2 and "--do_train" in capsys.readouterr().err
    expect_fail(capsys, run_qa.main, base + ["--do_train=False"], "--do_train", "eval_qa.py")
    expect_fail(capsys, run_qa.main, base + ["--do_predict", "--predict_file", ""], "--do_predict", "--predict_file")
    preds = tmp_path / "preds.json"
    preds.write_text("{}")
    expect_fail(capsys, eval_qa.main, ["--score_only", "--do_predict=false", "--predict_file", qa_env["eval"],
                                       "--prediction_json", str(preds)], "--do_predict")
    # the prediction-only spelling of a run_squad.py command line, which run_qa.py refuses for eval_qa.py
    assert eval_qa.main(["--score_only", "--do_train=False", "--do_predict=True", "--predict_file", qa_env["eval"],
                         "--prediction_json", str(preds)])["exact_match"] == 0.0
    for do_train in (["--do_train"], ["--do_train=True"]):
        expect_fail(capsys, eval_qa.main, ["--score_only", *do_train, "--predict_file", qa_env["eval"],
                                           "--prediction_json", str(preds)], "--do_train", "run_qa.py")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flags, warning", [
    # the release depended on apex: its options are accepted, warned about once, and ignored, as in run_classifier
    (["--fp16_opt_level", "O2", "--loss_scale", "0"],
     "warning: --fp16_opt_level and --loss_scale are apex options and are ignored: mixed precision is native AMP "
     "(--amp fp16 scales the loss dynamically)"),
    # the release's run_qa.py also defined these: --verbose_logging changes nothing; the threshold is a SQuAD 2.0
    # setting it never used
    (["--verbose_logging", "--null_score_diff_threshold", "0.0"],
     "warning: --null_score_diff_threshold is ignored: it is a SQuAD 2.0 setting, and KorQuAD 1.0 has no "
     "unanswerable questions")])
def test_release_flags_without_effect_are_accepted(qa_env, tmp_path, capsys, flags, warning):
    """The release's flags that mean nothing here parse, with one warning where they are ignored (the run then
    stops at a bad flag, before any training)."""
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_qa.main(train_argv(qa_env, tmp_path / "r", *flags, "--warmup_proportion", "2"))
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("warning:")] == [warning]
    assert err[-1].startswith("error: --warmup_proportion 2.0") and not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, value", [("--per_gpu_train_batch_size", "0"), ("--per_gpu_train_batch_size", "-2"),
                                         ("--train_batch_size", "0"), ("--train_batch_size", "-4")])
def test_batch_sizes_below_one_are_refused(qa_env, tmp_path, capsys, flag, value):
    argv = train_argv(qa_env, tmp_path / "r")
    i = argv.index("--per_gpu_train_batch_size")
    argv[i:i + 2] = [flag, value]
    expect_fail(capsys, run_qa.main, argv, f"{flag} {value} must be at least 1")


def test_bad_training_values_are_refused_before_anything_is_written(qa_env, tmp_path, capsys):
    """Values that would crash only in the optimizer, scheduler or loader (after run_args.json marks the folder as
    a run, so that even the corrected command was refused) or train wrong are refused up front, in one line."""
    (tmp_path / "a_file").write_text("")
    for flags, needle in ((["--warmup_proportion", "2"], "--warmup_proportion 2.0: must be in [0, 1)"),
                          (["--learning_rate", "-1"], "--learning_rate -1.0: must be >= 0"),
                          (["--num_workers", "-1"], "--num_workers -1: must be >= 0"),
                          (["--num_train_epochs", "nan"], "--num_train_epochs nan: must be a positive number"),
                          (["--max_grad_norm", "-1"], "--max_grad_norm -1.0: must be >= 0"),
                          (["--seed", "-1"], "--seed -1: must be >= 0"),
                          (["--output_dir", str(tmp_path / "a_file")], "a_file: exists and is not a directory"),
                          (["--output_dir", str(tmp_path / "a_file" / "r")], "cannot be made, ")):
        expect_fail(capsys, run_qa.main, train_argv(qa_env, tmp_path / "r", *flags), needle)
        assert not (tmp_path / "r").exists()
    # eval_qa: before the model is loaded or anything predicted
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(tmp_path / "nowhere"), "--predict_file", qa_env["eval"],
                                       "--output_dir", str(tmp_path / "a_file")], "a_file: exists and is not a dir")
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(tmp_path / "nowhere"), "--predict_file", qa_env["eval"],
                                       "--output_dir", str(tmp_path / "a_file" / "e")], "a_file is a file")


def test_pad_multiple_below_one_is_refused_before_anything_is_read(qa_env, tmp_path, capsys):
    expect_fail(capsys, run_qa.main, train_argv(qa_env, tmp_path / "r", "--pad_to_multiple_of", "0"),
                "--pad_to_multiple_of 0")
    expect_fail(capsys, run_qa.main, train_argv(qa_env, tmp_path / "r", "--layer_lr_decay", "1.2"),
                "--layer_lr_decay 1.2: must be in (0, 1]")
    expect_fail(capsys, run_qa.main, train_argv(qa_env, tmp_path / "r", "--compile_mode", "reduce-overhead"),
                "--compile_mode reduce-overhead applies to a compiled model")
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(tmp_path / "nowhere"), "--predict_file", qa_env["eval"],
                                       "--output_dir", str(tmp_path / "e"), "--pad_to_multiple_of", "-3"],
                "--pad_to_multiple_of -3")
    assert not (tmp_path / "r").exists() and not (tmp_path / "e").exists()


def test_an_unfinished_run_is_replaced_by_the_same_command(qa_env, tmp_path, capsys):
    """A run stopped before train_results.json (a time limit, Ctrl-C) left run_args.json and checkpoints: the same
    command then replaces them with a warning (it used to be refused forever); other files stay."""
    out = tmp_path / "stopped"
    (out / "epoch-1").mkdir(parents=True)
    (out / "epoch-1" / "model.safetensors").write_text("cut short")
    (out / "run_args.json").write_text("{}")
    (out / "log.jsonl").write_text('{"step": 999, "loss": 1.0}\n')
    (out / "notes.txt").write_text("keep me")
    capsys.readouterr()
    run_qa.main(train_argv(qa_env, out))
    assert "holds an unfinished run (epoch-1, log.jsonl, run_args.json): replacing it" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me" and (out / "train_results.json").exists()
    assert all(row["step"] != 999 for row in map(json.loads, (out / "log.jsonl").read_text().splitlines()))
    # never an input of the new run: continuing from the unfinished run's own epoch-1 is refused, not deleted
    (out / "train_results.json").unlink()
    expect_fail(capsys, run_qa.main, train_argv(qa_env, out, "--checkpoint", str(out / "epoch-1")),
                "--checkpoint", "epoch-1 is part of the unfinished run")
    assert (out / "epoch-1" / "model.safetensors").exists()


def test_a_killed_runs_temporary_checkpoints_are_replaced_too(qa_env, tmp_path, capsys):
    """A run killed (SIGTERM, SIGKILL) while saving a checkpoint leaves save_dir_atomically's hidden temporary
    folders, a whole checkpoint each; the same command removes them with the rest of the unfinished run (they
    used to stay for good, one more model's worth of disk per kill)."""
    out = tmp_path / "killed"
    for leftover in (".epoch-1.tmpab12cd", ".best.oldxy34zw/best"):
        (out / leftover).mkdir(parents=True)
        (out / leftover / "model.safetensors").write_text("cut short")
    (out / "run_args.json").write_text("{}")
    (out / ".notes.tmp").write_text("keep me")  # not a name this script writes
    capsys.readouterr()
    run_qa.main(train_argv(qa_env, out))
    assert ("holds an unfinished run (.best.oldxy34zw, .epoch-1.tmpab12cd, run_args.json): replacing it"
            in capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".notes.tmp"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_two_ranks_log_the_loss_of_the_whole_batch(qa_env, tmp_path):
    """Under torchrun, run_qa logs the loss over every rank's rows (rank 0's shard alone, before) and scores the
    predict file once: two CPU ranks match one process that accumulates two micro-batches of the same size, with
    length-grouped batches too (their groups used to be cut per micro-batch x ranks, so the two differed)."""
    flags = ["--config_file", qa_env["nodrop"], "--group_by_length", "--per_gpu_train_batch_size", "8"]
    one = tmp_path / "one"
    run_qa.main(train_argv(qa_env, one, *flags, "--gradient_accumulation_steps", "2"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, "run_qa.py"), *train_argv(qa_env, tmp_path / "two", *flags)]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [[r for r in map(json.loads, (d / "log.jsonl").read_text().splitlines()) if "loss" in r]
            for d in (one, tmp_path / "two")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]]
    for a, b in zip(*logs):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4) and a["grad_norm"] == pytest.approx(b["grad_norm"],
                                                                                                   rel=1e-4)
    results = [json.loads((d / "train_results.json").read_text()) for d in (one, tmp_path / "two")]
    assert results[0]["epochs"][-1]["dev_f1"] == pytest.approx(results[1]["epochs"][-1]["dev_f1"], abs=1e-6)


def test_training_batches_are_cut_to_their_longest_window_in_the_loader():
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    mask = np.zeros((6, 16), np.int8)
    for row, n in enumerate([5, 9, 3, 12, 7, 4]):
        mask[row, :n] = 1
    ids = np.arange(6 * 16, dtype=np.int32).reshape(6, 16) * mask
    data = TensorDataset(*(torch.from_numpy(a) for a in (ids, ids % 2, mask, np.arange(6), np.arange(6) + 1)))
    batches = list(DataLoader(data, batch_size=3, collate_fn=run_qa.collate_trimmed))
    assert [b[0].shape for b in batches] == [(3, 9), (3, 12)]  # each batch's own longest window
    rounded = DataLoader(data, batch_size=3, collate_fn=functools.partial(run_qa.collate_trimmed, multiple=8))
    assert [b[0].shape for b in rounded] == [(3, 16), (3, 16)]  # 9 -> 16; 12 -> 16, the stored width caps it
    for k, (i, t, m, s, e) in enumerate(batches):
        assert all(x.is_contiguous() and x.dtype == y.dtype for x, y in zip((i, t, m), (data.tensors[:3])))
        assert torch.equal(i, data.tensors[0][3 * k:3 * k + 3, :i.shape[1]]) and m.sum() == mask[3 * k:3 * k + 3].sum()
        assert s.tolist() == [3 * k, 3 * k + 1, 3 * k + 2] and e.tolist() == [3 * k + 1, 3 * k + 2, 3 * k + 3]


@pytest.mark.parametrize("logging_steps", ["1", "1000"])
def test_a_diverged_run_stops_before_saving_nan_weights(qa_env, tmp_path, capsys, logging_steps, monkeypatch):
    """lr 1e30 makes the loss NaN within a few steps: the run stops with one line at the log step that sees it or,
    with no log step in the epoch, at the epoch's end, before that epoch's checkpoints. It used to go on, save NaN
    weights as epoch-1, best and final, and exit 0."""
    seeded = []  # (and the model's dropout is reseeded per rank once it is built; a no-op in one process)
    real = run_qa.tu.seed_dropout_per_rank
    monkeypatch.setattr(run_qa.tu, "seed_dropout_per_rank", lambda seed, rt: seeded.append(seed) or real(seed, rt))
    out = tmp_path / "r"
    expect_fail(capsys, run_qa.main, train_argv(qa_env, out, "--learning_rate", "1e30", "--num_train_epochs", "2",
                                                "--logging_steps", logging_steps), "training loss is ")
    assert out.is_dir() and not any((out / d).exists() for d in ("epoch-1", "best", "final"))
    assert seeded == [7]

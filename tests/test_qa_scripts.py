"""run_qa.py / eval_qa.py end to end on real KorQuAD dev slices with a tiny model on the CPU.

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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import eval_qa  # noqa: E402
import morphology  # noqa: E402
import run_qa  # noqa: E402
from helpers import (expect_fail, file_digests, needs_cxx, one_thread, record_graph_steps,  # noqa: E402,F401
                     tiny_model_files)

DEV = os.path.join(ROOT, "data", "korquad", "KorQuAD_v1.0_dev.json")


def slice_file(path, articles, n_questions, version="KorQuAD_v1.0_dev"):
    """The first n_questions of the given dev articles as a KorQuAD file."""
    out, left = [], n_questions
    for art in articles:
        paras = []
        for p in art["paragraphs"]:
            qas = p["qas"][:left]
            left -= len(qas)
            if qas:
                paras.append({"context": p["context"], "qas": qas})
        if paras:
            out.append({"title": art["title"], "paragraphs": paras})
    path.write_text(json.dumps({"version": version, "data": out}, ensure_ascii=False), encoding="utf-8")
    return str(path)


def particle_predictions(data_file, tmp_path):
    """Every gold answer with the particle 에서 glued on (the typical error), written as a predictions file."""
    with open(data_file, encoding="utf-8") as f:
        gold = {qa["id"]: qa["answers"][0]["text"] for a in json.load(f)["data"]
                for p in a["paragraphs"] for qa in p["qas"]}
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({q: t + "에서" for q, t in gold.items()}, ensure_ascii=False), encoding="utf-8")
    return gold, preds


def question_ids(path):
    with open(path, encoding="utf-8") as f:
        return [qa["id"] for a in json.load(f)["data"] for p in a["paragraphs"] for qa in p["qas"]]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa_scripts")
    with open(os.path.join(ROOT, "data", "korean_text", "boddari", "wikinews.txt"), encoding="utf-8") as f:
        vocab, config, nodrop = tiny_model_files(d, "".join(f.readline() for _ in range(3000)), 4000)
    with open(DEV, encoding="utf-8") as f:
        dev = json.load(f)
    return {"dir": d, "vocab": vocab, "config": config, "nodrop": nodrop, "dev": dev,
            "train": slice_file(d / "train.json", dev["data"][:3], 40),
            "eval": slice_file(d / "eval.json", dev["data"][10:13], 30)}


def train_argv(env, out, *extra):
    return ["--config_file", env["config"], "--vocab_file", env["vocab"], "--train_file", env["train"],
            "--predict_file", env["eval"], "--max_seq_length", "128", "--doc_stride", "64", "--max_query_length", "32",
            "--per_gpu_train_batch_size", "16", "--learning_rate", "1e-3", "--num_train_epochs", "1", "--seed", "7",
            "--num_workers", "0", "--logging_steps", "2", "--output_dir", str(out), *extra]


@pytest.fixture(scope="module")
def trained(env):
    out = env["dir"] / "run_a"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")  # an unrelated file already in the output dir
    results = run_qa.main(train_argv(env, out))
    return out, results


def test_run_qa_writes_checkpoints_logs_and_dev_predictions(env, trained):
    out, results = trained
    assert (out / "notes.txt").read_text() == "keep me"
    for name in ("epoch-1", "final", "best"):
        assert {"model.safetensors", "config.json", "vocab.txt"} <= set(os.listdir(out / name))
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no half-written checkpoint left behind
    rows = [json.loads(line) for line in open(out / "train_log.jsonl", encoding="utf-8")]
    steps = [r for r in rows if "loss" in r]
    assert steps[-1]["step"] == results["total_steps"] and all(r["lr"] >= 0 and r["loss"] > 0 for r in steps)
    assert steps[-1]["lr"] == 0.0  # linear decay ends at zero on the last step
    preds = json.load(open(out / "epoch-1" / "predictions.json", encoding="utf-8"))
    assert list(preds) == question_ids(env["eval"])
    nbest = json.load(open(out / "epoch-1" / "nbest_predictions.json", encoding="utf-8"))
    assert set(nbest) == set(preds) and all(nbest[q][0]["text"] == preds[q] for q in preds)
    metrics = json.load(open(out / "epoch-1" / "eval_results.json", encoding="utf-8"))
    assert 0 <= metrics["exact_match"] <= metrics["f1"] <= 100
    assert results["epochs"][0]["dev_f1"] == metrics["f1"] and results["best_epoch"] == 1


def test_eval_qa_reproduces_run_qa_predictions_and_score_only(env, trained, capsys):
    out, _ = trained
    ev = env["dir"] / "eval_a"
    # the checkpoint carries config and vocab: no --config_file / --vocab_file needed
    results = eval_qa.main(["--checkpoint", str(out / "final"), "--predict_file", env["eval"], "--max_seq_length",
                            "128", "--doc_stride", "64", "--max_query_length", "32", "--batch_size", "16",
                            "--output_dir", str(ev), "--no_cuda"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"exact_match": results["exact_match"], "f1": results["f1"]}
    preds = json.load(open(ev / "predictions.json", encoding="utf-8"))
    # one epoch: final/ holds the weights that produced epoch-1's dev predictions
    assert preds == json.load(open(out / "epoch-1" / "predictions.json", encoding="utf-8"))
    stored = json.load(open(ev / "eval_results.json", encoding="utf-8"))
    assert stored["exact_match"] == results["exact_match"] and stored["questions"] == 30

    eval_qa.main(["--score_only", "--predict_file", env["eval"], "--prediction_json", str(ev / "predictions.json")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"exact_match": results["exact_match"], "f1": results["f1"]}

    # without the window flags: those it was fine-tuned with (its qa_train.json), the same predictions; a flag
    # given wins, and a checkpoint without qa_train.json (a release .bin) gets the release's 512, 128 and 64
    results = eval_qa.main(["--checkpoint", str(out / "final"), "--predict_file", env["eval"], "--output_dir",
                            str(env["dir"] / "eval_own"), "--no_cuda"])
    assert {k: results["args"][k] for k in ("max_seq_length", "doc_stride", "max_query_length")} == \
        {"max_seq_length": 128, "doc_stride": 64, "max_query_length": 32}
    assert json.load(open(env["dir"] / "eval_own" / "predictions.json", encoding="utf-8")) == preds
    args = eval_qa.build_parser().parse_args(["--checkpoint", str(out / "final"), "--doc_stride", "50"])
    eval_qa.resolve_window_args(args)
    assert (args.max_seq_length, args.doc_stride, args.max_query_length) == (128, 50, 32)
    args = eval_qa.build_parser().parse_args(["--checkpoint", str(env["dir"] / "nowhere" / "model.bin")])
    eval_qa.resolve_window_args(args)
    assert (args.max_seq_length, args.doc_stride, args.max_query_length) == (512, 128, 64)


def test_widths_rounded_to_a_multiple_predict_the_same(env, trained, monkeypatch):
    # padded positions are masked keys: widening every batch to a multiple of 48 (capped at 128) moves no logit of
    # a real position beyond float rounding (with the padding unmasked they move by far more) and no answer
    out, _ = trained
    logits, predict = {}, eval_qa.predict_logits

    def spy(model, feats, batch_size, rt, multiple=1):
        logits[multiple] = predict(model, feats, batch_size, rt, multiple), feats.attention_mask.astype(bool)
        return logits[multiple][0]
    monkeypatch.setattr(eval_qa, "predict_logits", spy)
    for n in ("1", "48"):
        eval_qa.main(["--checkpoint", str(out / "final"), "--predict_file", env["eval"], "--max_seq_length", "128",
                      "--doc_stride", "64", "--max_query_length", "32", "--batch_size", "16", "--output_dir",
                      str(env["dir"] / f"eval_pad{n}"), "--no_cuda", "--pad_to_multiple_of", n])
    (plain, real), (rounded, _) = logits[1], logits[48]
    for a, b in zip(plain, rounded):  # start, then end logits
        assert abs(a[real] - b[real]).max() < 1e-5
    preds = json.load(open(env["dir"] / "eval_pad48" / "predictions.json", encoding="utf-8"))
    assert preds == json.load(open(out / "epoch-1" / "predictions.json", encoding="utf-8"))


def test_same_seed_gives_identical_run(env, trained):
    out_a, results_a = trained
    out_b = env["dir"] / "run_b"
    results_b = run_qa.main(train_argv(env, out_b))
    assert [r["train_loss"] for r in results_b["epochs"]] == [r["train_loss"] for r in results_a["epochs"]]
    for name in ("predictions.json", "nbest_predictions.json"):
        assert (out_b / "epoch-1" / name).read_bytes() == (out_a / "epoch-1" / name).read_bytes()


@pytest.mark.parametrize("last_window", ["one short micro-batch", "a full and a short micro-batch"])
def test_accumulation_gives_the_same_steps_including_a_short_last_window(env, trained, last_window):
    """2 x m accumulated = one batch of 2m, step for step (the gradient norm of every step is logged), also for
    the epoch's last step, which m is picked to leave short: either a single micro-batch, or a full one and a
    short one (a plain mean of the two micro-batch means would weight the short one's rows more). Dropout is
    off; each micro-batch is cut to its own longest window, which the loss does not see (padding is masked out
    of the attention and of the start/end softmax)."""
    n = trained[1]["train_windows"]
    if last_window == "one short micro-batch":
        m = next(m for m in range(15, 3, -1) if 0 < n % (2 * m) <= m)
    else:
        m = next(m for m in range(15, 3, -1) if m < n % (2 * m) < 2 * m - 1)  # rows m + r, r well below m
    norms = {}
    for accum in ("1", "2"):
        out = env["dir"] / f"accum_{accum}_{m}"
        argv = train_argv(env, out, "--config_file", env["nodrop"], "--train_batch_size", str(2 * m),
                          "--gradient_accumulation_steps", accum, "--logging_steps", "1", "--predict_file", "")
        argv.remove("--per_gpu_train_batch_size"), argv.remove("16")
        assert run_qa.main(argv)["total_steps"] == -(-n // (2 * m))
        rows = [json.loads(line) for line in open(out / "train_log.jsonl", encoding="utf-8")]
        norms[accum] = [r["grad_norm"] for r in rows if "grad_norm" in r]
    assert len(norms["1"]) == -(-n // (2 * m)) and norms["2"] == pytest.approx(norms["1"], rel=1e-4)


@needs_cxx
def test_compile_trains_like_eager(env):
    """--compile on windows cut to each batch's width (a second compile with dynamic shapes): the same losses and
    dev predictions as eager (dropout off), scored by the plain model."""
    from torch._dynamo.utils import counters
    res = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        counters.clear()
        res[name] = run_qa.main(train_argv(env, env["dir"] / f"compile_{name}", "--config_file", env["nodrop"],
                                           *extra))
        assert (counters["stats"]["unique_graphs"] > 0) == (name == "compiled")
    a, b = res["eager"]["epochs"][0], res["compiled"]["epochs"][0]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    assert (b["dev_exact_match"], b["dev_f1"]) == pytest.approx((a["dev_exact_match"], a["dev_f1"]), abs=0.5)


def test_compile_mode_reaches_torch_compile_and_marks_each_step(env, trained, monkeypatch):
    """--compile_mode reduce-overhead with stand-ins for torch.compile and the CUDA-graph step mark (graphs are made
    on a GPU only): the mode arrives, every training forward is marked, and the run is the eager one (`trained`,
    the same command line without the flags)."""
    modes, events = record_graph_steps(monkeypatch, run_qa.BertForQuestionAnswering)
    res = run_qa.main(train_argv(env, env["dir"] / "graphs", "--compile", "--compile_mode", "reduce-overhead"))
    assert modes == ["reduce-overhead"] and res["total_steps"] == trained[1]["total_steps"]
    assert [e for e in events if e != "eval"] == ["mark", "forward"] * res["total_steps"]
    assert res["epochs"][0]["train_loss"] == trained[1]["epochs"][0]["train_loss"]


def test_group_by_length_trains_on_less_padding(env, trained, monkeypatch):
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
    run_qa.main(train_argv(env, env["dir"] / "len_random"))
    key[0] = "grouped"
    results = run_qa.main(train_argv(env, env["dir"] / "len_grouped", "--group_by_length"))
    key[0] = "rounded"
    run_qa.main(train_argv(env, env["dir"] / "len_rounded", "--group_by_length", "--pad_to_multiple_of", "24"))
    # --pad_to_multiple_of reaches the training batches: grouped's widths rounded up to 24s, at most 128
    assert [s[1] for s, _ in widths.pop("rounded")] == [min(-(-s[1] // 24) * 24, 128) for s, _ in widths["grouped"]]
    real = {k: sum(n for _, n in v) for k, v in widths.items()}
    fed = {k: sum(s[0] * s[1] for s, _ in v) for k, v in widths.items()}
    # the same windows (grouping repeats a few to fill its last batch), in batches that carry less padding
    assert real["random"] <= real["grouped"] < real["random"] * 1.15
    assert fed["grouped"] / real["grouped"] < fed["random"] / real["random"]
    assert results["epochs"][0]["dev_f1"] >= 0 and results["total_steps"] == len(widths["grouped"])


def test_overfits_a_few_questions_to_em_100(env):
    """6 questions whose answers start and end on token boundaries, short contexts, no dropout, high lr."""
    from tokenization import build_fast_tokenizer

    tok = build_fast_tokenizer(env["vocab"])
    picked = []
    for art in env["dev"]["data"][20:80]:
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
    d = env["dir"] / "overfit"
    d.mkdir()
    (d / "eval.json").write_text(json.dumps({"version": "KorQuAD_v1.0", "data": [{"title": "t", "paragraphs": picked}]},
                                            ensure_ascii=False), encoding="utf-8")
    # 16 copies of each question (own ids) so that an epoch is several optimizer steps
    copies = [{"context": p["context"], "qas": [{**q, "id": f"{q['id']}-{k}"} for q in p["qas"]]}
              for k in range(16) for p in picked]
    (d / "train.json").write_text(json.dumps({"version": "KorQuAD_v1.0", "data": [{"title": "t", "paragraphs": copies}]},
                                             ensure_ascii=False), encoding="utf-8")
    run_qa.main(["--config_file", env["nodrop"], "--vocab_file", env["vocab"],
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


def test_bad_training_files_fail_with_one_line(env, tmp_path, capsys):
    out = tmp_path / "out"
    argv = train_argv(env, out)
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
    expect_fail(capsys, run_qa.main, argv + ["--max_seq_length", "20"], "--max_seq_length")
    assert not out.exists() or not os.listdir(out)


def test_unlabelled_predict_file_fails_before_training(env, tmp_path, capsys):
    """--predict_file is scored after every epoch: a question without a gold answer is refused up front, with
    nothing written, so the same --output_dir takes the corrected command (here: --do_predict=false)."""
    data = json.load(open(env["eval"], encoding="utf-8"))
    data["data"][0]["paragraphs"][0]["qas"][1]["answers"] = []
    test_set = tmp_path / "test_set.json"
    test_set.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "run"
    argv = train_argv(env, out, "--predict_file", str(test_set))
    expect_fail(capsys, run_qa.main, argv, "--predict_file", "test_set.json", "no gold answer")
    assert not out.exists() or not os.listdir(out)
    results = run_qa.main(argv + ["--do_train=True", "--do_predict=false"])
    assert (out / "final").is_dir() and not (out / "epoch-1" / "predictions.json").exists()
    assert "dev_f1" not in results["epochs"][0] and results["best_epoch"] is None


def test_eval_qa_predicts_a_test_set_without_answers(env, trained, tmp_path, capsys):
    """A file with no gold answers at all (a test set) is predicted and not scored (exit 0, null metrics); one where
    only some questions lack answers is an error after its predictions are written."""
    out, _ = trained
    data = json.load(open(env["eval"], encoding="utf-8"))
    for article in data["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                qa["answers"] = []
    blind = tmp_path / "blind.json"
    blind.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    capsys.readouterr()
    results = eval_qa.main(["--checkpoint", str(out / "final"), "--predict_file", str(blind), "--max_seq_length",
                            "128", "--output_dir", str(tmp_path / "pred")])
    printed = capsys.readouterr().out.strip().splitlines()
    assert json.loads(printed[-1]) == {"exact_match": None, "f1": None} and "not scored" in printed[-2]
    preds = json.loads((tmp_path / "pred" / "predictions.json").read_text(encoding="utf-8"))
    assert sorted(preds) == sorted(question_ids(str(blind))) and results["f1"] is None
    assert json.loads((tmp_path / "pred" / "eval_results.json").read_text())["questions"] == len(preds)
    # the same test set with no "answers" keys at all, saved with a byte-order mark: the same predictions
    for article in data["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                del qa["answers"]
    bare = tmp_path / "bare.json"
    bare.write_text("\ufeff" + json.dumps(data, ensure_ascii=False), encoding="utf-8")
    assert eval_qa.main(["--checkpoint", str(out / "final"), "--predict_file", str(bare), "--max_seq_length",
                         "128", "--output_dir", str(tmp_path / "bare")])["f1"] is None
    assert json.loads((tmp_path / "bare" / "predictions.json").read_text(encoding="utf-8")) == preds
    # and a predictions file with a byte-order mark scores as without one
    bom_preds = tmp_path / "bom_preds.json"
    bom_preds.write_text("\ufeff" + json.dumps(preds, ensure_ascii=False), encoding="utf-8")
    assert eval_qa.main(["--score_only", "--predict_file", env["eval"], "--prediction_json", str(bom_preds)]) == \
        eval_qa.main(["--score_only", "--predict_file", env["eval"], "--prediction_json",
                      str(tmp_path / "pred" / "predictions.json")])
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"] = [{"text": "x", "answer_start": 0}]
    blind.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(out / "final"), "--predict_file", str(blind),
                                       "--max_seq_length", "128", "--output_dir", str(tmp_path / "part")],
                "have no gold answer", "predictions written")
    assert (tmp_path / "part" / "predictions.json").exists()


def test_google_bert_flag_spellings(env, tmp_path, capsys):
    """run_squad.py's --do_train/--do_predict, bare or with absl's =True/=False, are accepted."""
    base = train_argv(env, tmp_path / "r")
    for extra, want in ((["--do_train", "--do_predict"], (True, True)),
                        (["--do_train=True", "--do_predict=False"], (True, False)),
                        (["--do_train", "true", "--do_predict=1"], (True, True)), ([], (None, None))):
        args = run_qa.build_parser().parse_args(base + extra)
        assert (args.do_train, args.do_predict) == want, extra
    assert eval_qa.build_parser().parse_args(["--do_predict=True"]).do_predict is True
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
    expect_fail(capsys, eval_qa.main, ["--score_only", "--do_predict=false", "--predict_file", env["eval"],
                                       "--prediction_json", str(preds)], "--do_predict")
    assert not (tmp_path / "r").exists()


def test_release_apex_flags_are_accepted_and_ignored(env, tmp_path, capsys):
    """The release depended on apex: its --fp16_opt_level/--loss_scale are accepted, warned about once, and ignored
    (here the run then stops at a bad flag, before any training), as in run_classifier."""
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_qa.main(train_argv(env, tmp_path / "r", "--fp16_opt_level", "O2", "--loss_scale", "0",
                               "--warmup_proportion", "2"))
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("warning:")] == [
        "warning: --fp16_opt_level and --loss_scale are apex options and are ignored: mixed precision is native AMP "
        "(--amp fp16 scales the loss dynamically)"]
    assert err[-1].startswith("error: --warmup_proportion 2.0") and not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, value", [("--per_gpu_train_batch_size", "0"), ("--per_gpu_train_batch_size", "-2"),
                                         ("--train_batch_size", "0"), ("--train_batch_size", "-4")])
def test_batch_sizes_below_one_are_refused(env, tmp_path, capsys, flag, value):
    argv = train_argv(env, tmp_path / "r")
    i = argv.index("--per_gpu_train_batch_size")
    argv[i:i + 2] = [flag, value]
    expect_fail(capsys, run_qa.main, argv, f"{flag} {value} must be at least 1")


def test_bad_training_values_are_refused_before_anything_is_written(env, tmp_path, capsys):
    """Values that would crash only in the optimizer, scheduler or loader (after run_args.json marks the folder as
    a run, so that even the corrected command was refused) or train wrong are refused up front, in one line."""
    (tmp_path / "a_file").write_text("")
    for flags, needle in ((["--warmup_proportion", "2"], "--warmup_proportion 2.0: must be in [0, 1)"),
                          (["--learning_rate", "-1"], "--learning_rate -1.0: must be >= 0"),
                          (["--num_workers", "-1"], "--num_workers -1: must be >= 0"),
                          (["--num_train_epochs", "nan"], "--num_train_epochs nan: must be a positive number"),
                          (["--max_grad_norm", "-1"], "--max_grad_norm -1.0: must be >= 0"),
                          (["--seed", "-1"], "--seed -1: must be >= 0"),
                          (["--output_dir", str(tmp_path / "a_file")], "a_file: exists and is not a directory")):
        expect_fail(capsys, run_qa.main, train_argv(env, tmp_path / "r", *flags), needle)
        assert not (tmp_path / "r").exists()
    # eval_qa: before the model is loaded or anything predicted
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(tmp_path / "nowhere"), "--predict_file", env["eval"],
                                       "--output_dir", str(tmp_path / "a_file")], "a_file: exists and is not a dir")


def test_pad_multiple_below_one_is_refused_before_anything_is_read(env, tmp_path, capsys):
    expect_fail(capsys, run_qa.main, train_argv(env, tmp_path / "r", "--pad_to_multiple_of", "0"),
                "--pad_to_multiple_of 0")
    expect_fail(capsys, run_qa.main, train_argv(env, tmp_path / "r", "--layer_lr_decay", "1.2"),
                "--layer_lr_decay 1.2: must be in (0, 1]")
    expect_fail(capsys, run_qa.main, train_argv(env, tmp_path / "r", "--compile_mode", "reduce-overhead"),
                "--compile_mode reduce-overhead applies to a compiled model")
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(tmp_path / "nowhere"), "--predict_file", env["eval"],
                                       "--output_dir", str(tmp_path / "e"), "--pad_to_multiple_of", "-3"],
                "--pad_to_multiple_of -3")
    assert not (tmp_path / "r").exists() and not (tmp_path / "e").exists()


def test_vocab_size_mismatch_fails(env, trained, tmp_path, capsys):
    out, _ = trained
    other = tmp_path / "other_vocab.txt"
    other.write_text(open(env["vocab"], encoding="utf-8").read() + "새토큰\n", encoding="utf-8")
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(out / "final"), "--vocab_file", str(other),
                                       "--predict_file", env["eval"], "--output_dir", str(tmp_path / "e")],
                "other_vocab.txt", "vocab")
    argv = train_argv(env, tmp_path / "r")
    argv[argv.index("--vocab_file") + 1] = str(other)
    expect_fail(capsys, run_qa.main, argv, "other_vocab.txt")


def test_existing_outputs_are_never_overwritten(env, trained, capsys):
    out, _ = trained
    before = file_digests(out)
    expect_fail(capsys, run_qa.main, train_argv(env, out), str(out))
    ev = env["dir"] / "eval_twice"
    ev.mkdir()
    (ev / "predictions.json").write_text('{"x": "earlier"}')
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(out / "final"), "--predict_file", env["eval"],
                                       "--max_seq_length", "128", "--output_dir", str(ev)], "predictions.json")
    assert file_digests(out) == before and (ev / "predictions.json").read_text() == '{"x": "earlier"}'


def test_an_unfinished_run_is_replaced_by_the_same_command(env, tmp_path, capsys):
    """A run stopped before train_results.json (a time limit, Ctrl-C) left run_args.json and checkpoints: the same
    command then replaces them with a warning (it used to be refused forever); other files stay."""
    out = tmp_path / "stopped"
    (out / "epoch-1").mkdir(parents=True)
    (out / "epoch-1" / "model.safetensors").write_text("cut short")
    (out / "run_args.json").write_text("{}")
    (out / "train_log.jsonl").write_text('{"step": 999, "loss": 1.0}\n')
    (out / "notes.txt").write_text("keep me")
    capsys.readouterr()
    run_qa.main(train_argv(env, out))
    assert "holds an unfinished run (epoch-1, run_args.json, train_log.jsonl): replacing it" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me" and (out / "train_results.json").exists()
    assert all(row["step"] != 999 for row in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()))
    # never an input of the new run: continuing from the unfinished run's own epoch-1 is refused, not deleted
    (out / "train_results.json").unlink()
    expect_fail(capsys, run_qa.main, train_argv(env, out, "--checkpoint", str(out / "epoch-1")),
                "--checkpoint", "epoch-1 is part of the unfinished run")
    assert (out / "epoch-1" / "model.safetensors").exists()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_two_ranks_log_the_loss_of_the_whole_batch(env, tmp_path):
    """Under torchrun, run_qa logs the loss over every rank's rows (rank 0's shard alone, before) and scores the
    predict file once: two CPU ranks match one process that accumulates two micro-batches of the same size, with
    length-grouped batches too (their groups used to be cut per micro-batch x ranks, so the two differed)."""
    flags = ["--config_file", env["nodrop"], "--group_by_length", "--per_gpu_train_batch_size", "8"]
    one = tmp_path / "one"
    run_qa.main(train_argv(env, one, *flags, "--gradient_accumulation_steps", "2"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, "run_qa.py"), *train_argv(env, tmp_path / "two", *flags)]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [[r for r in map(json.loads, (d / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
            for d in (one, tmp_path / "two")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]]
    for a, b in zip(*logs):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4) and a["grad_norm"] == pytest.approx(b["grad_norm"],
                                                                                                   rel=1e-4)
    results = [json.loads((d / "train_results.json").read_text()) for d in (one, tmp_path / "two")]
    assert results[0]["epochs"][-1]["dev_f1"] == pytest.approx(results[1]["epochs"][-1]["dev_f1"], abs=1e-6)


def test_eval_qa_refuses_a_checkpoint_without_qa_head(env, tmp_path, capsys):
    import torch

    from models.modeling import BertConfig, BertModel, save_checkpoint
    torch.manual_seed(0)
    encoder = BertModel(BertConfig.from_json_file(env["config"]))
    save_checkpoint(encoder, str(tmp_path / "encoder"), vocab_file=env["vocab"])
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(tmp_path / "encoder"), "--predict_file", env["eval"],
                                       "--max_seq_length", "128", "--output_dir", str(tmp_path / "e")], "qa_outputs")


def test_score_only_errors(env, tmp_path, capsys):
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"not-a-dev-id": "서울"}, ensure_ascii=False), encoding="utf-8")
    expect_fail(capsys, eval_qa.main, ["--score_only", "--predict_file", env["eval"], "--prediction_json", str(preds)],
                "preds.json", "not in the dataset")
    expect_fail(capsys, eval_qa.main, ["--score_only", "--predict_file", env["eval"], "--prediction_json",
                                       str(tmp_path / "nothing.json")], "nothing.json")
    expect_fail(capsys, eval_qa.main, ["--score_only", "--predict_file", str(tmp_path / "nodev.json"),
                                       "--prediction_json", str(preds)], "nodev.json")


def test_score_only_honours_max_eval_examples(env, tmp_path, capsys):
    """Predictions made with --max_eval_examples N are scored on the file's first N questions, as they were made;
    predictions for its later questions are left out rather than taken for another file's."""
    ids = question_ids(env["eval"])
    gold = {qa["id"]: qa["answers"][0]["text"] for a in json.load(open(env["eval"], encoding="utf-8"))["data"]
            for p in a["paragraphs"] for qa in p["qas"]}
    first = tmp_path / "first10.json"
    first.write_text(json.dumps({q: gold[q] for q in ids[:10]}, ensure_ascii=False), encoding="utf-8")
    every = tmp_path / "every.json"
    every.write_text(json.dumps({q: gold[q] if k < 10 else "틀린 답" for k, q in enumerate(ids)}, ensure_ascii=False),
                     encoding="utf-8")
    for preds in (first, every):
        eval_qa.main(["--score_only", "--predict_file", env["eval"], "--prediction_json", str(preds),
                      "--max_eval_examples", "10"])
        captured = capsys.readouterr()
        assert json.loads(captured.out.strip().splitlines()[-1]) == {"exact_match": 100.0, "f1": 100.0}
        assert "no prediction" not in captured.err
    expect_fail(capsys, eval_qa.main, ["--score_only", "--predict_file", env["eval"], "--prediction_json", str(first),
                                       "--max_eval_examples", "0"], "--max_eval_examples")


def test_score_only_partial_predictions_warn_and_count_zero(env, tmp_path, capsys):
    ids = question_ids(env["eval"])
    gold = {qa["id"]: qa["answers"][0]["text"] for a in json.load(open(env["eval"], encoding="utf-8"))["data"]
            for p in a["paragraphs"] for qa in p["qas"]}
    preds = tmp_path / "half.json"
    preds.write_text(json.dumps({q: gold[q] for q in ids[:15]}, ensure_ascii=False), encoding="utf-8")
    eval_qa.main(["--score_only", "--predict_file", env["eval"], "--prediction_json", str(preds)])
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1]) == {"exact_match": 50.0, "f1": 50.0}
    assert "15 of 30 questions have no prediction" in captured.err


# ------------------------------------------------------------------------------------------------------------
# --answer_postprocess morph (the analyser is replaced by a stand-in: the wiring is under test, not kiwi)


def test_answer_postprocess_morph_reports_both(env, tmp_path, capsys, monkeypatch):
    calls = []

    def fake_trim(text, analyzer, context=None, start=None):
        calls.append((text, analyzer))
        return text[:-2] if text.endswith("에서") else text

    monkeypatch.setattr(morphology, "trim_answer", fake_trim, raising=False)
    monkeypatch.setattr(morphology, "load_analyzer", lambda name="kiwi": "fake-kiwi")
    gold, preds = particle_predictions(env["eval"], tmp_path)
    result = eval_qa.main(["--score_only", "--predict_file", env["eval"], "--prediction_json", str(preds),
                           "--answer_postprocess", "morph"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == {"exact_match": 100.0, "f1": 100.0}
    raw = result["without_postprocess"]
    assert raw["exact_match"] == 0.0 and 0 < raw["f1"] < 100 and json.dumps(raw) in "\n".join(out[:-1])
    assert len(calls) == len(gold) and all(a == "fake-kiwi" for _, a in calls)


def test_answer_postprocess_morph_without_kiwipiepy(env, tmp_path, capsys, monkeypatch):
    def missing(name="kiwi"):
        raise morphology.MissingAnalyzerError("the 'kiwi' analyser needs kiwipiepy: run `pip install kiwipiepy`")

    monkeypatch.setattr(morphology, "load_analyzer", missing)
    preds = tmp_path / "preds.json"
    preds.write_text("{}")
    expect_fail(capsys, eval_qa.main, ["--score_only", "--predict_file", env["eval"], "--prediction_json", str(preds),
                                       "--answer_postprocess", "morph"], "pip install kiwipiepy")


def test_answer_postprocess_morph_with_kiwi_strips_particles(env, tmp_path, capsys):
    pytest.importorskip("kiwipiepy")
    gold, preds = particle_predictions(env["eval"], tmp_path)
    result = eval_qa.main(["--score_only", "--predict_file", env["eval"], "--prediction_json", str(preds),
                           "--answer_postprocess", "morph"])
    assert result["without_postprocess"]["exact_match"] == 0.0 and result["exact_match"] >= 80.0


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

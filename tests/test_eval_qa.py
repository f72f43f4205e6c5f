"""eval_qa.py on the checkpoint run_qa.py trains in conftest.py (qa_trained): the same predictions, windows as
fine-tuned, unlabelled test sets, --score_only, morphological answer trimming, outputs never overwritten."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import eval_qa  # noqa: E402
import morphology  # noqa: E402
import qa_predict  # noqa: E402
import tokenization  # noqa: E402
import run_qa  # noqa: E402
from helpers import expect_fail, file_digests, one_thread  # noqa: E402,F401
from qa_helpers import particle_predictions, question_ids, train_argv  # noqa: E402


def test_eval_qa_reproduces_run_qa_predictions_and_score_only(qa_env, qa_trained, capsys):
    out, _ = qa_trained
    ev = qa_env["dir"] / "eval_a"
    # the checkpoint carries config and vocab: no --config_file / --vocab_file needed
    results = eval_qa.main(["--checkpoint", str(out / "final"), "--predict_file", qa_env["eval"], "--max_seq_length",
                            "128", "--doc_stride", "64", "--max_query_length", "32", "--batch_size", "16",
                            "--output_dir", str(ev), "--no_cuda"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"exact_match": results["exact_match"], "f1": results["f1"]}
    preds = json.load(open(ev / "predictions.json", encoding="utf-8"))
    # one epoch: final/ holds the weights that produced epoch-1's dev predictions
    assert preds == json.load(open(out / "epoch-1" / "predictions.json", encoding="utf-8"))
    stored = json.load(open(ev / "eval_results.json", encoding="utf-8"))
    assert stored["exact_match"] == results["exact_match"] and stored["questions"] == 30

    eval_qa.main(["--score_only", "--predict_file", qa_env["eval"], "--prediction_json", str(ev / "predictions.json")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"exact_match": results["exact_match"], "f1": results["f1"]}

    # without the window flags: those it was fine-tuned with (its qa_train.json), the same predictions; a flag
    # given wins, and a checkpoint without qa_train.json (a release .bin) gets the release's 512, 128 and 64
    results = eval_qa.main(["--checkpoint", str(out / "final"), "--predict_file", qa_env["eval"], "--output_dir",
                            str(qa_env["dir"] / "eval_own"), "--no_cuda"])
    assert {k: results["args"][k] for k in ("max_seq_length", "doc_stride", "max_query_length")} == \
        {"max_seq_length": 128, "doc_stride": 64, "max_query_length": 32}
    assert json.load(open(qa_env["dir"] / "eval_own" / "predictions.json", encoding="utf-8")) == preds
    args = eval_qa.build_parser().parse_args(["--checkpoint", str(out / "final"), "--doc_stride", "50"])
    eval_qa.resolve_window_args(args)
    assert (args.max_seq_length, args.doc_stride, args.max_query_length) == (128, 50, 32)
    args = eval_qa.build_parser().parse_args(["--checkpoint", str(qa_env["dir"] / "nowhere" / "model.bin")])
    eval_qa.resolve_window_args(args)
    assert (args.max_seq_length, args.doc_stride, args.max_query_length) == (512, 128, 64)


def test_release_eval_flags_are_accepted(qa_env, qa_trained, tmp_path):
    """The release's eval_qa.py flags that have no effect here still parse: --verbose_logging (it logged the
    release's answer-alignment fallbacks), and --config_name, its first version's spelling of --config_file."""
    out, _ = qa_trained
    results = eval_qa.main(["--checkpoint", str(out / "final"), "--config_name", str(out / "final" / "config.json"),
                            "--vocab_file", str(out / "final" / "vocab.txt"), "--predict_file", qa_env["eval"],
                            "--verbose_logging", "--output_dir", str(tmp_path / "e"), "--no_cuda"])
    assert results["args"]["config_file"] == str(out / "final" / "config.json")
    assert json.load(open(tmp_path / "e" / "predictions.json", encoding="utf-8")) == \
        json.load(open(out / "epoch-1" / "predictions.json", encoding="utf-8"))


def test_decoding_flags_reach_the_predictions(qa_env, qa_trained, tmp_path):
    """--n_best_size bounds each n-best list, --max_answer_length each answer: one token at most, so every answer
    is within one token's text (the default run's answers are longer)."""
    out, _ = qa_trained
    eval_qa.main(["--checkpoint", str(out / "final"), "--predict_file", qa_env["eval"], "--n_best_size", "2",
                  "--max_answer_length", "1", "--output_dir", str(tmp_path / "short"), "--no_cuda"])
    nbest = json.load(open(tmp_path / "short" / "nbest_predictions.json", encoding="utf-8"))
    assert max(len(v) for v in nbest.values()) <= 2
    short = json.load(open(tmp_path / "short" / "predictions.json", encoding="utf-8"))
    default = json.load(open(out / "epoch-1" / "predictions.json", encoding="utf-8"))
    tokenizer = tokenization.FullTokenizer(str(out / "final" / "vocab.txt"), do_lower_case=False)
    assert all(len(tokenizer.tokenize(a)) <= 1 for a in short.values() if " " not in a)
    assert sum(map(len, short.values())) < sum(map(len, default.values()))


def test_widths_rounded_to_a_multiple_predict_the_same(qa_env, qa_trained, monkeypatch):
    # padded positions are masked keys: widening every batch to a multiple of 48 (capped at 128) moves no logit of
    # a real position beyond float rounding (with the padding unmasked they move by far more) and no answer
    out, _ = qa_trained
    logits, predict = {}, qa_predict.predict_logits

    def spy(model, feats, batch_size, rt, multiple=1):
        logits[multiple] = predict(model, feats, batch_size, rt, multiple), feats.attention_mask.astype(bool)
        return logits[multiple][0]
    monkeypatch.setattr(eval_qa, "predict_logits", spy)
    for n in ("1", "48"):
        eval_qa.main(["--checkpoint", str(out / "final"), "--predict_file", qa_env["eval"], "--max_seq_length", "128",
                      "--doc_stride", "64", "--max_query_length", "32", "--batch_size", "16", "--output_dir",
                      str(qa_env["dir"] / f"eval_pad{n}"), "--no_cuda", "--pad_to_multiple_of", n])
    (plain, real), (rounded, _) = logits[1], logits[48]
    for a, b in zip(plain, rounded):  # start, then end logits
        assert abs(a[real] - b[real]).max() < 1e-5
    preds = json.load(open(qa_env["dir"] / "eval_pad48" / "predictions.json", encoding="utf-8"))
    assert preds == json.load(open(out / "epoch-1" / "predictions.json", encoding="utf-8"))


def test_eval_qa_predicts_a_test_set_without_answers(qa_env, qa_trained, tmp_path, capsys):
    """A file with no gold answers at all (a test set) is predicted and not scored (exit 0, null metrics); one where
    only some questions lack answers is an error after its predictions are written."""
    out, _ = qa_trained
    data = json.load(open(qa_env["eval"], encoding="utf-8"))
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
    assert eval_qa.main(["--score_only", "--predict_file", qa_env["eval"], "--prediction_json", str(bom_preds)]) == \
        eval_qa.main(["--score_only", "--predict_file", qa_env["eval"], "--prediction_json",
                      str(tmp_path / "pred" / "predictions.json")])
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"] = [{"text": "x", "answer_start": 0}]
    blind.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(out / "final"), "--predict_file", str(blind),
                                       "--max_seq_length", "128", "--output_dir", str(tmp_path / "part")],
                "have no gold answer", "predictions written")
    assert (tmp_path / "part" / "predictions.json").exists()


def test_vocab_size_mismatch_fails(qa_env, qa_trained, tmp_path, capsys):
    out, _ = qa_trained
    other = tmp_path / "other_vocab.txt"
    other.write_text(open(qa_env["vocab"], encoding="utf-8").read() + "새토큰\n", encoding="utf-8")
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(out / "final"), "--vocab_file", str(other),
                                       "--predict_file", qa_env["eval"], "--output_dir", str(tmp_path / "e")],
                "other_vocab.txt", "vocab")
    argv = train_argv(qa_env, tmp_path / "r")
    argv[argv.index("--vocab_file") + 1] = str(other)
    expect_fail(capsys, run_qa.main, argv, "other_vocab.txt")


def test_existing_outputs_are_never_overwritten(qa_env, qa_trained, capsys):
    out, _ = qa_trained
    before = file_digests(out)
    expect_fail(capsys, run_qa.main, train_argv(qa_env, out), str(out))
    ev = qa_env["dir"] / "eval_twice"
    ev.mkdir()
    (ev / "predictions.json").write_text('{"x": "earlier"}')
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(out / "final"), "--predict_file", qa_env["eval"],
                                       "--max_seq_length", "128", "--output_dir", str(ev)], "predictions.json")
    assert file_digests(out) == before and (ev / "predictions.json").read_text() == '{"x": "earlier"}'


def test_eval_qa_refuses_a_checkpoint_without_qa_head(qa_env, tmp_path, capsys):
    import torch

    from models.modeling import BertConfig, BertModel, save_checkpoint
    torch.manual_seed(0)
    encoder = BertModel(BertConfig.from_json_file(qa_env["config"]))
    save_checkpoint(encoder, str(tmp_path / "encoder"), vocab_file=qa_env["vocab"])
    expect_fail(capsys, eval_qa.main, ["--checkpoint", str(tmp_path / "encoder"), "--predict_file", qa_env["eval"],
                                       "--max_seq_length", "128", "--output_dir", str(tmp_path / "e")], "qa_outputs")


def test_score_only_errors(qa_env, tmp_path, capsys):
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"not-a-dev-id": "서울"}, ensure_ascii=False), encoding="utf-8")
    expect_fail(capsys, eval_qa.main, ["--score_only", "--predict_file", qa_env["eval"], "--prediction_json", str(preds)],
                "preds.json", "not in the dataset")
    expect_fail(capsys, eval_qa.main, ["--score_only", "--predict_file", qa_env["eval"], "--prediction_json",
                                       str(tmp_path / "nothing.json")], "nothing.json")
    expect_fail(capsys, eval_qa.main, ["--score_only", "--predict_file", str(tmp_path / "nodev.json"),
                                       "--prediction_json", str(preds)], "nodev.json")


def test_score_only_honours_max_eval_examples(qa_env, tmp_path, capsys):
    """Predictions made with --max_eval_examples N are scored on the file's first N questions, as they were made;
    predictions for its later questions are left out rather than taken for another file's."""
    ids = question_ids(qa_env["eval"])
    gold = {qa["id"]: qa["answers"][0]["text"] for a in json.load(open(qa_env["eval"], encoding="utf-8"))["data"]
            for p in a["paragraphs"] for qa in p["qas"]}
    first = tmp_path / "first10.json"
    first.write_text(json.dumps({q: gold[q] for q in ids[:10]}, ensure_ascii=False), encoding="utf-8")
    every = tmp_path / "every.json"
    every.write_text(json.dumps({q: gold[q] if k < 10 else "틀린 답" for k, q in enumerate(ids)}, ensure_ascii=False),
                     encoding="utf-8")
    for preds in (first, every):
        eval_qa.main(["--score_only", "--predict_file", qa_env["eval"], "--prediction_json", str(preds),
                      "--max_eval_examples", "10"])
        captured = capsys.readouterr()
        assert json.loads(captured.out.strip().splitlines()[-1]) == {"exact_match": 100.0, "f1": 100.0}
        assert "no prediction" not in captured.err
    expect_fail(capsys, eval_qa.main, ["--score_only", "--predict_file", qa_env["eval"], "--prediction_json", str(first),
                                       "--max_eval_examples", "0"], "--max_eval_examples")


def test_score_only_partial_predictions_warn_and_count_zero(qa_env, tmp_path, capsys):
    ids = question_ids(qa_env["eval"])
    gold = {qa["id"]: qa["answers"][0]["text"] for a in json.load(open(qa_env["eval"], encoding="utf-8"))["data"]
            for p in a["paragraphs"] for qa in p["qas"]}
    preds = tmp_path / "half.json"
    preds.write_text(json.dumps({q: gold[q] for q in ids[:15]}, ensure_ascii=False), encoding="utf-8")
    eval_qa.main(["--score_only", "--predict_file", qa_env["eval"], "--prediction_json", str(preds)])
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1]) == {"exact_match": 50.0, "f1": 50.0}
    assert "15 of 30 questions have no prediction" in captured.err


# ------------------------------------------------------------------------------------------------------------
# --answer_postprocess morph (the analyser is replaced by a stand-in: the wiring is under test, not kiwi)


def test_answer_postprocess_morph_reports_both(qa_env, tmp_path, capsys, monkeypatch):
    calls = []

    def fake_trim(items, analyzer):  # one batch for all answers
        calls.append((items, analyzer))
        return [text[:-2] if text.endswith("에서") else text for text, _, _ in items]

    monkeypatch.setattr(morphology, "trim_answers", fake_trim)
    monkeypatch.setattr(morphology, "load_analyzer", lambda name="kiwi": "fake-kiwi")
    gold, preds = particle_predictions(qa_env["eval"], tmp_path)
    result = eval_qa.main(["--score_only", "--predict_file", qa_env["eval"], "--prediction_json", str(preds),
                           "--answer_postprocess", "morph"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == {"exact_match": 100.0, "f1": 100.0}
    raw = result["without_postprocess"]
    assert raw["exact_match"] == 0.0 and 0 < raw["f1"] < 100 and json.dumps(raw) in "\n".join(out[:-1])
    assert len(calls) == 1 and calls[0][1] == "fake-kiwi" and len(calls[0][0]) == len(gold)
    # a predictions file has no positions: an answer found in its context goes with it, at its first occurrence
    with_context = [(text, context, start) for text, context, start in calls[0][0] if context is not None]
    assert all(context.find(text) == start >= 0 for text, context, start in with_context)
    contexts = {qa["id"]: p["context"] for a in json.loads(open(qa_env["eval"], encoding="utf-8").read())["data"]
                for p in a["paragraphs"] for qa in p["qas"]}
    preds_read = json.loads(preds.read_text(encoding="utf-8"))
    assert len(with_context) == sum(t in contexts[q] for q, t in preds_read.items()) > 0


def test_score_only_trims_an_answer_at_its_first_occurrence(tmp_path, capsys, monkeypatch):
    """--score_only has no positions: an answer that occurs twice in its context is analysed at the first."""
    calls = []

    def fake_trim(items, analyzer):
        calls.extend(items)
        return [text for text, _, _ in items]

    monkeypatch.setattr(morphology, "trim_answers", fake_trim)
    monkeypatch.setattr(morphology, "load_analyzer", lambda name="kiwi": "fake-kiwi")
    context = "서울에서 열렸다. 그 뒤 다시 서울에서 만났다."
    data = {"version": "KorQuAD_v1.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "a", "question": "어디?", "answers": [{"text": "서울", "answer_start": 0}]},
        {"id": "b", "question": "무엇?", "answers": [{"text": "만났다", "answer_start": context.index("만났다")}]}]}]}]}
    dataset, preds = tmp_path / "d.json", tmp_path / "p.json"
    dataset.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    preds.write_text(json.dumps({"a": "서울에서", "b": "없는 답"}, ensure_ascii=False), encoding="utf-8")
    eval_qa.main(["--score_only", "--predict_file", str(dataset), "--prediction_json", str(preds),
                  "--answer_postprocess", "morph"])
    assert calls == [("서울에서", context, 0), ("없는 답", None, None)]


def test_answer_postprocess_morph_without_kiwipiepy(qa_env, tmp_path, capsys, monkeypatch):
    def missing(name="kiwi"):
        raise morphology.MissingAnalyzerError("the 'kiwi' analyser needs kiwipiepy: run `pip install kiwipiepy`")

    monkeypatch.setattr(morphology, "load_analyzer", missing)
    preds = tmp_path / "preds.json"
    preds.write_text("{}")
    expect_fail(capsys, eval_qa.main, ["--score_only", "--predict_file", qa_env["eval"], "--prediction_json", str(preds),
                                       "--answer_postprocess", "morph"], "pip install kiwipiepy")


def test_answer_postprocess_morph_with_kiwi_strips_particles(qa_env, tmp_path, capsys):
    pytest.importorskip("kiwipiepy")
    gold, preds = particle_predictions(qa_env["eval"], tmp_path)
    result = eval_qa.main(["--score_only", "--predict_file", qa_env["eval"], "--prediction_json", str(preds),
                           "--answer_postprocess", "morph"])
    assert result["without_postprocess"]["exact_match"] == 0.0 and result["exact_match"] >= 80.0


def test_score_passes_every_known_answer_offset_to_the_trimming_offset_0_included(monkeypatch):
    """score(): with morph, an answer whose offset in its context is known goes to the analyser with that context,
    an answer at the context's very start (offset 0) included; an unknown offset (-1) goes alone."""
    from qa_data import QAExample
    calls = []

    def fake_trim(items, analyzer):
        calls.append(list(items))
        return [text.removesuffix("에서") for text, _, _ in items]

    monkeypatch.setattr(morphology, "trim_answers", fake_trim)
    monkeypatch.setattr(morphology, "load_analyzer", lambda name="kiwi": "fake-kiwi")
    examples = [QAExample("a", "어디?", "서울에서 만났다", ["서울"]), QAExample("b", "언제?", "그는 1989년에 왔다", ["1989년"]),
                QAExample("c", "누구?", "임수경이 갔다", ["임수경"])]
    preds = {"a": "서울에서", "b": "1989년에서", "c": "임수경에서"}
    metrics, trimmed = qa_predict.score(examples, "dev", preds, "p.json", "morph",
                                       answer_starts={"a": 0, "b": 3, "c": -1})
    assert calls == [[("서울에서", "서울에서 만났다", 0), ("1989년에서", "그는 1989년에 왔다", 3), ("임수경에서", None, None)]]
    assert trimmed == {"a": "서울", "b": "1989년", "c": "임수경"} and metrics["exact_match"] == 100.0
    assert metrics["without_postprocess"]["exact_match"] == 0.0


def test_write_predictions_puts_each_mapping_in_its_own_file(tmp_path):
    """predictions.json, nbest_predictions.json and (with morph) predictions_morph.json, as run_squad.py names
    its first two: each the mapping it is named for."""
    preds = {"q1": "서울", "q2": "1989년"}
    nbest = {"q1": [{"text": "서울", "probability": 0.9}, {"text": "서울에서", "probability": 0.1}],
             "q2": [{"text": "1989년", "probability": 1.0}]}
    qa_predict.write_predictions(str(tmp_path / "a"), preds, nbest)
    assert sorted(os.listdir(tmp_path / "a")) == ["nbest_predictions.json", "predictions.json"]
    assert json.loads((tmp_path / "a" / "predictions.json").read_text(encoding="utf-8")) == preds
    assert json.loads((tmp_path / "a" / "nbest_predictions.json").read_text(encoding="utf-8")) == nbest
    trimmed = {"q1": "서울", "q2": "1989"}
    qa_predict.write_predictions(str(tmp_path / "b"), preds, nbest, trimmed)
    assert json.loads((tmp_path / "b" / "predictions_morph.json").read_text(encoding="utf-8")) == trimmed
    assert json.loads((tmp_path / "b" / "predictions.json").read_text(encoding="utf-8")) == preds


def test_predict_logits_batches_by_length_and_fills_past_each_width():
    """Windows are scored longest first, each batch cut to its longest window; a row's logits are the model's
    up to its batch's width and -1e4 past it; with several ranks each scores a contiguous shard."""
    from types import SimpleNamespace

    import numpy as np
    import torch
    lengths = np.array([3, 9, 5, 9, 2, 7, 4])
    n, T = len(lengths), 12
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, np.arange(1, n + 1)[:, None] * 100 + np.arange(T)[None, :], 0)
    feats = SimpleNamespace(input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=mask)
    widths = []

    class Echo(torch.nn.Module):  # logits that say which row and position they are for
        def forward(self, input_ids, token_type_ids=None, attention_mask=None):
            widths.append(input_ids.shape[1])
            return {"start_logits": input_ids.float(), "end_logits": -input_ids.float()}

    def rt(rank=0, world_size=1):
        return SimpleNamespace(world_size=world_size, rank=rank, distributed=False, device=torch.device("cpu"),
                               autocast=lambda: torch.autocast("cpu", enabled=False))
    start, end = qa_predict.predict_logits(Echo(), feats, 3, rt())
    assert widths == [9, 5, 2]  # lengths 9, 9, 7 | 5, 4, 3 | 2
    batch_width = {1: 9, 3: 9, 5: 9, 2: 5, 6: 5, 0: 5, 4: 2}
    for row, width in batch_width.items():
        assert np.array_equal(start[row, :width], ids[row, :width]) and np.array_equal(end[row, :width],
                                                                                       -ids[row, :width])
        assert (start[row, width:] == -1e4).all() and (end[row, width:] == -1e4).all()
    second, _ = qa_predict.predict_logits(Echo(), feats, 3, rt(rank=1, world_size=2))
    assert second.shape == (3, T)  # rows 4..6: array_split's contiguous second half
    assert all(np.array_equal(second[k, :lengths[row]], ids[row, :lengths[row]]) for k, row in enumerate((4, 5, 6)))

"""Readers, features and metrics of cls_data on the bundled KorNLI/KorSTS files (CPU, no model)."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

import cls_data
from cls_data import TASKS, Example, compute_metrics, convert_examples, read_examples, truncate_pair

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STS, NLI = TASKS["korsts"], TASKS["kornli"]
BUNDLED = [("korsts/sts-train.tsv", STS, 5749), ("korsts/sts-dev.tsv", STS, 1500), ("korsts/sts-test.tsv", STS, 1379),
           ("kornli/xnli.dev.ko.tsv", NLI, 2490), ("kornli/xnli.test.ko.tsv", NLI, 5010)]


def data(rel):
    return os.path.join(ROOT, "data", rel)


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


# ---------------------------------------------------------------------------------------------------------- readers

@pytest.mark.parametrize("rel,task,rows", BUNDLED)
def test_bundled_row_counts_exact_with_quoting_off(rel, task, rows, capsys):
    examples = read_examples(data(rel), task)  # strict: a single bad row would raise
    assert len(examples) == rows
    assert len(read_examples(data(rel), task, strict=False)) == rows and "warning" not in capsys.readouterr().err
    # the same file through csv's default quoting: fewer rows, or rows with the wrong field count
    with open(data(rel), encoding="utf-8", newline="") as f:
        default = list(csv.reader(f, delimiter="\t"))[1:]
    width = 7 if task is STS else 3
    assert len(default) != rows or any(len(r) != width for r in default)
    if task is NLI:  # labels balanced 1/3 each in XNLI dev/test
        assert np.bincount([e.label for e in examples]).tolist() == [rows // 3] * 3
    else:
        scores = [e.label for e in examples]
        assert 0.0 <= min(scores) and max(scores) <= 5.0


def test_quoted_sentence_kept_verbatim():
    # line 2 of xnli dev: sentence1 starts with text and contains a quoted span; with quoting on it would vanish
    ex = read_examples(data("kornli/xnli.dev.ko.tsv"), NLI, max_examples=1)[0]
    assert ex.text_a == '그리고 그가 말했다, "엄마, 저 왔어요."'
    assert NLI.labels[ex.label] == "neutral" and ex.guid == "xnli.dev.ko.tsv:2"
    # KorSTS rows with a sentence that opens with '"' (the rows default quoting mangles), as counted in SOURCE.md
    for split, n in (("train", 150), ("dev", 53), ("test", 29)):
        rows = read_examples(data(f"korsts/sts-{split}.tsv"), STS)
        assert sum(e.text_a.startswith('"') or e.text_b.startswith('"') for e in rows) == n


def test_training_reader_skips_bad_rows_with_warning_naming_lines(tmp_path, capsys):
    p = write(tmp_path, "nli.tsv", "sentence1\tsentence2\tgold_label\n"
                                   "가\t나\tentailment\n"
                                   "다\t라\t마\tneutral\n"          # line 3: stray tab
                                   "바\t사\tcontradiction\n"
                                   "아\t자\tmaybe\n")                # line 5: unknown label
    examples = read_examples(p, NLI, strict=False)
    assert [(e.text_a, e.label) for e in examples] == [("가", 1), ("바", 0)]
    err = capsys.readouterr().err
    assert "nli.tsv" in err and "1 row(s) with a field count other than 3 (line 3)" in err
    assert "label outside contradiction/entailment/neutral (line 5)" in err
    p = write(tmp_path, "sts.tsv", "sentence1\tsentence2\tscore\na\tb\t5.0\nc\td\t5.2\ne\tf\t-0.1\ng\th\tx\ni\tj\t0\n")
    assert [e.label for e in read_examples(p, STS, strict=False)] == [5.0, 0.0]
    err = capsys.readouterr().err
    assert "2 row(s) with a score outside [0, 5] (line 3, 4)" in err and "a non-numeric score (line 5)" in err
    with pytest.raises(ValueError, match="nli.tsv: no usable data rows"):
        read_examples(write(tmp_path, "nli.tsv", "sentence1\tsentence2\tgold_label\n가\t나\tmaybe\n"), NLI,
                      strict=False)


@pytest.mark.parametrize("row,message", [
    ("다\t라\t마\t1.0", "dev.tsv line 3: 4 tab-separated fields, the header has 3 (a stray tab?)"),
    ("다\t라\tsimilar", "dev.tsv line 3: score 'similar' is not a number"),
    ("다\t라\tnan", "dev.tsv line 3: score 'nan' is not a number"),
    ("다\t라\t5.5", "dev.tsv line 3: score 5.5 is outside [0, 5]"),
    ("다\t라\t-1", "dev.tsv line 3: score -1 is outside [0, 5]"),
])
def test_strict_reader_fails_on_first_bad_row_naming_file_and_line(tmp_path, row, message):
    """Dev/test files: a score on the rows that happened to parse would pass for the whole file's."""
    p = write(tmp_path, "dev.tsv", f"sentence1\tsentence2\tscore\n가\t나\t1.0\n{row}\n바\t사\t9\n")
    with pytest.raises(ValueError) as e:
        read_examples(p, STS)
    assert str(e.value).endswith(message) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="line 2: label 'maybe' is not one of contradiction/entailment/neutral"):
        read_examples(write(tmp_path, "nli.tsv", "sentence1\tsentence2\tgold_label\n가\t나\tmaybe\n"), NLI)
    # rows past --max_eval_examples are not read, so they cannot fail
    assert [e.label for e in read_examples(p, STS, max_examples=1)] == [1.0]


def test_read_split_strict_for_dev_and_test_lenient_for_train(tmp_path, capsys):
    import argparse
    text = "sentence1\tsentence2\tscore\na\tb\t1.0\nc\td\t7.0\ne\tf\t2.0\n"
    f = write(tmp_path, "sts.tsv", text)
    parser = argparse.ArgumentParser()
    cls_data.add_task_args(parser)
    args = parser.parse_args(["--task_name", "korsts", "--train_file", f, "--dev_file", f, "--test_file", f])
    assert [e.label for e in cls_data.read_split(args, STS, "train")] == [1.0, 2.0]
    assert "score outside [0, 5] (line 3)" in capsys.readouterr().err
    for split in ("dev", "test"):
        with pytest.raises(ValueError, match=r"sts.tsv line 3: score 7.0 is outside \[0, 5\]"):
            cls_data.read_split(args, STS, split)


def test_columns_found_by_header_name(tmp_path):
    p = write(tmp_path, "sts.tsv", "score\textra\tsentence2\tsentence1\n"
                                   "4.5\tx\t둘째 문장\t첫 문장\n"
                                   "0\ty\tb\ta\n")
    examples = read_examples(p, STS)
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [("첫 문장", "둘째 문장", 4.5), ("a", "b", 0.0)]


def test_crlf_and_max_examples(tmp_path):
    p = write(tmp_path, "sts.tsv", "sentence1\tsentence2\tscore\r\na\tb\t1.0\r\nc\td\t2.5\r\ne\tf\t3\r\n")
    assert [e.label for e in read_examples(p, STS)] == [1.0, 2.5, 3.0]
    assert [e.text_b for e in read_examples(p, STS, max_examples=2)] == ["b", "d"]
    assert [e.text_b for e in read_examples(p, STS, max_examples=1)] == ["b"]
    # CR-only line ends (no LF anywhere) are rows too, not one long header
    cr = write(tmp_path, "cr_only.tsv", "sentence1\tsentence2\tscore\ra\tb\t1.0\rc\td\t2.5\r")
    assert [(e.text_b, e.label) for e in read_examples(cr, STS)] == [("b", 1.0), ("d", 2.5)]
    for bad in (0, -3):  # used to return one row: the cap was checked only after appending
        with pytest.raises(ValueError, match=f"max_examples {bad} must be >= 1"):
            read_examples(p, STS, max_examples=bad)


def test_task_flag_checks(tmp_path):
    import argparse
    parser = argparse.ArgumentParser()
    cls_data.add_task_args(parser)
    base = ["--task_name", "korsts", "--data_dir", data("korsts")]
    for flags, message in ((["--max_train_examples", "0"], "--max_train_examples 0 must be >= 1"),
                           (["--max_eval_examples", "-1"], "--max_eval_examples -1 must be >= 1"),
                           (["--max_seq_length", "2"], "--max_seq_length 2 leaves no room"),
                           (["--eval_batch_size", "0"], "--eval_batch_size 0 must be >= 1")):
        with pytest.raises(ValueError, match=message):
            cls_data.check_task_args(parser.parse_args(base + flags))
    cls_data.check_task_args(parser.parse_args(base + ["--max_train_examples", "1", "--max_seq_length", "3"]))
    # a cap below 1 that got past the flag check still cannot give an empty training set silently
    with pytest.raises(ValueError, match="the train set is empty"):
        cls_data.read_split(parser.parse_args(base + ["--max_train_examples", "0"]), STS, "train")


@pytest.mark.parametrize("text,message", [
    ("", "empty file"),
    ("sentence1\tsentence2\tgold_label\n", "no usable data rows"),
    ("sentence1\tsentence_2\tgold_label\n가\t나\tneutral\n", "header has no column 'sentence2'"),
    ("sentence1\tsentence2\tgold_label\n가\t나\tunknown\n", "bad.tsv line 2: label 'unknown' is not one of"),
])
def test_bad_files_raise_one_line_error_naming_file(tmp_path, text, message):
    p = write(tmp_path, "bad.tsv", text)
    with pytest.raises(ValueError) as e:
        read_examples(p, NLI)
    assert message in str(e.value) and "bad.tsv" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_examples(str(tmp_path / "nope.tsv"), NLI)


def test_default_files_and_missing_kornli_train(tmp_path):
    import argparse
    parser = argparse.ArgumentParser()
    cls_data.add_task_args(parser)
    args = parser.parse_args(["--task_name", "kornli", "--data_dir", data("kornli")])
    assert cls_data.resolve_files(args, NLI, "test") == [data("kornli/xnli.test.ko.tsv")]
    with pytest.raises(FileNotFoundError, match="multinli.train.ko.tsv.*--train_file"):
        cls_data.resolve_files(args, NLI, "train")
    # snli joins only when it is there
    for name in ("multinli.train.ko.tsv", "snli_1.0_train.ko.tsv"):
        write(tmp_path, name, "sentence1\tsentence2\tgold_label\n가\t나\tneutral\n다\t라\tentailment\n")
    args = parser.parse_args(["--task_name", "kornli", "--data_dir", str(tmp_path), "--max_train_examples", "3"])
    assert [e.guid for e in cls_data.read_split(args, NLI, "train")] == [
        "multinli.train.ko.tsv:2", "multinli.train.ko.tsv:3", "snli_1.0_train.ko.tsv:2"]


def test_wrong_task_name_is_argparse_error(capsys):
    import argparse
    parser = argparse.ArgumentParser()
    cls_data.add_task_args(parser)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--task_name", "kormnli"])
    assert e.value.code == 2 and "invalid choice: 'kormnli'" in capsys.readouterr().err
    # the release's scripts took mixed-case names
    assert parser.parse_args(["--task_name", "KorSTS"]).task_name == "korsts"
    assert parser.parse_args(["--task_name", "KorNLI"]).task_name == "kornli"


# --------------------------------------------------------------------------------------------------------- features

@pytest.fixture(scope="module")
def toy_tokenizer(tmp_path_factory):
    import tokenization
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "한", "##국", "##어", "문", "##장", "가", "나", "."]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return tokenization.build_fast_tokenizer(str(path)), {t: i for i, t in enumerate(vocab)}


def test_features_specials_and_token_types(toy_tokenizer):
    tok, v = toy_tokenizer
    f = convert_examples([Example("x", "한국어 문장.", "가 나", 2)], tok, v["[CLS]"], v["[SEP]"], 128)[0]
    ids = [v[t] for t in ["[CLS]", "한", "##국", "##어", "문", "##장", ".", "[SEP]", "가", "나", "[SEP]"]]
    assert f["input_ids"].tolist() == ids
    assert f["token_type_ids"].tolist() == [0] * 8 + [1] * 3
    assert f["label"] == 2 and not f["truncated"]


def test_truncation_longest_first(toy_tokenizer):
    tok, v = toy_tokenizer
    # a = 7 tokens, b = 2 tokens, budget 9 - 3 = 6: only a loses tokens, from its end
    f = convert_examples([Example("x", "한국어 문장 가 나", "가 나", 0.5)], tok, v["[CLS]"], v["[SEP]"], 9)[0]
    assert len(f["input_ids"]) == 9 and f["truncated"]
    expected = ["[CLS]", "한", "##국", "##어", "문", "[SEP]", "가", "나", "[SEP]"]
    assert f["input_ids"].tolist() == [v[t] for t in expected]
    assert f["token_type_ids"].tolist() == [0] * 6 + [1] * 3
    assert truncate_pair(10, 10, 6) == (3, 3)
    assert truncate_pair(10, 1, 6) == (5, 1)
    assert truncate_pair(4, 5, 8) == (4, 4)
    assert truncate_pair(2, 3, 100) == (2, 3)
    with pytest.raises(ValueError, match="--max_seq_length 2"):
        convert_examples([Example("x", "가", "나", 0)], tok, 2, 3, 2)


def test_truncate_pair_equals_google_bert_truncate_seq_pair():
    """google-research/bert's _truncate_seq_pair, transcribed: pop the last token of the longer list, of b on a
    tie. Every pair of lengths up to 12 and every budget."""
    def reference(len_a, len_b, budget):
        a, b = list(range(len_a)), list(range(len_b))
        while len(a) + len(b) > budget:
            (a if len(a) > len(b) else b).pop()
        return len(a), len(b)
    for len_a in range(13):
        for len_b in range(13):
            for budget in range(26):
                assert truncate_pair(len_a, len_b, budget) == reference(len_a, len_b, budget), (len_a, len_b, budget)
    assert truncate_pair(3, 3, 5) == (3, 2)  # the tie goes to b


def test_collate_pads_to_longest_in_batch():
    feats = [{"input_ids": [2, 5, 3, 6, 3], "token_type_ids": [0, 0, 0, 1, 1], "label": 1.5},
             {"input_ids": [2, 3, 7, 3], "token_type_ids": [0, 0, 1, 1], "label": 4.0}]
    b = cls_data.collate(feats, pad_id=0, regression=True)
    assert b["input_ids"].tolist() == [[2, 5, 3, 6, 3], [2, 3, 7, 3, 0]]
    assert b["attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 1, 0]]
    assert b["token_type_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 0]]
    assert b["labels"].dtype.is_floating_point and b["labels"].tolist() == [1.5, 4.0]
    assert cls_data.collate([dict(feats[0], label=2)], 0, regression=False)["labels"].dtype.is_floating_point is False


def test_collate_rounds_the_width_up_to_a_multiple_within_the_limit():
    feats = [{"input_ids": [2, 5, 3, 6, 3], "token_type_ids": [0, 0, 0, 1, 1], "label": 1.5},
             {"input_ids": [2, 3, 7, 3], "token_type_ids": [0, 0, 1, 1], "label": 4.0}]
    b = cls_data.collate(feats, pad_id=0, regression=True, multiple=4, limit=16)
    assert b["input_ids"].tolist() == [[2, 5, 3, 6, 3, 0, 0, 0], [2, 3, 7, 3, 0, 0, 0, 0]]
    assert b["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] * 4 + [0] * 4]
    assert cls_data.collate(feats, 0, True, multiple=4, limit=6)["input_ids"].shape == (2, 6)  # max_seq_length caps
    assert cls_data.collate(feats, 0, True, multiple=4)["input_ids"].shape == (2, 8)  # no limit given: no cap
    batches, labels = cls_data.eval_batches(feats, 1, 0, True, multiple=4, limit=16)
    assert [b["input_ids"].shape[1] for b in batches] == [4, 8] and labels == [4.0, 1.5]


def test_both_orders_views_line_up_row_by_row_and_average(toy_tokenizer):
    import torch
    tok, v = toy_tokenizer
    examples = [Example("1", "한국어 문장 가 나 한국어", "가", 1.0), Example("2", "가", "나", 2.0),
                Example("3", "문장 가", "한국어 나 나", 3.0), Example("4", "한국어 한국어 문장", "가 나 가 나", 4.0)]
    # swap=True converts each row with its sentences exchanged, guid and label kept
    per_order = [convert_examples(examples, tok, v["[CLS]"], v["[SEP]"], 10, swap=s) for s in (False, True)]
    by_hand = convert_examples(swapped(examples), tok, v["[CLS]"], v["[SEP]"], 10)
    assert all(a["input_ids"].tolist() == b["input_ids"].tolist() and a["label"] == b["label"]
               for a, b in zip(per_order[1], by_hand))
    # seq 10 truncates rows 1 and 4 (a different side in each order), yet each row keeps its length in both
    assert per_order[0][0]["truncated"] and per_order[0][3]["truncated"]
    assert [len(f["input_ids"]) for f in per_order[0]] == [len(f["input_ids"]) for f in per_order[1]]
    views, labels = cls_data.eval_views(per_order, 3, v["[PAD]"], True)
    order = cls_data.length_order(per_order[0])
    assert labels == [examples[i].label for i in order] and len(views) == 2
    for view, feats in zip(views, per_order):
        rows = [r[r != v["[PAD]"]].tolist() for b in view for r in b["input_ids"]]
        assert rows == [feats[i]["input_ids"].tolist() for i in order]

    class Positional(torch.nn.Module):  # position-weighted, so a pair and its swap score differently
        def forward(self, input_ids, **unused):
            return {"logits": (input_ids.float() * torch.arange(1, input_ids.shape[1] + 1)).sum(-1, keepdim=True)}

    model = Positional()
    one = [cls_data.predict(model, view, "cpu")[:, 0] for view in views]
    assert not np.allclose(one[0], one[1])
    np.testing.assert_allclose(cls_data.predict_views(model, views, "cpu")[:, 0], (one[0] + one[1]) / 2)
    # one order: one view, eval_batches' own
    (single,), single_labels = cls_data.eval_views(per_order[:1], 3, v["[PAD]"], True)
    batches, batch_labels = cls_data.eval_batches(per_order[0], 3, v["[PAD]"], True)
    assert single_labels == batch_labels and len(single) == len(batches)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(single, batches) for k in x)


def test_pair_orders_only_for_symmetric_tasks():
    cls_data.check_pair_orders("both", STS)
    cls_data.check_pair_orders("one", NLI)
    with pytest.raises(ValueError, match="--pair_orders both: kornli's label depends on the pair's order"):
        cls_data.check_pair_orders("both", NLI)
    with pytest.raises(ValueError, match="x.json pair_orders 'two': expected one of one, both"):
        cls_data.check_pair_orders("two", STS, "x.json pair_orders")


# ---------------------------------------------------------------------------------------------------------- metrics

def test_accuracy_hand_computed():
    logits = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 3.0]])
    assert compute_metrics(NLI, logits, [1, 0, 0, 2]) == {"accuracy": 75.0}


def test_spearman_with_ties_and_pearson_match_scipy():
    preds = np.array([0.5, 1.0, 1.0, 3.0, 2.0, 2.0, 4.5])
    gold = np.array([0.0, 1.2, 1.2, 2.5, 2.5, 3.0, 5.0])
    m = compute_metrics(STS, preds[:, None], gold)
    assert m["spearman"] == pytest.approx(stats.spearmanr(preds, gold)[0] * 100)
    assert m["pearson"] == pytest.approx(stats.pearsonr(preds, gold)[0] * 100)
    # by hand: Spearman = Pearson of average ranks (ties share the mean rank)
    rp = np.array([1, 2.5, 2.5, 6, 4.5, 4.5, 7])
    rg = np.array([1, 2.5, 2.5, 4.5, 4.5, 6, 7])
    assert m["spearman"] == pytest.approx(np.corrcoef(rp, rg)[0, 1] * 100)
    assert compute_metrics(STS, [1, 2, 3], [3, 2, 1]) == pytest.approx({"pearson": -100.0, "spearman": -100.0})


def test_constant_predictions_are_undefined_not_crash():
    m = compute_metrics(STS, np.ones((4, 1)), [0.0, 1.0, 2.0, 3.0])
    assert np.isnan(m["spearman"]) and cls_data.json_safe(m) == {"pearson": None, "spearman": None}
    assert cls_data.score_for_selection(m, STS) == -np.inf


def test_readers_and_metrics_do_not_import_torch():
    code = ("import sys, cls_data; cls_data.compute_metrics(cls_data.TASKS['korsts'], [1, 2], [2, 3]); "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.stdout.strip() == "False", r.stderr


def test_not_utf8_and_stray_carriage_return(tmp_path):
    p = tmp_path / "latin1.tsv"
    p.write_bytes("sentence1\tsentence2\tscore\ncaf\xe9\tb\t1.0\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.tsv: not UTF-8 \(byte offset 29\)"):
        read_examples(str(p), STS)
    # a lone '\r' inside a sentence is text, not a row break (only '\n' and a trailing '\r' of CRLF end rows)
    p = write(tmp_path, "cr.tsv", "sentence1\tsentence2\tscore\na\rb\tc\t2.0\r\n")
    assert [(e.text_a, e.label) for e in read_examples(p, STS)] == [("a\rb", 2.0)]


def test_empty_sentences_are_bad_rows(tmp_path, capsys):
    """An empty sentence is an error in a dev/test file and a skipped row in a training file, as other bad rows."""
    p = write(tmp_path, "nli.tsv", "sentence1\tsentence2\tgold_label\nx\ty\tneutral\n\tb\tentailment\n"
                                   "a\t \tneutral\n")
    with pytest.raises(ValueError, match=r"nli.tsv line 3: empty sentence1$"):
        read_examples(p, NLI)
    assert [e.text_a for e in read_examples(p, NLI, strict=False)] == ["x"]
    assert "skipped 2 row(s) with an empty sentence (line 3, 4)" in capsys.readouterr().err


def test_a_header_without_the_columns_is_named_briefly(tmp_path):
    p = write(tmp_path, "wide.tsv", "\t".join(f"column_{i}_" + "x" * 60 for i in range(30)) + "\n")
    with pytest.raises(ValueError, match="header has no column 'sentence1'") as e:
        read_examples(p, STS)
    assert len(str(e.value)) < 700 and str(e.value).endswith(", ...)")


# ------------------------------------------------------------------------------------------- compact features


def swapped(examples):
    """The same rows as (text_b, text_a), guid and label unchanged: the reference for convert_examples(swap=True)."""
    return [Example(e.guid, e.text_b, e.text_a, e.label) for e in examples]


def reference_features(examples, tok, cls_id, sep_id, max_seq_length):
    """The features as the list of dicts of int lists they were before PairFeatures, one row at a time."""
    feats = []
    for e in examples:
        a = tok.encode(e.text_a, add_special_tokens=False).ids
        b = tok.encode(e.text_b, add_special_tokens=False).ids
        la, lb = truncate_pair(len(a), len(b), max_seq_length - 3)
        feats.append({"input_ids": [cls_id, *a[:la], sep_id, *b[:lb], sep_id],
                      "token_type_ids": [0] * (la + 2) + [1] * (lb + 1), "label": e.label,
                      "truncated": la < len(a) or lb < len(b)})
    return feats


def reference_collate(features, pad_id, regression):
    """collate as it was: a torch tensor per row."""
    import torch
    width = max(len(f["input_ids"]) for f in features)
    out = {"input_ids": torch.full((len(features), width), pad_id, dtype=torch.long),
           "token_type_ids": torch.zeros((len(features), width), dtype=torch.long),
           "attention_mask": torch.zeros((len(features), width), dtype=torch.long)}
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        out["input_ids"][i, :n] = torch.tensor(f["input_ids"])
        out["token_type_ids"][i, :n] = torch.tensor(f["token_type_ids"])
        out["attention_mask"][i, :n] = 1
    out["labels"] = torch.tensor([f["label"] for f in features], dtype=torch.float if regression else torch.long)
    return out


@pytest.mark.parametrize("rel, task", [("korsts/sts-dev.tsv", STS), ("kornli/xnli.dev.ko.tsv", NLI)])
def test_pair_features_and_batches_equal_the_plain_lists(cls_env, rel, task):
    """PairFeatures, encoded in chunks (7 rows here, so rows cross chunk boundaries), give the rows, labels,
    length order and training batches the plain per-row lists gave, in both pair orders and both concatenated."""
    import torch

    import tokenization
    from batching import LENGTH_GROUP, GlobalBatchSampler
    tok = tokenization.build_fast_tokenizer(cls_env["vocab"])
    sp = tokenization.special_token_ids(tokenization.load_vocab(cls_env["vocab"]))
    examples = read_examples(data(rel), task, 300)
    # 24 tokens truncates many rows; both orders only where the task allows it, as run_classifier does
    both = task.symmetric
    per_order = cls_data.convert_pair_orders(examples, tok, sp["cls"], sp["sep"], 24, both)
    refs = [reference_features(ex, tok, sp["cls"], sp["sep"], 24)
            for ex in ([examples, swapped(examples)] if both else [examples])]
    chunked = [convert_examples(examples, tok, sp["cls"], sp["sep"], 24, swap=s, chunk=7) for s in range(len(refs))]
    train, ref_train = cls_data.PairFeatures.concat(chunked), [f for ref in refs for f in ref]
    assert len(train) == len(ref_train) == len(examples) * len(refs)
    assert any(f["truncated"] for f in ref_train) and not all(f["truncated"] for f in ref_train)
    for feats in (*per_order, train):
        ref = ref_train if feats is train else refs[per_order.index(feats)]
        got = [{**f, "input_ids": f["input_ids"].tolist(), "token_type_ids": f["token_type_ids"].tolist()}
               for f in feats]
        assert got == ref and [type(f["label"]) for f in got] == [type(f["label"]) for f in ref]
        assert cls_data.length_order(feats) == sorted(range(len(ref)), key=lambda i: len(ref[i]["input_ids"]))
    views, labels = cls_data.eval_views(per_order, 16, sp["pad"], task.is_regression)
    ref_views, ref_labels = cls_data.eval_views(refs, 16, sp["pad"], task.is_regression)
    assert labels == ref_labels
    for group in (0, LENGTH_GROUP):
        sampler = GlobalBatchSampler(cls_data.feature_lengths(train), 16, seed=5, group=group)
        ref_sampler = GlobalBatchSampler([len(f["input_ids"]) for f in ref_train], 16, seed=5, group=group)
        for rows, ref_rows in zip(sampler, ref_sampler):
            assert np.array_equal(rows, ref_rows)
            batch = cls_data.collate([train[i] for i in rows], sp["pad"], task.is_regression)
            ref_batch = reference_collate([ref_train[i] for i in rows], sp["pad"], task.is_regression)
            assert all(batch[k].dtype == ref_batch[k].dtype and torch.equal(batch[k], ref_batch[k]) for k in ref_batch)
    for view, ref_view in zip(views, ref_views):
        assert all(torch.equal(b[k], r[k]) for b, r in zip(view, ref_view) for k in r)


def test_pair_features_index_like_a_list(toy_tokenizer):
    tok, v = toy_tokenizer
    feats = convert_examples([Example(str(i), "한국어 " * i, "가", float(i)) for i in range(1, 6)], tok,
                             v["[CLS]"], v["[SEP]"], 128, chunk=2)
    assert len(feats) == 5 and feats.lengths.tolist() == [7, 10, 13, 16, 19]
    assert feats[np.int64(4)]["label"] == 5.0 and feats[-1]["label"] == 5.0
    assert [f["label"] for f in feats[1:3]] == [2.0, 3.0] and [f["label"] for f in feats] == [1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(IndexError):
        feats[5]
    unlabelled = convert_examples([Example("1", "가", "나", None)], tok, v["[CLS]"], v["[SEP]"], 128)
    assert unlabelled.labels is None and unlabelled[0]["label"] is None
    assert cls_data.collate([unlabelled[0]], v["[PAD]"], regression=True)["labels"].tolist() == [0.0]

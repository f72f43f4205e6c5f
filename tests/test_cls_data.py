"""Task flags, readers and metrics of cls_data on the bundled KorNLI/KorSTS files (CPU, no model)."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

import cls_data
from cls_data import TASKS, compute_metrics, read_examples

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



def test_a_task_added_to_tasks_is_a_choice_described_in_the_help(monkeypatch):
    """The task flags' choices and help texts come from TASKS (the help named KorNLI and KorSTS by hand)."""
    import argparse
    import dataclasses
    paws = dataclasses.replace(TASKS["kornli"], name="pawsx", labels=("0", "1"), train_files=("paws.train.tsv",),
                               dev_file="paws.dev.tsv", test_file="paws.test.tsv")
    monkeypatch.setitem(cls_data.TASKS, "pawsx", paws)
    parser = argparse.ArgumentParser()
    cls_data.add_task_args(parser)
    text = " ".join(parser.format_help().split())
    assert parser.parse_args(["--task_name", "PAWSX"]).task_name == "pawsx"
    for needle in ("pawsx (2 classes)", "korsts (regression)", "kornli (3 classes)", "pawsx: paws.train.tsv",
                   "pawsx paws.dev.tsv", "pawsx paws.test.tsv", "korsts sts-test.tsv"):
        assert needle in text, needle


def test_pair_orders_only_for_symmetric_tasks():
    cls_data.check_pair_orders("both", STS)
    cls_data.check_pair_orders("one", NLI)
    with pytest.raises(ValueError, match="--pair_orders both: kornli's label depends on the pair's order"):
        cls_data.check_pair_orders("both", NLI)
    with pytest.raises(ValueError, match="x.json pair_orders 'two': expected one of one, both"):
        cls_data.check_pair_orders("two", STS, "x.json pair_orders")


# ---------------------------------------------------------------------------------------------------------- metrics

def test_a_task_main_metric_must_be_one_it_is_scored_with():
    """A new task naming a metric compute_metrics does not give is refused where it is defined, not with a KeyError
    after its first training epoch; the metrics named are the ones compute_metrics returns."""
    import dataclasses
    with pytest.raises(ValueError, match=r"task kornli: main_metric 'f1' is not one of .*\(accuracy\)"):
        dataclasses.replace(TASKS["kornli"], main_metric="f1")
    with pytest.raises(ValueError, match="main_metric 'accuracy'"):
        dataclasses.replace(TASKS["korsts"], main_metric="accuracy")
    for task, logits, labels in ((TASKS["kornli"], [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], [1, 2]),
                                 (TASKS["korsts"], [0.1, 0.5, 0.2], [1.0, 4.0, 2.0])):
        assert tuple(compute_metrics(task, logits, labels)) == task.metrics and task.main_metric in task.metrics


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


def test_mean_std_over_seeds_is_the_sample_statistics_of_the_defined_scores():
    """The statistics module as the oracle: mean and sample standard deviation (n - 1) of the seeds' scores, an
    undefined one (NaN, or null read back from JSON) left out; too few for a deviation gives None."""
    import statistics
    scores = [71.5, None, 68.25, float("nan"), 74.0, 70.0]
    defined = [71.5, 68.25, 74.0, 70.0]
    mean, std, n = cls_data.mean_std(scores)
    assert n == 4 and mean == pytest.approx(statistics.mean(defined))
    assert std == pytest.approx(statistics.stdev(defined))
    assert cls_data.mean_std([80.0, None]) == (80.0, None, 1)
    assert cls_data.mean_std([None, float("nan")]) == (None, None, 0)


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

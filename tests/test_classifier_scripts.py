"""run_classifier.py / eval_classifier.py end to end on real KorSTS / KorNLI slices with a tiny model on the CPU.

The overfit test is the functional proof that labels and features are wired right: a model that memorises a
couple dozen KorSTS pairs must rank them almost perfectly (Spearman > 90 on its own training rows).
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(1, os.path.join(ROOT, "bench"))

import eval_classifier  # noqa: E402
import korsts_genres  # noqa: E402
import run_classifier  # noqa: E402
from cls_helpers import (NLI_DIR, STS_DIR, STS_TRAIN, copy_checkpoint, eval_argv, read_json,  # noqa: E402
                         read_jsonl, read_predictions, train_argv)
from helpers import expect_fail, file_digests, one_thread  # noqa: E402,F401 (one_thread: autouse)


@pytest.fixture(scope="module")
def kornli_run(cls_env):
    out = cls_env["dir"] / "kornli"
    return out, run_classifier.main(train_argv(cls_env, out, "--do_eval", "--do_test", task="kornli", n_train=96))


# -------------------------------------------------------------------------------------------------------- KorSTS

def test_korsts_run_keeps_best_epoch_and_writes_outputs(korsts_run):
    out, results = korsts_run
    assert (out / "notes.txt").read_text() == "keep me"
    saved = read_json(out / "eval_results.json")
    assert saved["best_epoch"] == results["best_epoch"] and saved["test"] == results["test"]
    epochs = saved["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2] and saved["train_examples"] == 200 and saved["dev_examples"] == 100
    best = max(epochs, key=lambda e: e["spearman"])
    assert saved["best_epoch"] == best["epoch"]
    assert saved["best"] == {"pearson": best["pearson"], "spearman": best["spearman"]}
    for m in (*epochs, saved["test"]):
        assert -100 <= m["spearman"] <= 100 and -100 <= m["pearson"] <= 100
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]
    assert sorted(os.listdir(out / "best")) == ["config.json", "model.safetensors", "task.json", "vocab.txt"]
    assert read_json(out / "best" / "config.json")["num_labels"] == 1
    assert read_json(out / "best" / "task.json")["task_name"] == "korsts"
    log = read_jsonl(out / "log.jsonl")
    assert [r["dev_spearman"] for r in log if "dev_spearman" in r] == [e["spearman"] for e in epochs]
    assert [r["step"] for r in log if "loss" in r] == list(range(2, 27, 2))  # 13 steps/epoch (200 rows / 16)
    assert (out / "dev_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_classifier_from_self_describing_checkpoint(korsts_run, capsys, tmp_path):
    out, results = korsts_run
    capsys.readouterr()
    metrics = eval_classifier.main(eval_argv(out / "best", "korsts", "--output_dir", str(tmp_path / "test")))
    # no --config_file/--vocab_file: the checkpoint carries both, and it scores exactly what training reported
    assert {k: metrics[k] for k in ("pearson", "spearman")} == results["test"]
    assert metrics["examples"] == 100 and metrics["eval_file"].endswith("sts-test.tsv")
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == metrics
    assert read_json(tmp_path / "test" / "eval_results.json") == metrics
    # predictions.tsv: every row in the file's order (evaluation batches by length), gold as in the file
    rows = read_predictions(tmp_path / "test" / "predictions.tsv")
    assert [r[0] for r in rows] == [f"sts-test.tsv:{i}" for i in range(2, 102)]
    with open(os.path.join(STS_DIR, "sts-test.tsv"), encoding="utf-8") as f:
        gold = [float(line.split("\t")[4]) for line in f.read().split("\n")[1:101]]
    assert [float(r[1]) for r in rows] == gold
    pred = np.array([r[2] for r in rows], dtype=np.float32).astype(np.float64)  # the float32 scores, exactly
    assert stats.spearmanr(pred, gold)[0] * 100 == pytest.approx(metrics["spearman"], abs=1e-9)
    assert stats.pearsonr(pred, gold)[0] * 100 == pytest.approx(metrics["pearson"], abs=1e-9)
    # the weights file named directly: vocab.txt and task.json are found beside it
    by_file = eval_classifier.main(eval_argv(out / "best" / "model.safetensors", "korsts"))
    assert {k: by_file[k] for k in ("pearson", "spearman")} == results["test"]
    # best/ really is the best epoch: re-scoring it on the dev slice gives the recorded best dev metrics
    dev = eval_classifier.main(eval_argv(out / "best", "korsts", "--eval_file", os.path.join(STS_DIR, "sts-dev.tsv")))
    assert {k: dev[k] for k in ("pearson", "spearman")} == results["best"]
    # bench/korsts_genres.py scores predictions per genre: here on every 15th dev row (all three genres), against
    # the genre column and the predictions read here
    with open(os.path.join(STS_DIR, "sts-dev.tsv"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    (tmp_path / "mix").mkdir()
    (tmp_path / "mix" / "sts-mix.tsv").write_text("\n".join([lines[0], *lines[1:-1:15]]) + "\n", encoding="utf-8")
    mix = eval_classifier.main(eval_argv(out / "best", "korsts", "--eval_file", str(tmp_path / "mix" / "sts-mix.tsv"),
                                         "--output_dir", str(tmp_path / "mix" / "eval")))
    genres = korsts_genres.by_genre(str(tmp_path / "mix" / "eval" / "predictions.tsv"), str(tmp_path / "mix"))
    genre_of = [line.split("\t")[0] for line in lines[1:-1:15]]
    rows = read_predictions(tmp_path / "mix" / "eval" / "predictions.tsv")
    pred, gold = np.array([float(r[2]) for r in rows]), np.array([float(r[1]) for r in rows])
    assert genres["all"] == {"n": len(rows), "spearman": round(mix["spearman"], 2)} and len(set(genre_of)) == 3
    for g in set(genre_of):
        idx = [i for i, x in enumerate(genre_of) if x == g]
        assert genres[g] == {"n": len(idx), "spearman": round(100 * stats.spearmanr(pred[idx], gold[idx])[0], 2)}
    assert set(genres) == set(genre_of) | {"all", "within_genres"}
    centred = np.concatenate([np.stack([v - v.mean() for v in (gold[m], pred[m])])
                              for m in (np.array(genre_of) == g for g in set(genre_of))], axis=1)
    assert genres["within_genres"] == {"n": len(rows), "spearman": round(100 * stats.spearmanr(*centred)[0], 2)}
    with pytest.raises(SystemExit):  # not a predictions file
        korsts_genres.by_genre(str(tmp_path / "mix" / "sts-mix.tsv"), str(tmp_path / "mix"))


def test_eval_classifier_predicts_a_file_without_labels(korsts_run, kornli_run, capsys, tmp_path):
    """A file whose header has no label column (new pairs to score) is predicted and not scored: null metrics, exit
    0, predictions.tsv with an empty gold column and the predictions the labelled file gets. A label column with a
    bad value stays an error (the score would be on a subset)."""
    for (out, _), task, data, name, col in ((korsts_run, "korsts", STS_DIR, "sts-test.tsv", "score"),
                                            (kornli_run, "kornli", NLI_DIR, "xnli.test.ko.tsv", "gold_label")):
        with open(os.path.join(data, name), encoding="utf-8") as f:
            lines = f.read().split("\n")[:41]
        drop = lines[0].split("\t").index(col)
        blind = tmp_path / f"{task}_blind.tsv"
        blind.write_text("\n".join("\t".join(x for i, x in enumerate(line.split("\t")) if i != drop)
                                   for line in lines) + "\n", encoding="utf-8")
        labelled = tmp_path / f"{task}_labelled.tsv"
        labelled.write_text("\n".join(lines) + "\n", encoding="utf-8")
        capsys.readouterr()
        res = eval_classifier.main(eval_argv(out / "best", task, "--eval_file", str(blind), "--output_dir",
                                             str(tmp_path / f"{task}_blind")))
        metric = "spearman" if task == "korsts" else "accuracy"
        assert res[metric] is None and res["examples"] == 40
        assert capsys.readouterr().out.count(f"no '{col}' column, predicted and not scored") == 1
        eval_classifier.main(eval_argv(out / "best", task, "--eval_file", str(labelled), "--output_dir",
                                       str(tmp_path / f"{task}_labelled")))
        blind_rows = read_predictions(tmp_path / f"{task}_blind" / "predictions.tsv")
        gold_rows = read_predictions(tmp_path / f"{task}_labelled" / "predictions.tsv")
        assert [r[1] for r in blind_rows] == [""] * 40 and [r[2] for r in blind_rows] == [r[2] for r in gold_rows]


def test_korsts_genres_reads_rows_as_eval_classifier_does(tmp_path, capsys):
    """A stray CR inside a sentence does not end its row (cls_data splits at LF only, and the guids count lines
    so): every row keeps its own genre (they used to shift by one from there on). A predictions file with no rows
    is one line, not a traceback."""
    with open(os.path.join(STS_DIR, "sts-dev.tsv"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    rows = [lines[0]] + lines[1:-1:40][:30]
    fields = rows[2].split("\t")
    fields[5] = fields[5][:3] + "\r" + fields[5][3:]  # sentence1 of the second row
    rows[2] = "\t".join(fields)
    (tmp_path / "sts-cr.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8", newline="")
    preds = ["guid\tgold\tprediction"] + [f"sts-cr.tsv:{i}\t{r.split(chr(9))[4]}\t{r.split(chr(9))[4]}"
                                            for i, r in enumerate(rows[1:], start=2)]
    (tmp_path / "predictions.tsv").write_text("\n".join(preds) + "\n", encoding="utf-8")
    genres = korsts_genres.by_genre(str(tmp_path / "predictions.tsv"), str(tmp_path))
    want = {g: sum(r.split("\t")[0] == g for r in rows[1:]) for g in {r.split("\t")[0] for r in rows[1:]}}
    assert {g: genres[g]["n"] for g in want} == want and set(genres) == set(want) | {"all", "within_genres"}
    (tmp_path / "empty.tsv").write_text("guid\tgold\tprediction\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        korsts_genres.by_genre(str(tmp_path / "empty.tsv"), str(tmp_path))
    assert "no predictions after its header" in capsys.readouterr().err


def test_eval_widths_rounded_to_a_multiple_predict_the_same(korsts_run, tmp_path):
    # every batch widened to a multiple of 48 (at most 128): the extra positions are masked keys. The scores agree
    # to float rounding (2e-7 here; unmasked, the padding moves them by 7e-4), not the metrics: this model's
    # scores lie within 1e-3 of each other, so rounding alone can swap ranks
    out, _ = korsts_run
    scores = {}
    for n in ("1", "48"):
        eval_classifier.main(eval_argv(out / "best", "korsts", "--pad_to_multiple_of", n, "--output_dir",
                                       str(tmp_path / n)))
        scores[n] = np.array([float(r[2]) for r in read_predictions(tmp_path / n / "predictions.tsv")])
    assert len(scores["1"]) == 100 and np.abs(scores["48"] - scores["1"]).max() < 1e-5


def test_eval_classifier_release_command_line(korsts_run):
    out, results = korsts_run
    argv = ["--data_dir", STS_DIR, "--task_name", "korsts", "--config_file", str(out / "best" / "config.json"),
            "--vocab_file", str(out / "best" / "vocab.txt"), "--checkpoint", str(out / "best"),
            "--max_seq_length", "128", "--eval_batch_size", "32", "--max_eval_examples", "100", "--no_cuda"]
    metrics = eval_classifier.main(argv)
    assert {k: metrics[k] for k in ("pearson", "spearman")} == results["test"]
    # scoring stays float32 under --amp: bf16 logits would tie near-equal scores and move Spearman
    metrics = eval_classifier.main(argv + ["--amp", "bf16"])
    assert {k: metrics[k] for k in ("pearson", "spearman")} == results["test"]


def test_eval_classifier_reads_a_release_bin_once(korsts_run, tmp_path, monkeypatch):
    # a release .bin is one pickle read whole: the head check and the load share one read
    import convert_checkpoint
    out, results = korsts_run
    convert_checkpoint.main(["--input", str(out / "best"), "--output", str(tmp_path / "sts.bin"), "--to", "release"])
    loads, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: loads.append(str(f)) or real_load(f, *a, **k))
    metrics = eval_classifier.main(eval_argv(tmp_path / "sts.bin", "korsts", "--config_file",
                                             str(out / "best" / "config.json"), "--vocab_file",
                                             str(out / "best" / "vocab.txt"), "--max_seq_length", "128"))
    assert {k: metrics[k] for k in ("pearson", "spearman")} == results["test"]
    assert loads == [str(tmp_path / "sts.bin")]


def test_eval_takes_max_seq_length_from_task_json(korsts_run, capsys, tmp_path):
    """A checkpoint fine-tuned at 16 tokens is scored at 16 unless told otherwise (inputs longer than in training
    score differently); an explicit other length is used, with a warning."""
    out, _ = korsts_run
    ckpt = copy_checkpoint(out / "best", tmp_path / "short", max_seq_length=16)
    default = eval_classifier.main(eval_argv(ckpt, "korsts"))
    explicit = eval_classifier.main(eval_argv(ckpt, "korsts", "--max_seq_length", "16"))
    assert "warning" not in capsys.readouterr().err
    assert default["spearman"] == explicit["spearman"] and default["max_seq_length"] == 16
    longer = eval_classifier.main(eval_argv(ckpt, "korsts", "--max_seq_length", "128"))
    err = capsys.readouterr().err
    assert "warning: --max_seq_length 128, but" in err and "fine-tuned with 16" in err
    assert longer["max_seq_length"] == 128 and longer["spearman"] != default["spearman"]
    # found beside a weights file too
    assert eval_classifier.main(eval_argv(ckpt / "model.safetensors", "korsts"))["spearman"] == default["spearman"]


def test_eval_bad_checkpoint_or_length_is_one_line_exit_2(korsts_run, cls_env, capsys, tmp_path):
    out, _ = korsts_run
    ckpt = copy_checkpoint(out / "best", tmp_path / "cut")
    text = (ckpt / "config.json").read_text(encoding="utf-8")
    (ckpt / "config.json").write_text(text[:len(text) // 2], encoding="utf-8")  # a copy cut short
    expect_fail(capsys, eval_classifier.main, eval_argv(ckpt, "korsts"), "config.json", "not valid JSON")
    edited = copy_checkpoint(out / "best", tmp_path / "edited", max_seq_length="128")  # a hand-edited task.json
    expect_fail(capsys, eval_classifier.main, eval_argv(edited, "korsts"), "task.json: max_seq_length is '128'")
    expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts", "--max_seq_length", "2"),
                "--max_seq_length 2")
    expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts", "--max_eval_examples", "0"),
                "--max_eval_examples 0 must be >= 1")
    # a pretraining checkpoint (MLM/SOP heads, default num_labels 2): not "a 2-label head"
    from models.modeling import BertConfig, BertForPreTraining, save_checkpoint
    save_checkpoint(BertForPreTraining(BertConfig.from_json_file(cls_env["config"])), str(tmp_path / "pre"),
                    vocab_file=cls_env["vocab"])
    line = expect_fail(capsys, eval_classifier.main, eval_argv(tmp_path / "pre", "korsts"),
                       "has no classifier head", "run_classifier.py")
    assert "label head" not in line


def test_bad_dev_or_test_row_is_an_error_not_skipped(korsts_run, cls_env, capsys, tmp_path):
    """A score on the rows that happened to parse would pass for the whole file's."""
    out, _ = korsts_run
    with open(os.path.join(STS_DIR, "sts-dev.tsv"), encoding="utf-8") as f:
        lines = f.read().split("\n")[:30]
    lines[12] = lines[12].replace("\t", "\t\t", 1)  # line 13: a stray tab
    bad = tmp_path / "dev.tsv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts", "--eval_file", str(bad)),
                "dev.tsv line 13:", "fields")
    expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts", "--test_file", str(bad)),
                "dev.tsv line 13:", "fields")
    # run_classifier's other file flags would be ignored here, and the test file scored in their place
    dev = os.path.join(STS_DIR, "sts-dev.tsv")
    for flag in ("--dev_file", "--train_file"):
        expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts", flag, dev), flag, "--eval_file")
    expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts", "--eval_file", dev, "--test_file",
                                                        str(bad)), "name two files")
    expect_fail(capsys, run_classifier.main, train_argv(cls_env, tmp_path / "never", "--do_eval", "--dev_file", str(bad)),
                "dev.tsv line 13:", "fields")
    assert not (tmp_path / "never").exists()


def test_overfits_its_training_rows(cls_env, tmp_path):
    """Learnability: scored on its own 24 training pairs, the model must rank them almost perfectly."""
    out = tmp_path / "fit"
    r = run_classifier.main(train_argv(cls_env, out, "--train_batch_size", "4", "--learning_rate", "2e-3",
                                       "--warmup_proportion", "0.05", n_train=24, epochs=30))
    # without --do_eval: the last epoch's weights in final/, no dev metrics
    assert sorted(os.listdir(out)) == ["eval_results.json", "final", "log.jsonl"]
    assert r["best"] is None and r["checkpoint"] == str(out / "final") and len(r["epochs"]) == 30
    m = eval_classifier.main(eval_argv(out / "final", "korsts", "--eval_file", STS_TRAIN, "--max_eval_examples", "24"))
    assert m["examples"] == 24 and m["spearman"] > 90, m


# -------------------------------------------------------------------------------------------------------- KorNLI

def test_kornli_with_xnli_dev_as_training_set(kornli_run, capsys):
    out, results = kornli_run
    assert results["labels"] == ["contradiction", "entailment", "neutral"] and results["train_examples"] == 96
    assert read_json(out / "best" / "config.json")["num_labels"] == 3
    assert read_json(out / "best" / "task.json")["labels"] == results["labels"]
    acc = results["test"]["accuracy"]
    assert 0 <= acc <= 100 and acc == pytest.approx(round(acc))  # k of the 100 test pairs right
    metrics = eval_classifier.main(eval_argv(out / "best", "kornli", "--output_dir", str(out / "test")))
    assert metrics["accuracy"] == acc and metrics["eval_file"].endswith("xnli.test.ko.tsv")
    rows = read_predictions(out / "test" / "predictions.tsv")
    assert [r[0] for r in rows] == [f"xnli.test.ko.tsv:{i}" for i in range(2, 102)]
    with open(os.path.join(NLI_DIR, "xnli.test.ko.tsv"), encoding="utf-8") as f:
        assert [r[1] for r in rows] == [line.split("\t")[2] for line in f.read().split("\n")[1:101]]
    assert {r[2] for r in rows} <= set(results["labels"])
    assert 100 * np.mean([r[1] == r[2] for r in rows]) == pytest.approx(acc)
    # the KorNLI checkpoint refuses to score KorSTS, naming the task it was trained for
    expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts"), "fine-tuned for kornli")


def test_fine_tuned_head_names_its_rows(kornli_run, monkeypatch, tmp_path):
    """A checkpoint of run_classifier.py names its head's rows in config.json (id2label), so a task whose labels
    are listed in another order later (a label added, the list re-sorted) is scored with each row under its own
    name, not with the classes silently swapped."""
    import dataclasses

    import cls_data
    out, results = kornli_run
    assert read_json(out / "best" / "config.json")["id2label"] == {
        str(i): name for i, name in enumerate(results["labels"])}
    eval_classifier.main(eval_argv(out / "best", "kornli", "--output_dir", str(tmp_path / "as_trained")))
    reordered = tuple(reversed(results["labels"]))
    monkeypatch.setitem(cls_data.TASKS, "kornli", dataclasses.replace(cls_data.TASKS["kornli"], labels=reordered))
    metrics = eval_classifier.main(eval_argv(out / "best", "kornli", "--output_dir", str(tmp_path / "reordered")))
    assert metrics["labels"] == list(reordered)
    assert read_predictions(tmp_path / "reordered" / "predictions.tsv") == read_predictions(
        tmp_path / "as_trained" / "predictions.tsv")
    assert metrics["accuracy"] == results["test"]["accuracy"]


def test_a_checkpoint_of_another_task_fails_naming_what_it_is(kornli_run, korsts_run, capsys, tmp_path):
    """A KorNLI checkpoint scored as KorSTS (or the other way): its task.json names the task it was fine-tuned for;
    without one, its head's size does. One line either way, not a shape mismatch in the middle of loading."""
    nli, sts = kornli_run[0] / "best", korsts_run[0] / "best"
    expect_fail(capsys, eval_classifier.main, eval_argv(nli, "korsts"), "fine-tuned for kornli, not --task_name korsts")
    expect_fail(capsys, eval_classifier.main, eval_argv(sts, "kornli"), "fine-tuned for korsts, not --task_name kornli")
    bare = copy_checkpoint(nli, tmp_path / "bare")
    (bare / "task.json").unlink()  # e.g. a converted or hand-copied checkpoint
    expect_fail(capsys, eval_classifier.main, eval_argv(bare, "korsts"), "has a 3-label head but korsts needs 1")


# ----------------------------------------------------------------------------------------------------- bad input

def test_release_korsts_command_as_the_shell_runs_it():
    """The release README's KorSTS training command has no line continuation after --do_eval, so a shell runs it
    without the flags on the lines below; the release's defaults made that the same run, and so must ours."""
    first = ["--data_dir", STS_DIR, "--task_name", "korsts", "--config_file", "CONFIG", "--vocab_file", "VOCAB",
             "--checkpoint", "MODEL", "--do_eval"]
    rest = ["--max_seq_length", "128", "--train_batch_size", "16", "--eval_batch_size", "32", "--learning_rate",
            "3e-5", "--num_train_epochs", "10.0", "--warmup_proportion", "0.1"]
    parser = run_classifier.build_parser()
    assert vars(parser.parse_args(first)) == vars(parser.parse_args(first + rest))


def test_release_kornli_command_without_train_file_fails_clearly(korsts_run, cls_env, capsys, tmp_path):
    out, _ = korsts_run
    argv = ["--data_dir", NLI_DIR, "--task_name", "kornli", "--config_file", cls_env["config"],
            "--vocab_file", cls_env["vocab"], "--checkpoint", str(out / "best"), "--do_eval", "--max_seq_length", "128",
            "--train_batch_size", "32", "--eval_batch_size", "32", "--learning_rate", "3e-5",
            "--num_train_epochs", "3.0", "--warmup_proportion", "0.1",
            "--no_cuda", "--output_dir", str(tmp_path / "never")]
    expect_fail(capsys, run_classifier.main, argv, "multinli.train.ko.tsv", "--train_file")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("text,needles", [
    ("sentence1\tsentence2\tsimilarity\n가\t나\t1.0\n", ("bad.tsv", "no column 'score'")),
    ("", ("bad.tsv", "empty file")),
])
def test_bad_train_file_fails_and_leaves_output_dir_alone(cls_env, capsys, tmp_path, text, needles):
    bad = tmp_path / "bad.tsv"
    bad.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    expect_fail(capsys, run_classifier.main, train_argv(cls_env, out, "--train_file", str(bad)), *needles)
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"



def test_an_unfinished_runs_checkpoints_are_replaced_whole(korsts_run, cls_env, tmp_path, capsys):
    """An unfinished run's best/ and final/ (no eval_results.json: killed) are removed before the new run saves:
    best/ used to stay when the rerun had no --do_eval (it writes final/), and a kept folder kept a killed write's
    hidden files. A --checkpoint inside them is refused first, with nothing removed."""
    out = tmp_path / "killed"
    shutil.copytree(korsts_run[0] / "best", out / "best")
    (out / "best" / ".model.safetensors.tmp1234").write_text("cut short")
    (out / "final").mkdir()
    (out / "final" / "stray.txt").write_text("from the killed run")
    before = file_digests(out)
    expect_fail(capsys, run_classifier.main, train_argv(cls_env, out, "--checkpoint", str(out / "best")),
                f"--checkpoint {out / 'best'} is part of the unfinished run in {out}")
    assert file_digests(out) == before
    run_classifier.main(train_argv(cls_env, out, n_train=16))
    assert "holds best/ and final/ from an unfinished run: replaced" in capsys.readouterr().err
    assert not (out / "best").exists() and sorted(os.listdir(out / "final")) == ["config.json", "model.safetensors",
                                                                                 "task.json", "vocab.txt"]

def test_finished_run_is_never_overwritten(korsts_run, cls_env, capsys):
    out, _ = korsts_run
    before = file_digests(out)
    expect_fail(capsys, run_classifier.main, train_argv(cls_env, out), "already holds a finished run")
    expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts", "--output_dir", str(out)),
                "eval_results.json already exists")
    assert file_digests(out) == before


def test_an_evaluation_killed_before_its_results_is_replaced_by_the_same_command(korsts_run, capsys, tmp_path):
    """predictions.tsv is written before eval_results.json, the mark of a finished evaluation: a kill in between
    left a folder that the same command (a quickstart test stage) refused for good ('predictions.tsv already
    exists'). It now replaces the lone predictions.tsv, with a warning; a finished evaluation is still refused."""
    out, _ = korsts_run
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    (test_dir / "predictions.tsv").write_text("guid\tgold\tprediction\nsts-test.tsv:2\t", encoding="utf-8")
    capsys.readouterr()
    metrics = eval_classifier.main(eval_argv(out / "best", "korsts", "--output_dir", str(test_dir)))
    assert "predictions.tsv is left from an unfinished evaluation (no eval_results.json): replacing it" in \
        capsys.readouterr().err
    assert read_json(test_dir / "eval_results.json") == metrics
    assert len(read_predictions(test_dir / "predictions.tsv")) == 100
    expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts", "--output_dir", str(test_dir)),
                "eval_results.json already exists")


def test_vocab_size_mismatch_is_one_line_exit_2(korsts_run, tmp_path):
    out, _ = korsts_run
    other = tmp_path / "other_vocab.txt"
    other.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n가\n나\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "eval_classifier.py", *eval_argv(out / "best", "korsts"),
                           "--vocab_file", str(other), "--output_dir", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: vocab size mismatch"), proc.stderr
    assert "other_vocab.txt" in err[0]
    assert not (tmp_path / "o").exists()


def test_flag_errors(cls_env, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        run_classifier.main(train_argv(cls_env, tmp_path / "x", task="korsts")[2:] + ["--task_name", "kornsts"])
    assert e.value.code == 2 and "invalid choice: 'kornsts'" in capsys.readouterr().err
    expect_fail(capsys, run_classifier.main, train_argv(cls_env, tmp_path / "x", "--seeds", "1-3"), "--seeds", "--do_eval")
    expect_fail(capsys, run_classifier.main, train_argv(cls_env, tmp_path / "x", "--train_batch_size", "10",
                                                        "--gradient_accumulation_steps", "4"), "--train_batch_size 10")
    expect_fail(capsys, run_classifier.main, train_argv(cls_env, tmp_path / "x", "--max_seq_length", "1024"),
                "max_position_embeddings")
    # refused up front, not with a traceback after the data and model are loaded
    (tmp_path / "a_file").write_text("")
    for flags, needle in ((["--warmup_proportion", "1.0"], "--warmup_proportion 1.0: must be in [0, 1)"),
                          (["--learning_rate=-1e-4"], "--learning_rate -0.0001: must be >= 0"),
                          (["--learning_rate", "nan"], "--learning_rate nan: must be >= 0"),
                          (["--max_grad_norm", "-1"], "--max_grad_norm -1.0: must be >= 0 (0: no clipping)"),
                          (["--adam_epsilon", "0"], "--adam_epsilon 0.0: must be a positive number"),
                          (["--num_workers", "-1"], "--num_workers -1: must be >= 0"),
                          (["--num_train_epochs", "inf"], "--num_train_epochs inf: must be a positive number"),
                          (["--output_dir", str(tmp_path / "a_file")], "a_file: exists and is not a directory"),
                          (["--output_dir", str(tmp_path / "a_file" / "x")], "a_file is a file"),
                          (["--max_train_examples", "0"], "--max_train_examples 0 must be >= 1"),
                          (["--max_eval_examples", "-2"], "--max_eval_examples -2 must be >= 1"),
                          (["--max_seq_length", "2"], "--max_seq_length 2 leaves no room"),
                          (["--pad_to_multiple_of", "0"], "--pad_to_multiple_of 0: must be a positive"),
                          (["--layer_lr_decay", "0"], "--layer_lr_decay 0.0: must be in (0, 1]"),
                          (["--compile_mode", "reduce-overhead"], "--compile_mode reduce-overhead applies to a "
                           "compiled model: add --compile"),
                          (["--compile", "--compile_mode", "reduce-overhead", "--train_batch_size", "4",
                            "--gradient_accumulation_steps", "2"], "takes one micro-batch per step")):
        expect_fail(capsys, run_classifier.main, train_argv(cls_env, tmp_path / "x", "--do_eval", *flags), needle)
    assert not (tmp_path / "x").exists()
    expect_fail(capsys, eval_classifier.main, eval_argv(tmp_path / "nowhere", "korsts", "--pad_to_multiple_of", "-1"),
                "--pad_to_multiple_of -1")
    expect_fail(capsys, eval_classifier.main, eval_argv(tmp_path / "nowhere", "korsts", "--output_dir",
                                                        str(tmp_path / "a_file")), "a_file: exists and is not a dir")
    expect_fail(capsys, eval_classifier.main, eval_argv(tmp_path / "nowhere", "korsts", "--output_dir",
                                                        str(tmp_path / "a_file" / "e")), "a_file is a file")


def test_max_grad_norm_zero_turns_clipping_off(cls_env, tmp_path):
    """--max_grad_norm 0 trains as an unreachable norm does (no clipping, as in Hugging Face's Trainer), where torch's
    clip_grad_norm_(0) would zero every gradient; the log still reports the gradients' norm."""
    from safetensors.torch import load_file
    weights = {}
    for name, norm in (("off", "0"), ("huge", "1e9"), ("tight", "1e-3")):
        run_classifier.main(train_argv(cls_env, tmp_path / name, "--max_grad_norm", norm))
        weights[name] = load_file(str(tmp_path / name / "final" / "model.safetensors"))
        log = read_jsonl(tmp_path / name / "log.jsonl")
        assert all(row["grad_norm"] > 0.01 for row in log if "grad_norm" in row)
    assert all(torch.equal(weights["off"][k], weights["huge"][k]) for k in weights["off"])
    assert any(not torch.equal(weights["off"][k], weights["tight"][k]) for k in weights["off"])


def test_release_apex_flags_and_task_name_case(cls_env, capsys, tmp_path):
    """The release's run_classifier took apex's --fp16_opt_level/--loss_scale and KorSTS/KorNLI."""
    argv = ["--task_name", "KorSTS", "--data_dir", STS_DIR, "--fp16", "--fp16_opt_level", "O2", "--loss_scale", "0"]
    args = run_classifier.build_parser().parse_args(argv)
    assert args.task_name == "korsts" and args.amp == "fp16" and args.fp16_opt_level == "O2"
    assert run_classifier.build_parser().parse_args(["--task_name", "KorNLI"]).task_name == "kornli"
    assert eval_classifier.build_parser().parse_args(["--task_name", "KorNLI"]).task_name == "kornli"
    # accepted with one warning, then ignored (here the run stops at a bad flag, before any training)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_classifier.main(train_argv(cls_env, tmp_path / "x", "--fp16_opt_level", "O1", "--loss_scale", "128",
                                       "--warmup_proportion", "1")[2:] + ["--task_name", "KorSTS"])
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("warning:")] == [
        ("warning: --fp16_opt_level and --loss_scale are apex options and are ignored: mixed precision is native AMP "
         "(--amp fp16 scales the loss dynamically)")]
    assert err[-1].startswith("error: --warmup_proportion 1.0")


def test_a_converted_classifier_is_scored_as_it_was_fine_tuned(cls_env, tmp_path):
    """convert_checkpoint carries task.json (pair orders, input length, task) to its hf and ours outputs, so the
    converted model scores as the original does, and an hf export names its labels."""
    import convert_checkpoint
    run_classifier.main(train_argv(cls_env, tmp_path / "ft", "--do_eval", "--pair_orders", "score_both",
                                   "--max_seq_length", "48"))
    ckpt = tmp_path / "ft" / "best"
    eval_classifier.main(eval_argv(ckpt, "korsts", "--output_dir", str(tmp_path / "e")))
    for to in ("hf", "ours"):
        convert_checkpoint.main(["--input", str(ckpt), "--output", str(tmp_path / to), "--to", to])
        assert read_json(tmp_path / to / "task.json") == read_json(ckpt / "task.json")
        eval_classifier.main(eval_argv(tmp_path / to, "korsts", "--output_dir", str(tmp_path / f"e_{to}")))
        ours, theirs = (read_predictions(d / "predictions.tsv") for d in (tmp_path / "e", tmp_path / f"e_{to}"))
        assert [r[:2] for r in theirs] == [r[:2] for r in ours]
        assert np.allclose([float(r[2]) for r in theirs], [float(r[2]) for r in ours], atol=1e-5)


def test_an_hf_export_names_its_labels_from_task_json(kornli_run, tmp_path):
    """A checkpoint whose config.json does not name its head's rows (written before run_classifier put id2label
    there) still has them in task.json: the hf export's config names them, in row order, for transformers."""
    import convert_checkpoint
    out, results = kornli_run
    ckpt = copy_checkpoint(out / "best", tmp_path / "older")
    cfg = read_json(ckpt / "config.json")
    cfg.pop("id2label"), cfg.pop("label2id", None)
    (ckpt / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    convert_checkpoint.main(["--input", str(ckpt), "--output", str(tmp_path / "hf"), "--to", "hf"])
    import transformers
    hf_cfg = transformers.AutoConfig.from_pretrained(str(tmp_path / "hf"))
    assert [hf_cfg.id2label[i] for i in range(3)] == results["labels"] == read_json(ckpt / "task.json")["labels"]


def test_hf_label_names_decide_which_head_row_is_which(cls_env, tmp_path, capsys):
    """A classification checkpoint whose config names its labels in another order (transformers' id2label) is
    scored with its rows in the task's order; names that are not the task's are refused, not scored at random."""
    import copy

    import transformers
    from models.modeling import BertConfig, BertForSequenceClassification, save_checkpoint
    labels = ["contradiction", "entailment", "neutral"]  # kornli's order
    torch.manual_seed(0)
    # weights drawn wide, so that an untrained model's classes differ from pair to pair
    config = BertConfig.from_json_file(cls_env["config"])
    config.initializer_range = 1.0
    model = BertForSequenceClassification(config, num_labels=3)
    save_checkpoint(model, str(tmp_path / "a"), vocab_file=cls_env["vocab"], layout="hf", labels=labels)
    assert transformers.AutoConfig.from_pretrained(str(tmp_path / "a")).id2label == dict(enumerate(labels))
    perm = [2, 0, 1]  # row i of b is row perm[i] of a, and named so
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.classifier.weight.copy_(model.classifier.weight[perm])
        other.classifier.bias.copy_(model.classifier.bias[perm])
    save_checkpoint(other, str(tmp_path / "b"), vocab_file=cls_env["vocab"], layout="hf",
                    labels=[labels[j] for j in perm])
    preds = {}
    for name in ("a", "b"):
        eval_classifier.main(eval_argv(tmp_path / name, "kornli", "--output_dir", str(tmp_path / f"e_{name}")))
        preds[name] = read_predictions(tmp_path / f"e_{name}" / "predictions.tsv")
    assert preds["a"] == preds["b"] and len({r[2] for r in preds["a"]}) > 1
    assert "in another order" in capsys.readouterr().err
    # converted, the directory keeps its names (there is no task.json to take them from)
    import convert_checkpoint
    convert_checkpoint.main(["--input", str(tmp_path / "b"), "--output", str(tmp_path / "b_fp16"), "--to", "hf",
                             "--dtype", "float16"])
    assert transformers.AutoConfig.from_pretrained(str(tmp_path / "b_fp16")).id2label == {
        i: labels[j] for i, j in enumerate(perm)}
    eval_classifier.main(eval_argv(tmp_path / "b_fp16", "kornli", "--output_dir", str(tmp_path / "e_b_fp16")))
    agree = [x[2] == y[2] for x, y in zip(preds["a"], read_predictions(tmp_path / "e_b_fp16" / "predictions.tsv"))]
    assert sum(agree) >= 0.95 * len(agree)  # float16 weights: a near tie may flip
    # to our layout and back: the names go too (they were dropped, and the rows read in the task's order)
    convert_checkpoint.main(["--input", str(tmp_path / "b"), "--output", str(tmp_path / "b_ours"), "--to", "ours"])
    convert_checkpoint.main(["--input", str(tmp_path / "b_ours"), "--output", str(tmp_path / "b_back"), "--to", "hf"])
    assert transformers.AutoConfig.from_pretrained(str(tmp_path / "b_back")).id2label == {
        i: labels[j] for i, j in enumerate(perm)}
    for name in ("b_ours", "b_back"):
        eval_classifier.main(eval_argv(tmp_path / name, "kornli", "--output_dir", str(tmp_path / f"e_{name}")))
        assert read_predictions(tmp_path / f"e_{name}" / "predictions.tsv") == preds["a"], name
    save_checkpoint(model, str(tmp_path / "c"), vocab_file=cls_env["vocab"], layout="hf", labels=["yes", "no", "maybe"])
    expect_fail(capsys, eval_classifier.main, eval_argv(tmp_path / "c", "kornli"), "id2label names yes, no, maybe")
    # fine-tuning reads the rows as evaluation does: at lr 0 (weights unchanged) a and b score the same on dev and
    # test (b's rows were taken in their stored order: its labels mixed up from the first step)
    scores = {}
    for name in ("a", "b"):
        scores[name] = run_classifier.main(train_argv(
            cls_env, tmp_path / f"t_{name}", "--checkpoint", str(tmp_path / name), "--learning_rate", "0",
            "--do_eval", "--do_test", "--max_eval_examples", "60", task="kornli", n_train=32))
    assert "reordered to kornli's" in capsys.readouterr().err
    for key in ("best", "test"):
        assert scores["a"][key] == scores["b"][key], key
    expect_fail(capsys, run_classifier.main, train_argv(cls_env, tmp_path / "t_c", "--checkpoint", str(tmp_path / "c"),
                                                        task="kornli"), "id2label names yes, no, maybe",
                "--head_init_seed")
    assert not (tmp_path / "t_c").exists()


@pytest.mark.parametrize("logging_steps", ["1", "1000"])
def test_a_diverged_run_stops_before_saving_nan_weights(cls_env, tmp_path, capsys, logging_steps):
    """The loss turning NaN (lr 1e30) stops the run with one line at the log step that sees it or, with no log step
    in the epoch, at the epoch's end, before dev picks a best checkpoint of NaN weights."""
    out = tmp_path / "r"
    expect_fail(capsys, run_classifier.main, train_argv(cls_env, out, "--do_eval", "--learning_rate", "1e30",
                                                        "--logging_steps", logging_steps, epochs=2),
                "training loss is ")
    assert out.is_dir() and not any(p.name == "best" for p in out.rglob("*"))

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
from safetensors.torch import load_file
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(1, os.path.join(ROOT, "bench"))

import cls_data  # noqa: E402
import eval_classifier  # noqa: E402
import korsts_genres  # noqa: E402
import run_classifier  # noqa: E402
from helpers import expect_fail, file_digests, needs_cxx, one_thread, tiny_model_files  # noqa: E402,F401

STS_DIR = os.path.join(ROOT, "data", "korsts")
NLI_DIR = os.path.join(ROOT, "data", "kornli")
STS_TRAIN = os.path.join(STS_DIR, "sts-train.tsv")
NLI_DEV = os.path.join(NLI_DIR, "xnli.dev.ko.tsv")


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls_scripts")
    lines = []
    for name, n in (("unlabeled_comments_5.txt", 3000), ("boddari/wikinews.txt", 1500)):
        with open(os.path.join(ROOT, "data", "korean_text", name), encoding="utf-8") as f:
            lines += [f.readline() for _ in range(n)]
    vocab, config, nodrop = tiny_model_files(d, "".join(lines), 3000)
    return {"dir": d, "vocab": vocab, "config": config, "nodrop": nodrop}


def train_argv(env, out, *extra, task="korsts", n_train=64, epochs=1):
    data = ["--data_dir", STS_DIR] if task == "korsts" else ["--data_dir", NLI_DIR, "--train_file", NLI_DEV]
    return ["--task_name", task, *data, "--config_file", env["config"], "--vocab_file", env["vocab"],
            "--max_train_examples", str(n_train), "--max_eval_examples", "100", "--num_train_epochs", str(epochs),
            "--train_batch_size", "16", "--learning_rate", "1e-3", "--seed", "7", "--num_workers", "0",
            "--logging_steps", "2", "--no_cuda", "--output_dir", str(out), *extra]


def eval_argv(ckpt, task="korsts", *extra):
    return ["--task_name", task, "--data_dir", STS_DIR if task == "korsts" else NLI_DIR, "--checkpoint", str(ckpt),
            "--max_eval_examples", "100", "--no_cuda", *extra]


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_predictions(path):
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "guid\tgold\tprediction" and lines[-1] == ""
    return [line.split("\t") for line in lines[1:-1]]


def copy_checkpoint(src, dst, **task_json):
    """A copy of a checkpoint dir, with task.json fields overridden."""
    shutil.copytree(src, dst)
    meta = read_json(dst / "task.json")
    (dst / "task.json").write_text(json.dumps({**meta, **task_json}), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def korsts_run(env):
    out = env["dir"] / "korsts"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")  # an unrelated file already in the output dir
    results = run_classifier.main(train_argv(env, out, "--do_eval", "--do_test", n_train=200, epochs=2))
    return out, results


@pytest.fixture(scope="module")
def kornli_run(env):
    out = env["dir"] / "kornli"
    return out, run_classifier.main(train_argv(env, out, "--do_eval", "--do_test", task="kornli", n_train=96))


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


def test_eval_bad_checkpoint_or_length_is_one_line_exit_2(korsts_run, env, capsys, tmp_path):
    out, _ = korsts_run
    ckpt = copy_checkpoint(out / "best", tmp_path / "cut")
    text = (ckpt / "config.json").read_text(encoding="utf-8")
    (ckpt / "config.json").write_text(text[:len(text) // 2], encoding="utf-8")  # a copy cut short
    expect_fail(capsys, eval_classifier.main, eval_argv(ckpt, "korsts"), "config.json", "not valid JSON")
    expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts", "--max_seq_length", "2"),
                "--max_seq_length 2")
    expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts", "--max_eval_examples", "0"),
                "--max_eval_examples 0 must be >= 1")
    # a pretraining checkpoint (MLM/SOP heads, default num_labels 2): not "a 2-label head"
    from models.modeling import BertConfig, BertForPreTraining, save_checkpoint
    save_checkpoint(BertForPreTraining(BertConfig.from_json_file(env["config"])), str(tmp_path / "pre"),
                    vocab_file=env["vocab"])
    line = expect_fail(capsys, eval_classifier.main, eval_argv(tmp_path / "pre", "korsts"),
                       "has no classifier head", "run_classifier.py")
    assert "label head" not in line


def test_bad_dev_or_test_row_is_an_error_not_skipped(korsts_run, env, capsys, tmp_path):
    """A score on the rows that happened to parse would pass for the whole file's."""
    out, _ = korsts_run
    with open(os.path.join(STS_DIR, "sts-dev.tsv"), encoding="utf-8") as f:
        lines = f.read().split("\n")[:30]
    lines[12] = lines[12].replace("\t", "\t\t", 1)  # line 13: a stray tab
    bad = tmp_path / "dev.tsv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts", "--eval_file", str(bad)),
                "dev.tsv line 13:", "fields")
    expect_fail(capsys, run_classifier.main, train_argv(env, tmp_path / "never", "--do_eval", "--dev_file", str(bad)),
                "dev.tsv line 13:", "fields")
    assert not (tmp_path / "never").exists()


def test_overfits_its_training_rows(env, tmp_path):
    """Learnability: scored on its own 24 training pairs, the model must rank them almost perfectly."""
    out = tmp_path / "fit"
    r = run_classifier.main(train_argv(env, out, "--train_batch_size", "4", "--learning_rate", "2e-3",
                                       "--warmup_proportion", "0.05", n_train=24, epochs=30))
    # without --do_eval: the last epoch's weights in final/, no dev metrics
    assert sorted(os.listdir(out)) == ["eval_results.json", "final", "log.jsonl"]
    assert r["best"] is None and r["checkpoint"] == str(out / "final") and len(r["epochs"]) == 30
    m = eval_classifier.main(eval_argv(out / "final", "korsts", "--eval_file", STS_TRAIN, "--max_eval_examples", "24"))
    assert m["examples"] == 24 and m["spearman"] > 90, m


def test_reinit_pooler_starts_only_the_pooler_fresh(korsts_run, env, tmp_path):
    """From a checkpoint at a vanishing lr: with --reinit_pooler the pooler is a new initialisation (std
    initializer_range, zero bias) and every encoder weight is the checkpoint's; without it the pooler is kept."""
    ckpt = korsts_run[0] / "best"
    before = load_file(str(ckpt / "model.safetensors"))
    std = read_json(env["config"])["initializer_range"]
    for flag in ([], ["--reinit_pooler"]):
        out = tmp_path / ("new" if flag else "kept")
        run_classifier.main(train_argv(env, out, "--checkpoint", str(ckpt), "--learning_rate", "1e-12",
                                       *flag, n_train=16))
        after = load_file(str(out / "final" / "model.safetensors"))
        moved = {k for k in after if not torch.allclose(after[k], before[k], atol=1e-6)}
        assert moved == ({"bert.pooler.dense.weight", "bert.pooler.dense.bias"} if flag else set()), moved
    w, b = after["bert.pooler.dense.weight"], after["bert.pooler.dense.bias"]
    assert abs(w.std().item() - std) < 0.1 * std and b.abs().max() < 1e-6


@needs_cxx
def test_compile_trains_like_eager(env, tmp_path):
    """--compile: the same losses and weights as eager (dropout off), batches of varying width included (a
    second compile with dynamic shapes); checkpoints keep the plain keys and the dev scores come from them."""
    from torch._dynamo.utils import counters
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        counters.clear()
        runs[name] = run_classifier.main(train_argv(env, tmp_path / name, "--config_file", env["nodrop"],
                                                    "--do_eval", *extra, n_train=48, epochs=2))
        assert (counters["stats"]["unique_graphs"] > 0) == (name == "compiled")
    for a, b in zip(runs["eager"]["epochs"], runs["compiled"]["epochs"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["spearman"] == pytest.approx(a["spearman"], abs=0.05)
    ref = load_file(str(tmp_path / "eager" / "best" / "model.safetensors"))
    got = load_file(str(tmp_path / "compiled" / "best" / "model.safetensors"))
    assert got.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-3, atol=1e-4, msg=k)


def test_group_by_length_trains_on_less_padding(env, tmp_path, monkeypatch):
    fed = {}
    forward = run_classifier.BertForSequenceClassification.forward

    def spy(self, input_ids, *a, **k):
        if self.training:
            mask = k.get("attention_mask")  # a batch of full rows comes without one
            fed.setdefault(key[0], []).append((input_ids.numel(), input_ids.numel() if mask is None
                                               else int(mask.sum()), input_ids.shape[1]))
        return forward(self, input_ids, *a, **k)
    monkeypatch.setattr(run_classifier.BertForSequenceClassification, "forward", spy)
    key = ["random"]
    run_classifier.main(train_argv(env, tmp_path / "random", n_train=160, epochs=2))
    key[0] = "grouped"
    r = run_classifier.main(train_argv(env, tmp_path / "grouped", "--group_by_length", n_train=160, epochs=2))
    key[0] = "rounded"
    run_classifier.main(train_argv(env, tmp_path / "rounded", "--group_by_length", "--pad_to_multiple_of", "8",
                                   n_train=160, epochs=2))
    real = {k: sum(n for _, n, _ in v) for k, v in fed.items()}
    padded = {k: sum(n for n, _, _ in v) for k, v in fed.items()}
    assert real["grouped"] == real["random"] == real["rounded"]  # 160 = 10 full batches of 16, once per epoch
    assert padded["grouped"] < 0.8 * padded["random"]
    assert len(fed["grouped"]) == r["total_steps"] == 20
    # --pad_to_multiple_of reaches the training batches: each as wide as grouped's, rounded up to a multiple of 8
    assert [w for *_, w in fed["rounded"]] == [-(-w // 8) * 8 for *_, w in fed["grouped"]]


# ------------------------------------------------------------------------------------------- seeds, determinism

def test_seed_grid_tests_only_best_seed_and_runs_are_deterministic(env, tmp_path, capsys, monkeypatch):
    argv = train_argv(env, tmp_path / "grid", "--do_eval", "--do_test", "--seeds", "1,2")
    grid = run_classifier.main(argv)
    saved = read_json(tmp_path / "grid" / "seed_grid.json")
    assert saved["best_seed_on_dev"] == grid["best_seed_on_dev"] and set(saved["seeds"]) == {"1", "2"}
    dev = {s: saved["seeds"][s]["spearman"] for s in ("1", "2")}
    assert dev["1"] != dev["2"]  # the seed changes the run
    assert saved["best_seed_on_dev"] == max((1, 2), key=lambda s: dev[str(s)])
    assert saved["dev_spearman_mean"] == pytest.approx(np.mean(list(dev.values())))
    assert saved["dev_spearman_std"] == pytest.approx(np.std(list(dev.values()), ddof=1))
    best = saved["best_seed_on_dev"]
    assert saved["test_checkpoint"] == str(tmp_path / "grid" / f"seed-{best}" / "best")
    for s in (1, 2):  # each seed's own results: dev only, never test
        per_seed = read_json(tmp_path / "grid" / f"seed-{s}" / "eval_results.json")
        assert "test" not in per_seed and per_seed["seed"] == s and per_seed["best"]["spearman"] == dev[str(s)]
    # a plain run with seed 2 repeats the grid's seed-2 run exactly: metrics and weights
    single = run_classifier.main(train_argv(env, tmp_path / "again", "--do_eval", "--seed", "2"))
    assert single["epochs"] == read_json(tmp_path / "grid" / "seed-2" / "eval_results.json")["epochs"]
    a = load_file(str(tmp_path / "again" / "best" / "model.safetensors"))
    b = load_file(str(tmp_path / "grid" / "seed-2" / "best" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # a grid killed during seed 2: the same command again trains seed 2 only and reuses seed 1 as it is
    os.remove(tmp_path / "grid" / "seed_grid.json")
    os.remove(tmp_path / "grid" / "seed-2" / "eval_results.json")
    seed1 = file_digests(tmp_path / "grid" / "seed-1")
    trained = []
    train_one_seed = run_classifier.train_one_seed
    monkeypatch.setattr(run_classifier, "train_one_seed", lambda *a: trained.append(a[4]) or train_one_seed(*a))
    assert run_classifier.main(argv) == saved and trained == [2]
    assert read_json(tmp_path / "grid" / "seed_grid.json") == saved
    assert file_digests(tmp_path / "grid" / "seed-1") == seed1
    # a seed saved before --layer_lr_decay and --pair_orders existed trained as their defaults do: still reused
    seed1_results = tmp_path / "grid" / "seed-1" / "eval_results.json"
    older = read_json(seed1_results)
    del older["args"]["layer_lr_decay"], older["args"]["pair_orders"]
    seed1_results.write_text(json.dumps(older), encoding="utf-8")
    os.remove(tmp_path / "grid" / "seed_grid.json")
    assert run_classifier.main(argv) == saved and trained == [2]
    # ... but not seeds trained with another recipe
    for flags, shown in ((["--learning_rate", "2e-3"], "--learning_rate 0.001 (now 0.002)"),
                         (["--layer_lr_decay", "0.5"], "--layer_lr_decay 1.0 (now 0.5)"),
                         (["--pair_orders", "both"], "--pair_orders one (now both)")):
        (tmp_path / "grid" / "seed_grid.json").unlink(missing_ok=True)
        expect_fail(capsys, run_classifier.main, argv + flags,
                    f"seed-1/eval_results.json: this seed finished with other arguments: {shown}")
    assert trained == [2]


def test_same_global_batch_same_run_with_accumulation_and_two_ranks(env, tmp_path):
    """--train_batch_size is per optimizer step: 1 process x 16, 1 process x 4 x 4 accumulated and 2 CPU ranks
    (gloo) x 2 x 4 accumulated see the same examples per step and end with the same weights (dropout off).
    58 rows: the last step has 10, as micro-batches of 4 + 4 + 2 (an unfinished window of 3 with a short last
    micro-batch) and per rank 4 + 1; each row must still weigh 1/10, as in the unaccumulated step.
    No clipping: it would hide a wrongly scaled gradient."""
    def argv(out, accum):
        return train_argv(env, out, "--config_file", env["nodrop"], "--gradient_accumulation_steps", accum,
                          "--logging_steps", "1", "--max_grad_norm", "1e9", n_train=58)

    run_classifier.main(argv(tmp_path / "one", "1"))
    run_classifier.main(argv(tmp_path / "accum", "4"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "run_classifier.py", *argv(tmp_path / "ddp", "2")]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    for other in ("accum", "ddp"):
        w = load_file(str(tmp_path / other / "final" / "model.safetensors"))
        for k in ref:
            torch.testing.assert_close(w[k], ref[k], rtol=1e-4, atol=1e-5, msg=f"{other}: {k}")
    init = torch.nn.Linear(64, 1).weight  # any fresh head: the trained one must have moved
    assert not torch.allclose(ref["classifier.weight"], init, atol=1e-3)
    # the logged loss is the per-row mean too, whatever the micro-batch sizes
    losses = [[r["loss"] for r in read_jsonl(tmp_path / d / "log.jsonl")] for d in ("one", "accum", "ddp")]
    assert len(losses[0]) == 4  # 58 rows / 16 -> 4 steps
    assert losses[1] == pytest.approx(losses[0], rel=1e-4) and losses[2] == pytest.approx(losses[0], rel=1e-4)


def test_ranks_get_the_same_micro_batch_sizes():
    """The accumulation weights (rows / window rows) survive DDP's mean over ranks only if every rank's loader
    yields batches of the same sizes (DistributedSampler evens the ranks out; the length-grouped sampler fills every
    batch)."""
    from types import SimpleNamespace
    feats = [{"input_ids": [2] + [5] * (i % 7) + [3], "token_type_ids": [0] * (i % 7 + 2), "label": 1.0}
             for i in range(58)]
    task = run_classifier.cls_data.TASKS["korsts"]
    for world in (2, 4):
        for grouped in (False, True):
            sizes = []
            for rank in range(world):
                rt = SimpleNamespace(rank=rank, world_size=world, device=torch.device("cpu"))
                args = SimpleNamespace(group_by_length=grouped, num_workers=0, max_seq_length=16)
                loader, sampler = run_classifier.make_train_loader(feats, 4, 0, task, rt, args, seed=3)
                sampler.set_epoch(1)
                sizes.append([len(b["labels"]) for b in loader])
            assert all(s == sizes[0] for s in sizes), (world, grouped, sizes)
            assert grouped or sizes[0][-1] < 4  # 58 rows leave a short last batch to weigh


def test_parse_seeds():
    assert run_classifier.parse_seeds("1-10") == list(range(1, 11))
    assert run_classifier.parse_seeds("1,3,5") == [1, 3, 5]
    assert run_classifier.parse_seeds("1-3,7") == [1, 2, 3, 7]
    for bad in ("3-1", "a", "1,1", "1-"):
        with pytest.raises(ValueError, match="--seeds"):
            run_classifier.parse_seeds(bad)


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


# ----------------------------------------------------------------------------------------------------- bad input

def test_release_kornli_command_without_train_file_fails_clearly(korsts_run, env, capsys, tmp_path):
    out, _ = korsts_run
    argv = ["--data_dir", NLI_DIR, "--task_name", "kornli", "--config_file", env["config"],
            "--vocab_file", env["vocab"], "--checkpoint", str(out / "best"), "--do_eval", "--max_seq_length", "128",
            "--train_batch_size", "32", "--eval_batch_size", "32", "--learning_rate", "3e-5",
            "--num_train_epochs", "3.0", "--warmup_proportion", "0.1",
            "--no_cuda", "--output_dir", str(tmp_path / "never")]
    expect_fail(capsys, run_classifier.main, argv, "multinli.train.ko.tsv", "--train_file")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("text,needles", [
    ("sentence1\tsentence2\tsimilarity\n가\t나\t1.0\n", ("bad.tsv", "no column 'score'")),
    ("", ("bad.tsv", "empty file")),
])
def test_bad_train_file_fails_and_leaves_output_dir_alone(env, capsys, tmp_path, text, needles):
    bad = tmp_path / "bad.tsv"
    bad.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    expect_fail(capsys, run_classifier.main, train_argv(env, out, "--train_file", str(bad)), *needles)
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"


def test_finished_run_is_never_overwritten(korsts_run, env, capsys):
    out, _ = korsts_run
    before = file_digests(out)
    expect_fail(capsys, run_classifier.main, train_argv(env, out), "already holds a finished run")
    expect_fail(capsys, eval_classifier.main, eval_argv(out / "best", "korsts", "--output_dir", str(out)),
                "eval_results.json already exists")
    assert file_digests(out) == before


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


def test_layer_lr_decay_moves_lower_layers_less(korsts_run, env, tmp_path):
    """One Adam step (no warm-up) moves each weight by about its group's lr: the head by lr, encoder layer i of L
    by lr * D ** (L - i), the embeddings by lr * D ** (L + 1)."""
    ckpt = korsts_run[0] / "best"
    before = load_file(str(ckpt / "model.safetensors"))
    out = tmp_path / "llrd"
    run_classifier.main(train_argv(env, out, "--checkpoint", str(ckpt), "--layer_lr_decay", "0.5",
                                   "--warmup_proportion", "0", n_train=16))
    after = load_file(str(out / "final" / "model.safetensors"))
    L = read_json(env["config"])["num_hidden_layers"]
    step = {k: (after[k] - before[k]).abs().max().item() for k in after}
    for name, rate in (("classifier.weight", 1.0), ("bert.pooler.dense.weight", 1.0),
                       (f"bert.encoder.layer.{L - 1}.ffn.fc1.weight", 0.5),
                       ("bert.encoder.layer.0.ffn.fc1.weight", 0.5 ** L),
                       ("bert.embeddings.word_embeddings.weight", 0.5 ** (L + 1))):
        assert step[name] == pytest.approx(1e-3 * rate, rel=0.05), (name, step[name])
    assert read_json(out / "eval_results.json")["args"]["layer_lr_decay"] == 0.5


def swap_columns(src, dst, n_rows):
    """The first n_rows of a KorSTS TSV with sentence1 and sentence2 exchanged under the same header."""
    lines = open(src, encoding="utf-8").read().split("\n")
    header = lines[0].split("\t")
    a, b = header.index("sentence1"), header.index("sentence2")
    out = [lines[0]]
    for line in lines[1:n_rows + 1]:
        f = line.split("\t")
        f[a], f[b] = f[b], f[a]
        out.append("\t".join(f))
    dst.write_text("\n".join(out) + "\n", encoding="utf-8")
    return dst


def test_both_pair_orders_train_on_each_pair_twice_and_score_the_mean(korsts_run, env, capsys, tmp_path):
    out = tmp_path / "both"
    results = run_classifier.main(train_argv(env, out, "--checkpoint", str(korsts_run[0] / "best"), "--do_eval",
                                             "--do_test", "--pair_orders", "both", n_train=32))
    # an epoch holds every pair in both orders: 64 rows, 4 steps of 16; still 32 examples
    assert results["train_examples"] == 32 and results["total_steps"] == 4
    args = run_classifier.build_parser().parse_args(train_argv(env, out, "--pair_orders", "both", n_train=32))
    train = run_classifier.load_data(args, cls_data.TASKS["korsts"], run_classifier.tu.setup_runtime(args))["train"]
    assert len(train) == 64
    for ab, ba in zip(train[:32], train[32:]):  # row i of the second half is row i as [CLS] b [SEP] a [SEP]
        n_a = ab["token_type_ids"].count(0) - 2
        a, b = ab["input_ids"][1:1 + n_a], ab["input_ids"][2 + n_a:-1]
        assert ba["input_ids"] == [ab["input_ids"][0], *b, ab["input_ids"][1 + n_a], *a, ab["input_ids"][-1]]
        assert ba["token_type_ids"] == [0] * (len(b) + 2) + [1] * (len(a) + 1) and ba["label"] == ab["label"]
    assert any(ab["input_ids"] != ba["input_ids"] for ab, ba in zip(train[:32], train[32:]))
    assert [r["step"] for r in read_jsonl(out / "log.jsonl") if "loss" in r] == [2, 4]
    assert read_json(out / "best" / "task.json")["pair_orders"] == "both"
    # eval_classifier scores as the checkpoint was fine-tuned: what training reported for test
    test = eval_classifier.main(eval_argv(out / "best", "korsts", "--output_dir", str(tmp_path / "mean")))
    assert {k: test[k] for k in ("pearson", "spearman")} == results["test"] and test["pair_orders"] == "both"
    # ... which is each row's mean over the file and the same file with its sentences exchanged, one order each
    swapped = swap_columns(os.path.join(STS_DIR, "sts-test.tsv"), tmp_path / "swapped.tsv", 100)
    one = {}
    for name, path in (("ab", os.path.join(STS_DIR, "sts-test.tsv")), ("ba", str(swapped))):
        m = eval_classifier.main(eval_argv(out / "best", "korsts", "--eval_file", path, "--pair_orders", "one",
                                           "--output_dir", str(tmp_path / name)))
        assert m["pair_orders"] == "one"
        one[name] = np.array([float(r[2]) for r in read_predictions(tmp_path / name / "predictions.tsv")])
    mean = np.array([float(r[2]) for r in read_predictions(tmp_path / "mean" / "predictions.tsv")])
    assert not np.allclose(one["ab"], one["ba"], atol=1e-4)  # the model itself is not symmetric
    np.testing.assert_allclose(mean, (one["ab"] + one["ba"]) / 2, rtol=1e-5, atol=1e-6)
    gold = [float(r[1]) for r in read_predictions(tmp_path / "mean" / "predictions.tsv")]
    assert test["spearman"] == pytest.approx(stats.spearmanr(mean, gold)[0] * 100, abs=1e-3)
    # score_both: trained on the pairs as given (2 steps), scored as the mean of both orders, by eval_classifier too
    out_s = tmp_path / "score_both"
    res_s = run_classifier.main(train_argv(env, out_s, "--checkpoint", str(korsts_run[0] / "best"), "--do_eval",
                                           "--do_test", "--pair_orders", "score_both", n_train=32))
    assert res_s["total_steps"] == 2 and read_json(out_s / "best" / "task.json")["pair_orders"] == "score_both"
    capsys.readouterr()
    for flags in ([], ["--pair_orders", "both"]):
        m = eval_classifier.main(eval_argv(out_s / "best", "korsts", *flags))
        assert {k: m[k] for k in ("pearson", "spearman")} == res_s["test"]
    assert "warning" not in capsys.readouterr().err
    # a model fine-tuned on one order can be scored on both, with a warning
    capsys.readouterr()
    both = eval_classifier.main(eval_argv(korsts_run[0] / "best", "korsts", "--pair_orders", "both"))
    assert both["pair_orders"] == "both" and both["spearman"] != korsts_run[1]["test"]["spearman"]
    assert "warning: --pair_orders both, but" in capsys.readouterr().err
    # NLI's label depends on the order: refused, as is a task.json value no run writes
    expect_fail(capsys, run_classifier.main, train_argv(env, tmp_path / "x", "--pair_orders", "both", task="kornli"),
                "--pair_orders both: kornli's label depends on the pair's order")
    assert not (tmp_path / "x").exists()
    expect_fail(capsys, eval_classifier.main, eval_argv(tmp_path / "nowhere", "kornli", "--pair_orders", "both"),
                "--pair_orders both: kornli's label")  # before the checkpoint is looked for
    for value in ("three", None):
        odd = copy_checkpoint(out / "best", tmp_path / f"odd{value}", pair_orders=value)
        expect_fail(capsys, eval_classifier.main, eval_argv(odd, "korsts"),
                    f"odd{value}/task.json pair_orders {value!r}: expected one of one, both")


def test_flag_errors(env, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        run_classifier.main(train_argv(env, tmp_path / "x", task="korsts")[2:] + ["--task_name", "kornsts"])
    assert e.value.code == 2 and "invalid choice: 'kornsts'" in capsys.readouterr().err
    expect_fail(capsys, run_classifier.main, train_argv(env, tmp_path / "x", "--seeds", "1-3"), "--seeds", "--do_eval")
    expect_fail(capsys, run_classifier.main, train_argv(env, tmp_path / "x", "--train_batch_size", "10",
                                                        "--gradient_accumulation_steps", "4"), "--train_batch_size 10")
    expect_fail(capsys, run_classifier.main, train_argv(env, tmp_path / "x", "--max_seq_length", "1024"),
                "max_position_embeddings")
    # refused up front, not with a traceback after the data and model are loaded
    for flags, needle in ((["--warmup_proportion", "1.0"], "--warmup_proportion 1.0 must be in [0, 1)"),
                          (["--learning_rate=-1e-4"], "--learning_rate -0.0001 must be a positive number"),
                          (["--max_grad_norm", "-1"], "--max_grad_norm -1.0 must be > 0"),
                          (["--max_train_examples", "0"], "--max_train_examples 0 must be >= 1"),
                          (["--max_eval_examples", "-2"], "--max_eval_examples -2 must be >= 1"),
                          (["--max_seq_length", "2"], "--max_seq_length 2 leaves no room"),
                          (["--pad_to_multiple_of", "0"], "--pad_to_multiple_of 0: must be a positive"),
                          (["--layer_lr_decay", "0"], "--layer_lr_decay 0.0: must be in (0, 1]")):
        expect_fail(capsys, run_classifier.main, train_argv(env, tmp_path / "x", "--do_eval", *flags), needle)
    assert not (tmp_path / "x").exists()
    expect_fail(capsys, eval_classifier.main, eval_argv(tmp_path / "nowhere", "korsts", "--pad_to_multiple_of", "-1"),
                "--pad_to_multiple_of -1")


def test_release_apex_flags_and_task_name_case(env, capsys, tmp_path):
    """The release's run_classifier took apex's --fp16_opt_level/--loss_scale and KorSTS/KorNLI."""
    argv = ["--task_name", "KorSTS", "--data_dir", STS_DIR, "--fp16", "--fp16_opt_level", "O2", "--loss_scale", "0"]
    args = run_classifier.build_parser().parse_args(argv)
    assert args.task_name == "korsts" and args.amp == "fp16" and args.fp16_opt_level == "O2"
    assert run_classifier.build_parser().parse_args(["--task_name", "KorNLI"]).task_name == "kornli"
    assert eval_classifier.build_parser().parse_args(["--task_name", "KorNLI"]).task_name == "kornli"
    # accepted with one warning, then ignored (here the run stops at a bad flag, before any training)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_classifier.main(train_argv(env, tmp_path / "x", "--fp16_opt_level", "O1", "--loss_scale", "128",
                                       "--warmup_proportion", "1")[2:] + ["--task_name", "KorSTS"])
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("warning:")] == [
        ("warning: --fp16_opt_level and --loss_scale are apex options and are ignored: mixed precision is native AMP "
         "(--amp fp16 scales the loss dynamically)")]
    assert err[-1].startswith("error: --warmup_proportion 1.0")

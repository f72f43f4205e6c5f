"""run_classifier.py's training options end to end on real KorSTS slices with a tiny model on the CPU: a fresh
pooler, --compile, --group_by_length, the seed grid and its determinism, accumulation and two ranks, layer-wise lr
decay, and both pair orders. The scripts' own inputs, outputs and errors: test_classifier_scripts.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cls_data  # noqa: E402
import eval_classifier  # noqa: E402
import run_classifier  # noqa: E402
from cls_helpers import (STS_DIR, copy_checkpoint, eval_argv, read_json, read_jsonl, read_predictions,  # noqa: E402
                         train_argv)
from helpers import (expect_fail, file_digests, needs_cxx, one_thread,  # noqa: E402,F401 (one_thread: autouse)
                     overflowing_scaler, record_graph_steps)
from models.modeling import init_weights  # noqa: E402


def test_reinit_pooler_starts_only_the_pooler_fresh(korsts_run, cls_env, tmp_path):
    """From a checkpoint at a vanishing lr: with --reinit_pooler the pooler is a new initialisation (std
    initializer_range, zero bias) and every encoder weight is the checkpoint's; without it the pooler is kept."""
    ckpt = korsts_run[0] / "best"
    before = load_file(str(ckpt / "model.safetensors"))
    std = read_json(cls_env["config"])["initializer_range"]
    for flag in ([], ["--reinit_pooler"]):
        out = tmp_path / ("new" if flag else "kept")
        run_classifier.main(train_argv(cls_env, out, "--checkpoint", str(ckpt), "--learning_rate", "1e-12",
                                       *flag, n_train=16))
        after = load_file(str(out / "final" / "model.safetensors"))
        moved = {k for k in after if not torch.allclose(after[k], before[k], atol=1e-6)}
        assert moved == ({"bert.pooler.dense.weight", "bert.pooler.dense.bias"} if flag else set()), moved
    w, b = after["bert.pooler.dense.weight"], after["bert.pooler.dense.bias"]
    assert abs(w.std().item() - std) < 0.1 * std and b.abs().max() < 1e-6


def test_head_init_seed_starts_every_seed_from_one_head(korsts_run, cls_env, tmp_path, monkeypatch):
    """--head_init_seed N: the classifier head starts as a fresh initialisation from seed N whatever --seed is
    (here over a checkpoint that has a head of its own), and --seed alone still orders the batches."""
    fed = {}
    forward = run_classifier.BertForSequenceClassification.forward

    def spy(self, input_ids, *a, **k):
        if self.training:
            fed.setdefault(key[0], []).append(input_ids.clone())
        return forward(self, input_ids, *a, **k)
    monkeypatch.setattr(run_classifier.BertForSequenceClassification, "forward", spy)
    ckpt = korsts_run[0] / "best"
    heads = {}
    key = [None]
    for seed, head_seed in ((1, 5), (2, 5), (1, 6)):
        key[0] = (seed, head_seed)
        out = tmp_path / f"seed{seed}_head{head_seed}"
        run_classifier.main(train_argv(cls_env, out, "--checkpoint", str(ckpt), "--learning_rate", "1e-12",
                                       "--seed", str(seed), "--head_init_seed", str(head_seed), n_train=32))
        heads[key[0]] = load_file(str(out / "final" / "model.safetensors"))
        assert read_json(out / "eval_results.json")["args"]["head_init_seed"] == head_seed
    config = read_json(cls_env["config"])
    fresh = torch.nn.Linear(config["hidden_size"], 1)
    torch.manual_seed(5)
    init_weights(fresh, config["initializer_range"])
    for seed in (1, 2):
        torch.testing.assert_close(heads[(seed, 5)]["classifier.weight"], fresh.weight.detach(), rtol=0, atol=1e-6)
        assert heads[(seed, 5)]["classifier.bias"].abs().max() < 1e-6
    assert not torch.allclose(heads[(1, 6)]["classifier.weight"], fresh.weight.detach(), atol=1e-3)
    # the pooler is the checkpoint's (no --reinit_pooler)
    before = load_file(str(ckpt / "model.safetensors"))
    torch.testing.assert_close(heads[(1, 5)]["bert.pooler.dense.weight"], before["bert.pooler.dense.weight"])
    # batches: the same for seed 1 under either head seed, another order for seed 2
    same = [torch.equal(a, b) for a, b in zip(fed[(1, 5)], fed[(1, 6)])]
    assert len(fed[(1, 5)]) == len(fed[(1, 6)]) == 2 and all(same)
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(fed[(1, 5)], fed[(2, 5)]))


@needs_cxx
def test_compile_trains_like_eager(cls_env, tmp_path):
    """--compile: the same losses and weights as eager (dropout off), batches of varying width included (a
    second compile with dynamic shapes); checkpoints keep the plain keys and the dev scores come from them."""
    from torch._dynamo.utils import counters
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        counters.clear()
        runs[name] = run_classifier.main(train_argv(cls_env, tmp_path / name, "--config_file", cls_env["nodrop"],
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


def test_compile_mode_reaches_torch_compile_and_marks_each_step(cls_env, tmp_path, monkeypatch):
    """--compile_mode reduce-overhead: torch.compile gets the mode, and each training forward starts a new CUDA-graph
    replay (the graphs themselves are made on a GPU only). With stand-ins for both the run is an eager one, so it
    must train exactly as eager does; evaluation runs the plain model, unmarked."""
    eager = run_classifier.main(train_argv(cls_env, tmp_path / "eager", "--do_eval", n_train=40, epochs=2))
    modes, events = record_graph_steps(monkeypatch, run_classifier.BertForSequenceClassification)
    graphs = run_classifier.main(train_argv(cls_env, tmp_path / "graphs", "--do_eval", "--compile", "--compile_mode",
                                            "reduce-overhead", n_train=40, epochs=2))
    train = [e for e in events if e != "eval"]
    assert modes == ["reduce-overhead"] and train == ["mark", "forward"] * graphs["total_steps"]
    assert graphs["total_steps"] == eager["total_steps"] and "eval" in events  # evaluation: no mark
    assert [e["train_loss"] for e in graphs["epochs"]] == [e["train_loss"] for e in eager["epochs"]]
    events.clear()
    run_classifier.main(train_argv(cls_env, tmp_path / "default", "--do_eval", "--compile", n_train=40, epochs=1))
    assert modes == ["reduce-overhead", None] and "mark" not in events  # the default mode marks nothing


def test_group_by_length_trains_on_less_padding(cls_env, tmp_path, monkeypatch):
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
    run_classifier.main(train_argv(cls_env, tmp_path / "random", n_train=160, epochs=2))
    key[0] = "grouped"
    r = run_classifier.main(train_argv(cls_env, tmp_path / "grouped", "--group_by_length", n_train=160, epochs=2))
    key[0] = "rounded"
    run_classifier.main(train_argv(cls_env, tmp_path / "rounded", "--group_by_length", "--pad_to_multiple_of", "8",
                                   n_train=160, epochs=2))
    real = {k: sum(n for _, n, _ in v) for k, v in fed.items()}
    padded = {k: sum(n for n, _, _ in v) for k, v in fed.items()}
    assert real["grouped"] == real["random"] == real["rounded"]  # 160 = 10 full batches of 16, once per epoch
    assert padded["grouped"] < 0.8 * padded["random"]
    assert len(fed["grouped"]) == r["total_steps"] == 20
    # --pad_to_multiple_of reaches the training batches: each as wide as grouped's, rounded up to a multiple of 8
    assert [w for *_, w in fed["rounded"]] == [-(-w // 8) * 8 for *_, w in fed["grouped"]]


# ------------------------------------------------------------------------------------------- seeds, determinism

def test_seed_grid_tests_only_best_seed_and_runs_are_deterministic(cls_env, tmp_path, capsys, monkeypatch):
    argv = train_argv(cls_env, tmp_path / "grid", "--do_eval", "--do_test", "--seeds", "1,2")
    seeded = []  # each seed's model has its dropout reseeded per rank once built (a no-op in one process)
    real = run_classifier.tu.seed_dropout_per_rank
    monkeypatch.setattr(run_classifier.tu, "seed_dropout_per_rank", lambda s, rt: seeded.append(s) or real(s, rt))
    grid = run_classifier.main(argv)
    assert seeded == [1, 2]
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
    single = run_classifier.main(train_argv(cls_env, tmp_path / "again", "--do_eval", "--seed", "2"))
    assert single["epochs"] == read_json(tmp_path / "grid" / "seed-2" / "eval_results.json")["epochs"]
    a = load_file(str(tmp_path / "again" / "best" / "model.safetensors"))
    b = load_file(str(tmp_path / "grid" / "seed-2" / "best" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # a finished grid is kept; the refusal says how to extend it (seed_grid.json deleted, as below)
    expect_fail(capsys, run_classifier.main, argv[:-1] + ["1-3"],
                f"or delete {tmp_path / 'grid' / 'seed_grid.json'} to run the grid again with other --seeds")
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
    # a seed saved before --layer_lr_decay, --pair_orders and --head_init_seed existed trained as their defaults
    # do: still reused
    seed1_results = tmp_path / "grid" / "seed-1" / "eval_results.json"
    older = read_json(seed1_results)
    del older["args"]["layer_lr_decay"], older["args"]["pair_orders"], older["args"]["head_init_seed"]
    seed1_results.write_text(json.dumps(older), encoding="utf-8")
    os.remove(tmp_path / "grid" / "seed_grid.json")
    assert run_classifier.main(argv) == saved and trained == [2]
    # ... but not seeds trained with another recipe
    for flags, shown in ((["--learning_rate", "2e-3"], "--learning_rate 0.001 (now 0.002)"),
                         (["--layer_lr_decay", "0.5"], "--layer_lr_decay 1.0 (now 0.5)"),
                         (["--pair_orders", "both"], "--pair_orders one (now both)"),
                         (["--head_init_seed", "3"], "--head_init_seed None (now 3)")):
        (tmp_path / "grid" / "seed_grid.json").unlink(missing_ok=True)
        expect_fail(capsys, run_classifier.main, argv + flags,
                    f"seed-1/eval_results.json: this seed finished with other arguments: {shown}")
    assert trained == [2]
    # ... nor a seed whose random batches were drawn by the older sampler (no batch_draw record): it would mix two
    # data orders in one grid. Its --group_by_length batches are drawn as now, so such a seed is still reused.
    del older["batch_draw"]
    seed1_results.write_text(json.dumps(older), encoding="utf-8")
    (tmp_path / "grid" / "seed_grid.json").unlink(missing_ok=True)
    expect_fail(capsys, run_classifier.main, argv, "seed-1/eval_results.json: this seed was trained by an older "
                "run_classifier.py, which drew its random batches otherwise")
    older["args"]["group_by_length"] = True
    seed1_results.write_text(json.dumps(older), encoding="utf-8")
    os.remove(tmp_path / "grid" / "seed-2" / "eval_results.json")
    run_classifier.main(argv + ["--group_by_length"])
    assert trained == [2, 2]  # seed 2 (random batches) trains again; seed 1 is reused


def test_same_global_batch_same_run_with_accumulation_and_two_ranks(cls_env, tmp_path):
    """--train_batch_size is per optimizer step: 1 process x 16, 1 process x 4 x 4 accumulated and 2 CPU ranks
    (gloo) x 2 x 4 accumulated see the same examples per step and end with the same weights (dropout off).
    57 rows: the last step's 9 are filled to 16 with rows from the epoch's start, alike in every split (with
    DistributedSampler, two ranks padded 57 to 58 and one process did not, so their last steps differed).
    No clipping: it would hide a wrongly scaled gradient."""
    def argv(out, accum):
        return train_argv(cls_env, out, "--config_file", cls_env["nodrop"], "--gradient_accumulation_steps", accum,
                          "--logging_steps", "1", "--max_grad_norm", "1e9", n_train=57)

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
    assert len(losses[0]) == 4  # 57 rows / 16 -> 4 steps
    assert losses[1] == pytest.approx(losses[0], rel=1e-4) and losses[2] == pytest.approx(losses[0], rel=1e-4)


def test_best_is_the_best_dev_epoch_and_every_epoch_draws_its_own_order(cls_env, tmp_path, monkeypatch):
    """best/ holds the epoch with the best dev score (Spearman for KorSTS, not Pearson), not the last one, and each
    epoch draws its batches anew (set_epoch): in the other fixtures the last epoch also scores best."""
    dev = iter([{"pearson": 10.0, "spearman": 50.0}, {"pearson": 90.0, "spearman": 40.0},
                {"pearson": 95.0, "spearman": 30.0}])
    saved = {}
    monkeypatch.setattr(run_classifier, "evaluate", lambda *a: next(dev))
    save_best = run_classifier.save_best

    def spy(model, ckpt_dir, vocab_file, task, args, epoch):
        saved[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        save_best(model, ckpt_dir, vocab_file, task, args, epoch)
    monkeypatch.setattr(run_classifier, "save_best", spy)
    epochs = []
    set_epoch = run_classifier.batching.GlobalBatchSampler.set_epoch
    monkeypatch.setattr(run_classifier.batching.GlobalBatchSampler, "set_epoch",
                        lambda self, e: (epochs.append(e), set_epoch(self, e))[1])
    out = tmp_path / "run"
    run_classifier.main(train_argv(cls_env, out, "--do_eval", epochs=3))
    assert epochs == [1, 2, 3]
    assert read_json(out / "eval_results.json")["best_epoch"] == 1 and list(saved) == [1]
    assert read_json(out / "best" / "task.json")["epoch"] == 1
    best = load_file(str(out / "best" / "model.safetensors"))
    assert all(torch.equal(best[k], saved[1][k]) for k in best)


def test_ranks_get_the_same_micro_batch_sizes():
    """The accumulation weights (rows / window rows) survive DDP's mean over ranks only if every rank's loader
    yields batches of the same sizes: the global-batch sampler fills every batch, random or length-grouped."""
    from types import SimpleNamespace
    feats = [{"input_ids": [2] + [5] * (i % 7) + [3], "token_type_ids": [0] * (i % 7 + 2), "label": 1.0}
             for i in range(58)]
    task = run_classifier.cls_data.TASKS["korsts"]
    for world in (2, 4):
        for grouped in (False, True):
            sizes = []
            for rank in range(world):
                rt = SimpleNamespace(rank=rank, world_size=world, device=torch.device("cpu"))
                args = SimpleNamespace(group_by_length=grouped, num_workers=0, max_seq_length=16,
                                       gradient_accumulation_steps=1, pad_to_multiple_of=None)
                loader, sampler = run_classifier.make_train_loader(feats, 4, 0, task, rt, args, seed=3)
                sampler.set_epoch(1)
                sizes.append([len(b["labels"]) for b in loader])
            assert all(s == [4] * (-(-58 // (4 * world))) for s in sizes), (world, grouped, sizes)


def one_step(korsts_run, cls_env, out, *flags):
    """One optimizer step (16 rows, no warm-up) from the KorSTS run's best checkpoint: (weights before, after, out)."""
    ckpt = korsts_run[0] / "best"
    before = load_file(str(ckpt / "model.safetensors"))
    run_classifier.main(train_argv(cls_env, out, "--checkpoint", str(ckpt), "--warmup_proportion", "0", *flags,
                                   n_train=16))
    return before, load_file(str(out / "final" / "model.safetensors")), out


def test_layer_lr_decay_moves_lower_layers_less(korsts_run, cls_env, tmp_path):
    """One Adam step (no warm-up) moves each weight by about its group's lr: the head by lr, encoder layer i of L
    by lr * D ** (L - i), the embeddings by lr * D ** (L + 1)."""
    before, after, out = one_step(korsts_run, cls_env, tmp_path / "llrd", "--layer_lr_decay", "0.5")
    L = read_json(cls_env["config"])["num_hidden_layers"]
    step = {k: (after[k] - before[k]).abs().max().item() for k in after}
    for name, rate in (("classifier.weight", 1.0), ("bert.pooler.dense.weight", 1.0),
                       (f"bert.encoder.layer.{L - 1}.ffn.fc1.weight", 0.5),
                       ("bert.encoder.layer.0.ffn.fc1.weight", 0.5 ** L),
                       ("bert.embeddings.word_embeddings.weight", 0.5 ** (L + 1))):
        assert step[name] == pytest.approx(1e-3 * rate, rel=0.05), (name, step[name])
    assert read_json(out / "eval_results.json")["args"]["layer_lr_decay"] == 0.5


def test_lamb_moves_each_weight_matrix_by_lr_times_its_norm(korsts_run, cls_env, tmp_path):
    """--optimizer lamb: LAMB's trust ratio scales each tensor's update to lr * ||w|| (You et al., 2020), whatever
    the gradient; Adam's first step moves every element by about lr instead."""
    before, after, out = one_step(korsts_run, cls_env, tmp_path / "lamb", "--optimizer", "lamb")
    L = read_json(cls_env["config"])["num_hidden_layers"]
    for name in ("classifier.weight", f"bert.encoder.layer.{L - 1}.ffn.fc1.weight",
                 "bert.encoder.layer.0.attn.query.weight", "bert.embeddings.word_embeddings.weight"):
        ratio = ((after[name] - before[name]).norm() / before[name].norm()).item()
        assert ratio == pytest.approx(1e-3, rel=0.02), (name, ratio)
    assert read_json(out / "eval_results.json")["args"]["optimizer"] == "lamb"


def test_poly_schedule_decays_as_the_square_root_of_what_is_left(cls_env, tmp_path):
    """--scheduler poly: after warm-up the lr is lr * (1 - step / total) ** 0.5 (NVIDIA's PolyWarmUpScheduler), where
    linear gives lr * (1 - step / total); each log row's lr is the one after its step."""
    out = tmp_path / "poly"
    run_classifier.main(train_argv(cls_env, out, "--scheduler", "poly", "--warmup_proportion", "0",
                                   "--logging_steps", "1"))
    rows = [r for r in read_jsonl(out / "log.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["lr"] for r in rows] == pytest.approx([1e-3 * (1 - s / 4) ** 0.5 for s in (1, 2, 3, 4)])



def test_a_step_the_loss_scaler_skips_leaves_the_schedule_where_it_was(cls_env, tmp_path, monkeypatch):
    """A step fp16's loss scaler skips (its gradients overflowed) changes no weight, so it must not use up the
    schedule either (as in transformers' Trainer): with the first 2 of 6 steps skipped, the linear lr
    after step s is lr (1 - (s - 2) / 6) from step 2 on; it was lr (1 - s / 6)."""
    scaler = overflowing_scaler(2)
    monkeypatch.setattr(run_classifier.tu, "make_grad_scaler", lambda rt: scaler)
    out = tmp_path / "scaled"
    run_classifier.main(train_argv(cls_env, out, "--warmup_proportion", "0", "--logging_steps", "1", n_train=96))
    rows = [r for r in read_jsonl(out / "log.jsonl") if "loss" in r]
    assert scaler.get_scale() == 2.0 ** 14 and len(rows) == 6  # 2^16 halved twice: both steps were skipped
    assert [r["lr"] for r in rows] == pytest.approx([1e-3 * (1 - max(s - 2, 0) / 6) for s in range(1, 7)])

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


def test_both_pair_orders_train_on_each_pair_twice_and_score_the_mean(korsts_run, cls_env, capsys, tmp_path):
    out = tmp_path / "both"
    # a low lr: the tiny model must not collapse to one constant score, which would be symmetric
    results = run_classifier.main(train_argv(cls_env, out, "--checkpoint", str(korsts_run[0] / "best"), "--do_eval",
                                             "--do_test", "--pair_orders", "both", "--learning_rate", "1e-4",
                                             n_train=32))
    # an epoch holds every pair in both orders: 64 rows, 4 steps of 16; still 32 examples
    assert results["train_examples"] == 32 and results["total_steps"] == 4
    args = run_classifier.build_parser().parse_args(train_argv(cls_env, out, "--pair_orders", "both", n_train=32))
    train = run_classifier.load_data(args, cls_data.TASKS["korsts"], run_classifier.tu.setup_runtime(args))["train"]
    assert len(train) == 64
    rows = [{k: v.tolist() if k in ("input_ids", "token_type_ids") else v for k, v in f.items()} for f in train]
    for ab, ba in zip(rows[:32], rows[32:]):  # row i of the second half is row i as [CLS] b [SEP] a [SEP]
        n_a = ab["token_type_ids"].count(0) - 2
        a, b = ab["input_ids"][1:1 + n_a], ab["input_ids"][2 + n_a:-1]
        assert ba["input_ids"] == [ab["input_ids"][0], *b, ab["input_ids"][1 + n_a], *a, ab["input_ids"][-1]]
        assert ba["token_type_ids"] == [0] * (len(b) + 2) + [1] * (len(a) + 1) and ba["label"] == ab["label"]
    assert any(ab["input_ids"] != ba["input_ids"] for ab, ba in zip(rows[:32], rows[32:]))
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
    res_s = run_classifier.main(train_argv(cls_env, out_s, "--checkpoint", str(korsts_run[0] / "best"), "--do_eval",
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
    expect_fail(capsys, run_classifier.main, train_argv(cls_env, tmp_path / "x", "--pair_orders", "both", task="kornli"),
                "--pair_orders both: kornli's label depends on the pair's order")
    assert not (tmp_path / "x").exists()
    expect_fail(capsys, eval_classifier.main, eval_argv(tmp_path / "nowhere", "kornli", "--pair_orders", "both"),
                "--pair_orders both: kornli's label")  # before the checkpoint is looked for
    for value in ("three", None):
        odd = copy_checkpoint(out / "best", tmp_path / f"odd{value}", pair_orders=value)
        expect_fail(capsys, eval_classifier.main, eval_argv(odd, "korsts"),
                    f"odd{value}/task.json pair_orders {value!r}: expected one of one, both")


def test_seed_grid_ties_go_to_the_lowest_seed(capsys):
    """Equal dev scores (common for KorNLI accuracy on a small dev set) pick the lowest seed, whatever order the
    seeds were run or listed in; the printed line names each seed with its own score (--seeds 3,1,2 used to print
    the scores in seed order against the seeds in the order given)."""
    run = {"best_epoch": 1, "best": {"accuracy": 50.0}}
    for runs in ({3: run, 1: run, 2: {"best_epoch": 1, "best": {"accuracy": 40.0}}}, {1: run, 3: run}):
        assert run_classifier.summarise_grid(runs, cls_data.TASKS["kornli"])["best_seed_on_dev"] == 1
    capsys.readouterr()
    runs = {s: {"best_epoch": 1, "best": {"accuracy": 10.0 * s}} for s in (3, 1, 2)}
    assert run_classifier.summarise_grid(runs, cls_data.TASKS["kornli"])["best_seed_on_dev"] == 3
    assert "seed 1 10.00, seed 2 20.00, seed 3 30.00;" in capsys.readouterr().out

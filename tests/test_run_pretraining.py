"""run_pretraining.py on the CPU with a tiny model and shards built from ~200 KB of the bundled Korean text.

Properties: the loss goes down; a resumed run repeats the uninterrupted one exactly (weights, optimizer, schedule,
dropout RNG and data position, with and without loader workers, across an epoch boundary); a crash between writing
step-N.tmp and renaming it leaves `latest` on the previous checkpoint; gradient accumulation and the loss
normalisation give the same update as one big batch; phase 2 starts from phase-1 weights with a fresh optimizer;
SIGTERM saves and exits 143. Bad input, a non-finite loss and time budgets: test_run_pretraining_inputs.py.
"""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import run_pretraining  # noqa: E402
from models.modeling import BertConfig, BertForPreTraining, BertModel, load_checkpoint  # noqa: E402
from pretraining_data import PretrainingDataset  # noqa: E402
from helpers import needs_cxx, one_thread, overflowing_scaler, patch_epoch_1  # noqa: E402,F401 (one_thread: autouse)
from pretraining_helpers import (argv, assert_same_run, assert_same_weights, latest, rows, train_state,  # noqa: E402
                                 weights)


def test_loss_decreases_and_outputs(pretrain_run, pretrain_data):
    log = rows(pretrain_run)
    assert [r["step"] for r in log] == list(range(1, 61))
    for key in ("step", "loss", "mlm_loss", "sop_loss", "sop_acc", "mlm_acc", "lr", "grad_norm", "seq_per_s",
                "data_wait", "elapsed_s", "epoch"):
        assert all(key in r and r[key] is not None for r in log), key
    assert all(0 <= r["data_wait"] < 1 for r in log)  # a share of each interval's wall time
    first, last = [r["loss"] for r in log[:10]], [r["loss"] for r in log[-10:]]
    assert sum(last) / 10 < sum(first) / 10 - 0.5, (first, last)
    assert all(r["loss"] == pytest.approx(r["mlm_loss"] + r["sop_loss"]) for r in log)
    # keep_last 2: step-20 pruned; latest names the final checkpoint
    assert sorted(os.listdir(pretrain_run / "checkpoints")) == ["latest", "step-40", "step-60"]
    assert latest(pretrain_run) == "step-60"
    ckpt = pretrain_run / "checkpoints" / "step-60"
    assert sorted(os.listdir(ckpt)) == ["config.json", "model.safetensors", "train_state.pt", "vocab.txt"]
    assert (ckpt / "vocab.txt").read_bytes() == (pretrain_data / "vocab.txt").read_bytes()
    st = train_state(pretrain_run, 60)
    assert st["step"] == 60 and st["args"]["max_steps"] == 60 and st["epoch_position"] == 60 * 16
    assert (pretrain_run / "loss.png").stat().st_size > 0
    assert json.loads((pretrain_run / "DONE").read_text())["step"] == 60
    # the checkpoint loads strictly into the pretraining model and as an encoder
    config = BertConfig.from_json_file(ckpt / "config.json")
    model = load_checkpoint(BertForPreTraining(config), str(ckpt), strict=True)
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight,
                               weights(pretrain_run, 60)["bert.embeddings.word_embeddings.weight"])
    load_checkpoint(BertModel(config), str(ckpt), strict=True)


@pytest.fixture(scope="module")
def uninterrupted(pretrain_data, tmp_path_factory):
    """2N steps on the small shards (dropout on), checkpoint at N: the reference for the resume tests."""
    ds = PretrainingDataset(str(pretrain_data / "small_shards"), max_seq_length=64, max_predictions_per_seq=10)
    per_epoch = len(ds) // 8
    assert 3 <= per_epoch <= 10, per_epoch  # so step N is mid-epoch and step 2N is in the next epoch
    n = per_epoch - 1
    out = tmp_path_factory.mktemp("uninterrupted")
    flags = dict(shards="small_shards", max_steps=2 * n, save_steps=n)
    assert run_pretraining.main(argv(pretrain_data, out, **flags)) == 0
    assert rows(out)[-1]["epoch"] == 1
    return out, n, flags


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_exact(uninterrupted, pretrain_data, tmp_path, num_workers):
    ref, n, flags = uninterrupted
    st = train_state(ref, n)
    assert st["step"] == n and st["epoch"] == 0 and st["epoch_position"] == n * 8
    run_ds = PretrainingDataset(str(pretrain_data / "small_shards"), max_seq_length=64, max_predictions_per_seq=10,
                                seed=1)
    first_epoch = len(run_ds) // 8  # steps of epoch 0 in these runs (--seed 1)
    st = train_state(ref, 2 * n)  # past the epoch boundary: the position counts from that epoch's start
    assert st["epoch"] == 1 and st["epoch_position"] == (2 * n - first_epoch) * 8
    out = tmp_path / "resumed"
    assert run_pretraining.main(argv(pretrain_data, out, resume=ref / "checkpoints" / f"step-{n}",
                                     num_workers=num_workers, **flags)) == 0
    assert [r["step"] for r in rows(out)] == list(range(n + 1, 2 * n + 1))
    assert_same_run(rows(ref), rows(out), range(n + 1, 2 * n + 1))
    assert_same_weights(weights(ref, 2 * n), weights(out, 2 * n))


def test_resume_between_log_rows_logs_the_rows_of_the_uninterrupted_run(pretrain_data, tmp_path):
    """A checkpoint saved between two log rows (a signal, a time budget, --save_steps not a multiple of --log_steps)
    carries the open interval's sums: the first row after resuming from it averages the same steps as the
    uninterrupted run's row did (it averaged only the steps since the resume)."""
    flags = dict(max_steps=6, log_steps=3, save_steps=2)
    ref = tmp_path / "ref"
    assert run_pretraining.main(argv(pretrain_data, ref, **flags)) == 0
    out = tmp_path / "resumed"
    assert run_pretraining.main(argv(pretrain_data, out, resume=ref / "checkpoints" / "step-4", **flags)) == 0
    (a,), (b,) = [r for r in rows(ref) if r["step"] == 6], rows(out)
    assert b["step"] == 6
    for k in ("loss", "mlm_loss", "sop_loss", "mlm_acc", "sop_acc", "grad_norm", "lr"):
        assert b[k] == a[k], k
    assert_same_weights(weights(ref, 6), weights(out, 6), tol=0)
    assert train_state(ref, 4)["log_interval"]["from_step"] == 3  # open since the row of step 3


def test_resume_applies_changed_optimiser_flags(uninterrupted, pretrain_data, tmp_path, capsys):
    """A resumed run takes --learning_rate, --weight_decay and --adam_epsilon from its flags (they used to come back
    from the saved optimizer state, the lr warned about as changed but never changed); the change is warned."""
    ref, n, flags = uninterrupted
    out = tmp_path / "lower_lr"
    capsys.readouterr()
    assert run_pretraining.main(argv(pretrain_data, out, resume=ref / "checkpoints" / f"step-{n}", learning_rate=5e-4,
                                     weight_decay=0.05, adam_epsilon=1e-4, **flags)) == 0
    err = capsys.readouterr().err
    assert "changed learning_rate, weight_decay, adam_epsilon" in err
    before, after = ({r["step"]: r["lr"] for r in rows(d)} for d in (ref, out))
    assert all(after[k] == pytest.approx(before[k] / 2, rel=1e-6) for k in range(n + 1, 2 * n + 1))
    groups = train_state(out, 2 * n)["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] and {g["eps"] for g in groups} == {1e-4}
    assert {g["initial_lr"] for g in groups} == {5e-4}


def test_resume_with_more_steps_follows_the_new_schedule_from_its_first_step(uninterrupted, pretrain_data, tmp_path):
    """A run extended on resume (--max_steps 2N -> 2N + 4) trains every resumed step at the longer schedule's lr,
    the first one included (it ran at the saved run's lr, the shorter schedule's)."""
    from optimization import lr_factor
    ref, n, flags = uninterrupted
    out = tmp_path / "longer"
    total = 2 * n + 4
    assert run_pretraining.main(argv(pretrain_data, out, resume=ref / "checkpoints" / f"step-{n}",
                                     **dict(flags, max_steps=total))) == 0
    logged = {r["step"]: r["lr"] for r in rows(out)}
    assert sorted(logged) == list(range(n + 1, total + 1))
    for s, lr in logged.items():
        assert lr == pytest.approx(1e-3 * lr_factor("linear", (s - 1) / total, 0.1), rel=1e-12, abs=0), s


def test_one_loader_across_epochs_reads_the_same(pretrain_data, tmp_path, monkeypatch):
    """With loader workers, one loader serves every epoch (its workers start once and set themselves up for each
    new epoch); the run is the same as one that reads every batch in the main process."""
    import pretraining_loader
    ds = PretrainingDataset(str(pretrain_data / "small_shards"), max_seq_length=64, max_predictions_per_seq=10)
    flags = dict(shards="small_shards", max_steps=3 * (len(ds) // 8) + 1, save_steps=1000)
    ref = tmp_path / "main_process"
    assert run_pretraining.main(argv(pretrain_data, ref, **flags)) == 0
    made, real = [], pretraining_loader.DataLoader
    monkeypatch.setattr(pretraining_loader, "DataLoader", lambda *a, **k: made.append(k["num_workers"]) or real(*a, **k))
    out = tmp_path / "workers"
    assert run_pretraining.main(argv(pretrain_data, out, num_workers=2, **flags)) == 0
    assert [r["epoch"] for r in rows(out)][-1] == 3 and made == [2]
    assert_same_run(rows(ref), rows(out), range(1, flags["max_steps"] + 1))
    assert_same_weights(weights(ref, flags["max_steps"]), weights(out, flags["max_steps"]))


def test_next_epoch_error_is_reported_when_that_epoch_is_reached(pretrain_data, tmp_path, monkeypatch, capsys):
    """An epoch that cannot be set up, found while the loader reads ahead, changes nothing until that epoch is
    reached: the current epoch trains to its end, then the run stops with the same one-line error as without
    workers."""
    ds = PretrainingDataset(str(pretrain_data / "small_shards"), max_seq_length=64, max_predictions_per_seq=10, seed=1)
    ds.set_epoch(0)
    per_epoch = ds.num_global_examples // 8  # epoch 0's steps in the runs below (--seed 1, batch 8)
    patch_epoch_1(monkeypatch, error="epoch 1 cannot be built")
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        with pytest.raises(SystemExit) as e:
            run_pretraining.main(argv(pretrain_data, out, shards="small_shards", num_workers=workers,
                                      max_steps=3 * per_epoch, save_steps=1000))
        assert e.value.code == 2
        assert not multiprocessing.active_children()  # the error's traceback (held in e) keeps no workers alive
        assert capsys.readouterr().err.strip().endswith("small_shards: epoch 1 cannot be built")
        assert [r["step"] for r in rows(out)] == list(range(1, per_epoch + 1))  # epoch 0 trained to its end


def test_a_worker_error_leaves_no_workers(pretrain_data, tmp_path, monkeypatch, capsys):
    """An error inside a loader worker ends the run (a ValueError as a one-line exit 2, anything else raised) and
    shuts the workers down at once: left to garbage collection they would hang the process's exit."""
    example = PretrainingDataset.example

    def broken(self, g, *a, **k):
        if self.epoch == 1:
            raise exc("cannot mask this one")
        return example(self, g, *a, **k)
    monkeypatch.setattr(PretrainingDataset, "example", broken)
    for exc in (ValueError, RuntimeError):
        with pytest.raises(SystemExit if exc is ValueError else RuntimeError) as e:
            run_pretraining.main(argv(pretrain_data, tmp_path / exc.__name__, shards="small_shards", num_workers=2,
                                      max_steps=100, save_steps=1000))
        assert not multiprocessing.active_children()
        if exc is ValueError:  # one line, the worker's own message, not its traceback
            err = capsys.readouterr().err.strip().splitlines()
            assert e.value.code == 2 and err[-1].endswith("small_shards: cannot mask this one (in a loader worker)")
            assert not any("Traceback" in line for line in err), err


def test_a_cut_log_line_is_dropped_on_resume_and_a_failed_set_up_leaves_no_workers(pretrain_data, tmp_path):
    """A kill mid-write leaves log.jsonl's last line cut: the resumed run drops it and goes on. The loader's
    workers start at the first step, so a run that fails while setting up its output dir (here log.jsonl is a
    folder) leaves none behind: they ignore the signals that end a process, and hung its exit."""
    out = tmp_path / "run"
    assert run_pretraining.main(argv(pretrain_data, out, max_steps=4, save_steps=2, num_workers=2)) == 0
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 5, "lo')
    assert run_pretraining.main(argv(pretrain_data, out, max_steps=6, save_steps=2, num_workers=2, resume="auto")) == 0
    assert [r["step"] for r in rows(out) if "loss" in r] == [1, 2, 3, 4, 5, 6]
    (out / "log.jsonl").unlink()
    (out / "log.jsonl").mkdir()
    with pytest.raises(OSError):
        run_pretraining.main(argv(pretrain_data, out, max_steps=8, save_steps=2, num_workers=2, resume="auto"))
    assert not multiprocessing.active_children()


def test_crash_before_rename_keeps_latest(uninterrupted, pretrain_data, tmp_path, monkeypatch):
    ref, n, flags = uninterrupted
    out = tmp_path / "crashed"
    real_replace = os.replace

    def crash(src, dst, *a, **k):
        if str(src).endswith(f"step-{2 * n}.tmp"):
            raise RuntimeError("simulated crash")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_pretraining.main(argv(pretrain_data, out, **flags))
    monkeypatch.undo()
    assert latest(out) == f"step-{n}" and (out / "checkpoints" / f"step-{2 * n}.tmp").is_dir()
    assert not (out / "checkpoints" / f"step-{2 * n}").exists()
    assert run_pretraining.main(argv(pretrain_data, out, resume="auto", **flags)) == 0
    assert set(os.listdir(out / "checkpoints")) == {"latest", f"step-{n}", f"step-{2 * n}"}
    assert [r["step"] for r in rows(out)] == list(range(1, 2 * n + 1))  # the lost stretch is not logged twice
    assert_same_run(rows(ref), rows(out), range(1, 2 * n + 1))
    assert_same_weights(weights(ref, 2 * n), weights(out, 2 * n))


def test_gradient_accumulation_matches_one_batch(pretrain_data, tmp_path):
    # no dropout: the two runs draw their masks over differently shaped tensors
    flags = dict(config="tiny_nodrop.json", max_steps=3, save_steps=3, warmup_proportion=0.0, train_batch_size=8)
    run_pretraining.main(argv(pretrain_data, tmp_path / "one", **flags))
    run_pretraining.main(argv(pretrain_data, tmp_path / "acc", gradient_accumulation_steps=2, **flags))
    run_pretraining.main(argv(pretrain_data, tmp_path / "acc4", gradient_accumulation_steps=4, optimizer="lamb",
                              scheduler="poly", **(flags | {"max_steps": 1, "save_steps": 1})))
    run_pretraining.main(argv(pretrain_data, tmp_path / "lamb", optimizer="lamb", scheduler="poly",
                              **(flags | {"max_steps": 1, "save_steps": 1})))
    # the gradient norm (pre-clip) is where a wrong normalisation would show: Adam's first step hides its scale
    assert_same_run(rows(tmp_path / "one"), rows(tmp_path / "acc"), [1, 2, 3])
    assert_same_weights(weights(tmp_path / "one", 3), weights(tmp_path / "acc", 3))
    assert_same_run(rows(tmp_path / "lamb"), rows(tmp_path / "acc4"), [1])
    assert_same_weights(weights(tmp_path / "lamb", 1), weights(tmp_path / "acc4", 1))


def test_first_step_gradient_is_that_of_the_models_own_loss(pretrain_data, tmp_path, monkeypatch):
    """The step's loss, assembled in the training loop from summed MLM and SOP terms (so accumulation and ranks can
    share one normalisation), is the mean over masked tokens plus the mean over pairs: the model's own `loss`,
    which test_modeling holds to transformers' BertForPreTraining loss. A SOP term divided by the masked count (or
    an MLM term by the batch) changes the gradient; the accumulation test above cannot see that."""
    seen = {}
    forward = BertForPreTraining.forward

    def spy(self, **kw):
        if not seen:  # the weights and inputs of the first micro-batch, before any update
            seen["weights"] = {k: v.detach().clone() for k, v in self.state_dict().items()}
            seen["inputs"] = {k: v.clone() if torch.is_tensor(v) else v for k, v in kw.items()}
        return forward(self, **kw)
    monkeypatch.setattr(BertForPreTraining, "forward", spy)
    run_pretraining.main(argv(pretrain_data, tmp_path / "one", config="tiny_nodrop.json", max_steps=1, save_steps=1))
    model = BertForPreTraining(BertConfig.from_json_file(str(pretrain_data / "tiny_nodrop.json")))
    model.load_state_dict(seen["weights"])
    forward(model, **seen["inputs"])["loss"].backward()
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()
                                                     if p.grad is not None]))
    assert rows(tmp_path / "one")[0]["grad_norm"] == pytest.approx(expected.item(), rel=1e-5)


def test_each_log_row_gives_the_lr_its_step_used(pretrain_data, tmp_path):
    """Step s (from 1) updates with the schedule's lr at progress (s - 1) / max_steps, and its log row says so
    (the first step of a warm-up runs at lr 0; the last at the decay's last value, not at 0)."""
    from optimization import lr_factor
    out = tmp_path / "lr"
    run_pretraining.main(argv(pretrain_data, out, max_steps=4, save_steps=4, warmup_proportion=0.5))
    logged = [r["lr"] for r in rows(out)]
    assert logged == pytest.approx([1e-3 * lr_factor("linear", s / 4, 0.5) for s in range(4)], abs=1e-12)
    assert logged[0] == 0 and logged[-1] > 0



def test_a_step_the_loss_scaler_skips_leaves_the_schedule_where_it_was(pretrain_data, tmp_path, monkeypatch):
    """Steps fp16's loss scaler skips (their gradients overflowed) do not advance the schedule (as in transformers'
    Trainer): with the first 3 of 8 skipped, step s runs at the lr of progress max(s - 1 - 3, 0) / 8,
    and each row's skipped_steps counts the skips so far."""
    from optimization import lr_factor
    scaler = overflowing_scaler(3)
    monkeypatch.setattr(run_pretraining, "make_grad_scaler", lambda rt: scaler)
    out = tmp_path / "scaled"
    run_pretraining.main(argv(pretrain_data, out, max_steps=8, save_steps=8, warmup_proportion=0))
    logged = rows(out)
    assert [r["skipped_steps"] for r in logged] == [1, 2, 3, 3, 3, 3, 3, 3] and scaler.get_scale() == 2.0 ** 13
    assert [r["lr"] for r in logged] == pytest.approx([1e-3 * lr_factor("linear", max(s - 3, 0) / 8, 0)
                                                       for s in range(8)], abs=1e-12)

@needs_cxx
@pytest.mark.parametrize("optimizer", ["adam", "lamb"])
def test_compile_trains_like_eager_and_resumes_eager(pretrain_data, tmp_path, optimizer):
    # dropout off: compiled code draws its dropout masks with another generator
    from torch._dynamo.utils import counters
    flags = dict(config="tiny_nodrop.json", max_steps=4, save_steps=2, warmup_proportion=0.0, optimizer=optimizer)
    run_pretraining.main(argv(pretrain_data, tmp_path / "eager", **flags))
    torch._dynamo.reset()  # an earlier test's compiled model would be reused and not counted
    counters.clear()
    run_pretraining.main(argv(pretrain_data, tmp_path / "compiled", compile=True, **flags))
    # the model only (static shapes): LAMB's update stays eager, compiled it was slower on a GPU
    assert counters["stats"]["unique_graphs"] == 1
    assert_same_run(rows(tmp_path / "eager"), rows(tmp_path / "compiled"), [1, 2, 3, 4], tol=1e-4)
    assert_same_weights(weights(tmp_path / "eager", 4), weights(tmp_path / "compiled", 4), tol=1e-4)
    # the checkpoint is the plain model's: an eager run continues it
    assert run_pretraining.main(argv(pretrain_data, tmp_path / "compiled", resume="auto",
                                     **(flags | {"max_steps": 6}))) == 0
    assert rows(tmp_path / "compiled")[-1]["step"] == 6


def test_compile_mode_reaches_torch_compile_and_marks_each_step(pretrain_data, tmp_path, monkeypatch, capsys):
    """--compile_mode reduce-overhead: torch.compile gets the mode and every step starts a new CUDA-graph replay
    (the graphs themselves are made on a GPU only). Stand-ins for torch.compile (the model itself) and the step
    mark (a counter) make the run an eager one, so its rows must equal the eager run's."""
    flags = dict(config="tiny_nodrop.json", max_steps=3, save_steps=3, warmup_proportion=0.0)
    run_pretraining.main(argv(pretrain_data, tmp_path / "eager", **flags))
    modes, marks = [], []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or model)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    run_pretraining.main(argv(pretrain_data, tmp_path / "graphs", compile=True, compile_mode="reduce-overhead",
                              **flags))
    assert modes == ["reduce-overhead"] and len(marks) == 3
    assert_same_run(rows(tmp_path / "eager"), rows(tmp_path / "graphs"), [1, 2, 3], tol=0)
    run_pretraining.main(argv(pretrain_data, tmp_path / "default", compile=True, **flags))
    assert modes == ["reduce-overhead", None] and len(marks) == 3  # the default mode marks nothing
    capsys.readouterr()
    for bad, expect in (({"compile_mode": "reduce-overhead"}, "add --compile"),
                        ({"compile": True, "compile_mode": "reduce-overhead", "gradient_accumulation_steps": 2},
                         "--gradient_accumulation_steps")):
        with pytest.raises(SystemExit) as e:
            run_pretraining.main(argv(pretrain_data, tmp_path / "bad", **(flags | bad)))
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and expect in err[0], err
    assert not (tmp_path / "bad").exists()


def test_no_sop_trains_mlm_only(pretrain_data, tmp_path):
    out = tmp_path / "no_sop"
    assert run_pretraining.main(argv(pretrain_data, out, no_sop=True, weight_decay=0.0, max_steps=6, save_steps=6)) == 0
    r = rows(out)
    assert all(x["sop_loss"] is None and x["sop_acc"] is None and x["loss"] == x["mlm_loss"] for x in r)
    assert r[-1]["mlm_loss"] < r[0]["mlm_loss"]
    # the SOP classifier never got a gradient (weight 0), so Adam without decay left it as initialised
    run_pretraining.set_seed(1)
    init = BertForPreTraining(BertConfig.from_json_file(str(pretrain_data / "tiny.json"))).state_dict()
    sop_head = {k: v for k, v in weights(out, 6).items() if k.startswith("cls.seq_relationship")}
    assert len(sop_head) == 2
    for k, v in sop_head.items():
        torch.testing.assert_close(v, init[k], rtol=0, atol=0)


def test_phase2_starts_from_phase1_weights_with_fresh_optimizer(pretrain_run, pretrain_data, tmp_path):
    out = tmp_path / "phase2"
    # lr 0: the weights must come out exactly as phase 1 left them
    assert run_pretraining.main(argv(pretrain_data, out, config=None, init_checkpoint=pretrain_run, max_seq_length=128,
                                     max_predictions_per_seq=20, learning_rate=0.0, max_steps=4, save_steps=4)) == 0
    assert_same_weights(weights(pretrain_run, 60), weights(out, 4), tol=0)
    st = train_state(out, 4)
    assert st["step"] == 4 and st["scheduler"]["last_epoch"] == 4 and st["args"]["max_seq_length"] == 128
    assert all(s["step"] == 4 for s in st["optimizer"]["state"].values())  # not phase 1's 60 steps
    # phase 1's training carried over (means over 4 batches of 8: one batch alone varies by +-0.5)
    fresh = sum(r["loss"] for r in rows(pretrain_run)[:4]) / 4
    assert sum(r["loss"] for r in rows(out)) / 4 < fresh - 0.5


def test_sigterm_saves_and_resumes(pretrain_data, tmp_path):
    out = tmp_path / "term"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # its own process group, signalled as a whole the way a scheduler does: the loader workers get SIGTERM too
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "run_pretraining.py"),
                             *argv(pretrain_data, out, max_steps=100000, save_steps=100000, num_workers=2)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 90
        while not ((out / "log.jsonl").exists() and (out / "log.jsonl").read_text().strip()):
            assert proc.poll() is None and time.time() < deadline, "no step logged"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, err
    k = int(latest(out).split("-")[1])
    assert k >= 1 and train_state(out, k)["step"] == k and not (out / "DONE").exists()
    assert run_pretraining.main(argv(pretrain_data, out, max_steps=100000, resume="auto",
                                     max_time_minutes=0.0001)) == 0
    log = rows(out)
    assert [r["step"] for r in log] == list(range(1, len(log) + 1)) and len(log) >= k + 1


def test_tensorboard_gets_the_log_rows_and_a_broken_one_is_skipped(pretrain_data, tmp_path, monkeypatch, capsys):
    """TensorBoard is optional: with a writer every log row reaches it; a writer that fails to start (e.g. a
    protobuf clash) gives one warning and the run trains on. (Stand-in writers: tensorboard is not a dependency.)"""
    import types

    scalars = []

    class Writer:
        def __init__(self, logdir):
            self.logdir = logdir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def close(self):
            scalars.append("closed")

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    run_pretraining.main(argv(pretrain_data, tmp_path / "tb", max_steps=3))
    assert {t for t, _, s in scalars[:-1] if s == 3} >= {"train/loss", "train/mlm_loss", "train/lr", "train/seq_per_s",
                                                          "train/data_wait"}
    assert scalars[-1] == "closed" and [r["loss"] for r in rows(tmp_path / "tb")] == [
        v for t, v, _ in scalars[:-1] if t == "train/loss"]

    def broken(logdir):
        raise TypeError("Descriptors cannot be created directly")

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=broken))
    capsys.readouterr()
    run_pretraining.main(argv(pretrain_data, tmp_path / "broken", max_steps=2))
    err = capsys.readouterr().err
    assert "warning: TensorBoard logging is off (TypeError: Descriptors" in err and len(rows(tmp_path / "broken")) == 2

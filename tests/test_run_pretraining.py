"""run_pretraining.py on the CPU with a tiny model and shards built from ~200 KB of the bundled Korean text.

Properties: the loss goes down; a resumed run repeats the uninterrupted one exactly (weights, optimizer, schedule,
dropout RNG and data position, with and without loader workers, across an epoch boundary); a crash between writing
step-N.tmp and renaming it leaves `latest` on the previous checkpoint; gradient accumulation and the loss
normalisation give the same update as one big batch; phase 2 starts from phase-1 weights with a fresh optimizer;
SIGTERM saves and exits 143; bad input is one line on stderr and exit code 2, with the output dir untouched.
"""
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import create_pretraining_data  # noqa: E402
import run_pretraining  # noqa: E402
import tokenization  # noqa: E402
from fileio import read_jsonl  # noqa: E402
from models.modeling import BertConfig, BertForPreTraining, BertModel, load_checkpoint  # noqa: E402
from pretraining_data import PretrainingDataset  # noqa: E402
from helpers import needs_cxx  # noqa: E402

TEXT = os.path.join(ROOT, "data", "korean_text")


def prepare_pretraining_data(base):
    """vocab (1000 pieces), shards of ~200 KB and of ~5 KB (a few steps per epoch), tiny configs. Cached on disk,
    so test_ddp.py reuses what this module built in the same session."""
    d = base / "pretrain_data"
    if (d / "ready").exists():
        return d
    d.mkdir(exist_ok=True)
    files = [os.path.join(TEXT, "konlpy", "kolaw", "constitution.txt")]
    kobill = os.path.join(TEXT, "konlpy", "kobill")
    files += sorted(os.path.join(kobill, f) for f in os.listdir(kobill))
    text = "".join(open(f, encoding="utf-8").read().replace("\r\n", "\n") + "\n\n" for f in files)
    with open(os.path.join(TEXT, "boddari", "wikinews.txt"), encoding="utf-8") as f:
        text += f.read(20000).rsplit("\n", 1)[0] + "\n"
    (d / "corpus.txt").write_text(text, encoding="utf-8")
    (d / "small.txt").write_text(text[:4000].rsplit("\n", 1)[0] + "\n", encoding="utf-8")
    tokenization.main(["build-vocab", "--corpus", str(d / "corpus.txt"), "--vocab_size", "1000",
                       "--output", str(d / "vocab.txt")])
    for name, corpus in (("shards", "corpus.txt"), ("small_shards", "small.txt")):
        create_pretraining_data.main(["--input_files", str(d / corpus), "--vocab_file", str(d / "vocab.txt"),
                                      "--output_dir", str(d / name), "--sentence_splitter", "regex",
                                      "--num_workers", "1"])
    cfg = json.load(open(os.path.join(ROOT, "models", "configs", "tiny.json")))
    cfg["vocab_size"] = sum(1 for _ in open(d / "vocab.txt", encoding="utf-8"))
    (d / "tiny.json").write_text(json.dumps(cfg))
    nodrop = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (d / "tiny_nodrop.json").write_text(json.dumps(cfg | nodrop))
    (d / "ready").write_text("")
    return d


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    return prepare_pretraining_data(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # the CI machine is small and shared: intra-op threads only add contention at this model size
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def argv(data, out, config="tiny.json", shards="shards", **flags):
    a = {"config_file": data / config if config else None, "input_dir": data / shards, "output_dir": out,
         "max_seq_length": 64, "max_predictions_per_seq": 10, "train_batch_size": 8, "learning_rate": 1e-3,
         "max_steps": 8, "log_steps": 1, "save_steps": 4, "num_workers": 0, "seed": 1, "no_cuda": True}
    a.update(flags)
    out = []
    for k, v in a.items():
        if v is None:
            continue
        out += [f"--{k}"] if v is True else [f"--{k}", str(v)]
    return out


def rows(out):
    return read_jsonl(os.path.join(out, "log.jsonl"))


def weights(out, step):
    return load_file(os.path.join(out, "checkpoints", f"step-{step}", "model.safetensors"))


def train_state(out, step):
    return torch.load(os.path.join(out, "checkpoints", f"step-{step}", "train_state.pt"), weights_only=True)


def latest(out):
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        return f.read().strip()


def assert_same_run(rows_a, rows_b, steps, tol=1e-6):
    a = {r["step"]: r for r in rows_a}
    b = {r["step"]: r for r in rows_b}
    for s in steps:
        for k in ("loss", "mlm_loss", "sop_loss", "grad_norm", "lr"):
            assert b[s][k] == pytest.approx(a[s][k], rel=tol, abs=tol), (s, k)


def assert_same_weights(wa, wb, tol=1e-6):
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=tol, msg=k)


# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """60 steps, checkpoints every 20, keeping 2."""
    out = tmp_path_factory.mktemp("trained")
    assert run_pretraining.main(argv(data, out, train_batch_size=16, learning_rate=3e-3, warmup_proportion=0.05,
                                     max_steps=60, save_steps=20, keep_last=2)) == 0
    return out


def test_loss_decreases_and_outputs(trained, data):
    log = rows(trained)
    assert [r["step"] for r in log] == list(range(1, 61))
    for key in ("step", "loss", "mlm_loss", "sop_loss", "sop_acc", "mlm_acc", "lr", "grad_norm", "seq_per_s",
                "data_wait", "elapsed_s", "epoch"):
        assert all(key in r and r[key] is not None for r in log), key
    assert all(0 <= r["data_wait"] < 1 for r in log)  # a share of each interval's wall time
    first, last = [r["loss"] for r in log[:10]], [r["loss"] for r in log[-10:]]
    assert sum(last) / 10 < sum(first) / 10 - 0.5, (first, last)
    assert all(r["loss"] == pytest.approx(r["mlm_loss"] + r["sop_loss"]) for r in log)
    # keep_last 2: step-20 pruned; latest names the final checkpoint
    assert sorted(os.listdir(trained / "checkpoints")) == ["latest", "step-40", "step-60"]
    assert latest(trained) == "step-60"
    ckpt = trained / "checkpoints" / "step-60"
    assert sorted(os.listdir(ckpt)) == ["config.json", "model.safetensors", "train_state.pt", "vocab.txt"]
    assert (ckpt / "vocab.txt").read_bytes() == (data / "vocab.txt").read_bytes()
    st = train_state(trained, 60)
    assert st["step"] == 60 and st["args"]["max_steps"] == 60 and st["epoch_position"] == 60 * 16
    assert (trained / "loss.png").stat().st_size > 0 and json.loads((trained / "DONE").read_text())["step"] == 60
    # the checkpoint loads strictly into the pretraining model and as an encoder
    config = BertConfig.from_json_file(ckpt / "config.json")
    model = load_checkpoint(BertForPreTraining(config), str(ckpt), strict=True)
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight,
                               weights(trained, 60)["bert.embeddings.word_embeddings.weight"])
    load_checkpoint(BertModel(config), str(ckpt), strict=True)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """2N steps on the small shards (dropout on), checkpoint at N: the reference for the resume tests."""
    ds = PretrainingDataset(str(data / "small_shards"), max_seq_length=64, max_predictions_per_seq=10)
    per_epoch = len(ds) // 8
    assert 3 <= per_epoch <= 10, per_epoch  # so step N is mid-epoch and step 2N is in the next epoch
    n = per_epoch - 1
    out = tmp_path_factory.mktemp("uninterrupted")
    flags = dict(shards="small_shards", max_steps=2 * n, save_steps=n)
    assert run_pretraining.main(argv(data, out, **flags)) == 0
    assert rows(out)[-1]["epoch"] == 1
    return out, n, flags


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_exact(uninterrupted, data, tmp_path, num_workers):
    ref, n, flags = uninterrupted
    st = train_state(ref, n)
    assert st["step"] == n and st["epoch"] == 0 and st["epoch_position"] == n * 8
    run_ds = PretrainingDataset(str(data / "small_shards"), max_seq_length=64, max_predictions_per_seq=10, seed=1)
    first_epoch = len(run_ds) // 8  # steps of epoch 0 in these runs (--seed 1)
    st = train_state(ref, 2 * n)  # past the epoch boundary: the position counts from that epoch's start
    assert st["epoch"] == 1 and st["epoch_position"] == (2 * n - first_epoch) * 8
    out = tmp_path / "resumed"
    assert run_pretraining.main(argv(data, out, resume=ref / "checkpoints" / f"step-{n}", num_workers=num_workers,
                                     **flags)) == 0
    assert [r["step"] for r in rows(out)] == list(range(n + 1, 2 * n + 1))
    assert_same_run(rows(ref), rows(out), range(n + 1, 2 * n + 1))
    assert_same_weights(weights(ref, 2 * n), weights(out, 2 * n))


def test_resume_applies_changed_optimiser_flags(uninterrupted, data, tmp_path, capsys):
    """A resumed run takes --learning_rate, --weight_decay and --adam_epsilon from its flags (they used to come back
    from the saved optimizer state, the lr warned about as changed but never changed); the change is warned."""
    ref, n, flags = uninterrupted
    out = tmp_path / "lower_lr"
    capsys.readouterr()
    assert run_pretraining.main(argv(data, out, resume=ref / "checkpoints" / f"step-{n}", learning_rate=5e-4,
                                     weight_decay=0.05, adam_epsilon=1e-4, **flags)) == 0
    err = capsys.readouterr().err
    assert "changed learning_rate, weight_decay, adam_epsilon" in err
    before, after = ({r["step"]: r["lr"] for r in rows(d)} for d in (ref, out))
    assert all(after[k] == pytest.approx(before[k] / 2, rel=1e-6) for k in range(n + 1, 2 * n + 1))
    groups = train_state(out, 2 * n)["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] and {g["eps"] for g in groups} == {1e-4}
    assert {g["initial_lr"] for g in groups} == {5e-4}


def test_one_loader_across_epochs_reads_the_same(data, tmp_path, monkeypatch):
    """With loader workers, one loader serves every epoch (its workers start once and set themselves up for each
    new epoch); the run is the same as one that reads every batch in the main process."""
    import pretraining_loader
    ds = PretrainingDataset(str(data / "small_shards"), max_seq_length=64, max_predictions_per_seq=10)
    flags = dict(shards="small_shards", max_steps=3 * (len(ds) // 8) + 1, save_steps=1000)
    ref = tmp_path / "main_process"
    assert run_pretraining.main(argv(data, ref, **flags)) == 0
    made, real = [], pretraining_loader.DataLoader
    monkeypatch.setattr(pretraining_loader, "DataLoader", lambda *a, **k: made.append(k["num_workers"]) or real(*a, **k))
    out = tmp_path / "workers"
    assert run_pretraining.main(argv(data, out, num_workers=2, **flags)) == 0
    assert [r["epoch"] for r in rows(out)][-1] == 3 and made == [2]
    assert_same_run(rows(ref), rows(out), range(1, flags["max_steps"] + 1))
    assert_same_weights(weights(ref, flags["max_steps"]), weights(out, flags["max_steps"]))


def test_next_epoch_error_is_reported_when_that_epoch_is_reached(data, tmp_path, monkeypatch, capsys):
    """An epoch that cannot be set up, found while the loader reads ahead, changes nothing until that epoch is
    reached: the current epoch trains to its end, then the run stops with the same one-line error as without
    workers."""
    ds = PretrainingDataset(str(data / "small_shards"), max_seq_length=64, max_predictions_per_seq=10, seed=1)
    ds.set_epoch(0)
    per_epoch = ds.num_global_examples // 8  # epoch 0's steps in the runs below (--seed 1, batch 8)
    set_epoch = PretrainingDataset.set_epoch

    def broken(self, epoch):
        if epoch == 1:
            raise ValueError("epoch 1 cannot be built")
        set_epoch(self, epoch)
    monkeypatch.setattr(PretrainingDataset, "set_epoch", broken)
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        with pytest.raises(SystemExit) as e:
            run_pretraining.main(argv(data, out, shards="small_shards", num_workers=workers,
                                      max_steps=3 * per_epoch, save_steps=1000))
        assert e.value.code == 2
        assert not multiprocessing.active_children()  # the error's traceback (held in e) keeps no workers alive
        assert capsys.readouterr().err.strip().endswith("small_shards: epoch 1 cannot be built")
        assert [r["step"] for r in rows(out)] == list(range(1, per_epoch + 1))  # epoch 0 trained to its end


def test_a_worker_error_leaves_no_workers(data, tmp_path, monkeypatch, capsys):
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
            run_pretraining.main(argv(data, tmp_path / exc.__name__, shards="small_shards", num_workers=2,
                                      max_steps=100, save_steps=1000))
        assert not multiprocessing.active_children()
        if exc is ValueError:  # one line, the worker's own message, not its traceback
            err = capsys.readouterr().err.strip().splitlines()
            assert e.value.code == 2 and err[-1].endswith("small_shards: cannot mask this one (in a loader worker)")
            assert not any("Traceback" in line for line in err), err


def test_a_cut_log_line_is_dropped_on_resume_and_a_failed_set_up_leaves_no_workers(data, tmp_path):
    """A kill mid-write leaves log.jsonl's last line cut: the resumed run drops it and goes on. The loader's
    workers start at the first step, so a run that fails while setting up its output dir (here log.jsonl is a
    folder) leaves none behind: they ignore the signals that end a process, and hung its exit."""
    out = tmp_path / "run"
    assert run_pretraining.main(argv(data, out, max_steps=4, save_steps=2, num_workers=2)) == 0
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 5, "lo')
    assert run_pretraining.main(argv(data, out, max_steps=6, save_steps=2, num_workers=2, resume="auto")) == 0
    assert [r["step"] for r in rows(out) if "loss" in r] == [1, 2, 3, 4, 5, 6]
    (out / "log.jsonl").unlink()
    (out / "log.jsonl").mkdir()
    with pytest.raises(OSError):
        run_pretraining.main(argv(data, out, max_steps=8, save_steps=2, num_workers=2, resume="auto"))
    assert not multiprocessing.active_children()


def test_an_epoch_smaller_than_one_batch_is_one_line_exit_2(data, tmp_path, capsys):
    for flags, tail in (({}, "(--train_batch_size)"), ({"source_weights": "*=1"}, "with --source_weights)")):
        with pytest.raises(SystemExit) as e:
            run_pretraining.main(argv(data, tmp_path / str(len(flags)), shards="small_shards", train_batch_size=4096,
                                      **flags))
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and "fewer than one batch of 4096" in err[0], err
        assert err[0].endswith(tail), err


def test_crash_before_rename_keeps_latest(uninterrupted, data, tmp_path, monkeypatch):
    ref, n, flags = uninterrupted
    out = tmp_path / "crashed"
    real_replace = os.replace

    def crash(src, dst, *a, **k):
        if str(src).endswith(f"step-{2 * n}.tmp"):
            raise RuntimeError("simulated crash")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_pretraining.main(argv(data, out, **flags))
    monkeypatch.undo()
    assert latest(out) == f"step-{n}" and (out / "checkpoints" / f"step-{2 * n}.tmp").is_dir()
    assert not (out / "checkpoints" / f"step-{2 * n}").exists()
    assert run_pretraining.main(argv(data, out, resume="auto", **flags)) == 0
    assert set(os.listdir(out / "checkpoints")) == {"latest", f"step-{n}", f"step-{2 * n}"}
    assert [r["step"] for r in rows(out)] == list(range(1, 2 * n + 1))  # the lost stretch is not logged twice
    assert_same_run(rows(ref), rows(out), range(1, 2 * n + 1))
    assert_same_weights(weights(ref, 2 * n), weights(out, 2 * n))


def test_gradient_accumulation_matches_one_batch(data, tmp_path):
    # no dropout: the two runs draw their masks over differently shaped tensors
    flags = dict(config="tiny_nodrop.json", max_steps=3, save_steps=3, warmup_proportion=0.0, train_batch_size=8)
    run_pretraining.main(argv(data, tmp_path / "one", **flags))
    run_pretraining.main(argv(data, tmp_path / "acc", gradient_accumulation_steps=2, **flags))
    run_pretraining.main(argv(data, tmp_path / "acc4", gradient_accumulation_steps=4, optimizer="lamb",
                              scheduler="poly", **(flags | {"max_steps": 1, "save_steps": 1})))
    run_pretraining.main(argv(data, tmp_path / "lamb", optimizer="lamb", scheduler="poly",
                              **(flags | {"max_steps": 1, "save_steps": 1})))
    # the gradient norm (pre-clip) is where a wrong normalisation would show: Adam's first step hides its scale
    assert_same_run(rows(tmp_path / "one"), rows(tmp_path / "acc"), [1, 2, 3])
    assert_same_weights(weights(tmp_path / "one", 3), weights(tmp_path / "acc", 3))
    assert_same_run(rows(tmp_path / "lamb"), rows(tmp_path / "acc4"), [1])
    assert_same_weights(weights(tmp_path / "lamb", 1), weights(tmp_path / "acc4", 1))


@needs_cxx
@pytest.mark.parametrize("optimizer", ["adam", "lamb"])
def test_compile_trains_like_eager_and_resumes_eager(data, tmp_path, optimizer):
    # dropout off: compiled code draws its dropout masks with another generator
    from torch._dynamo.utils import counters
    flags = dict(config="tiny_nodrop.json", max_steps=4, save_steps=2, warmup_proportion=0.0, optimizer=optimizer)
    run_pretraining.main(argv(data, tmp_path / "eager", **flags))
    torch._dynamo.reset()  # an earlier test's compiled model would be reused and not counted
    counters.clear()
    run_pretraining.main(argv(data, tmp_path / "compiled", compile=True, **flags))
    # the model only (static shapes): LAMB's update stays eager, compiled it was slower on a GPU
    assert counters["stats"]["unique_graphs"] == 1
    assert_same_run(rows(tmp_path / "eager"), rows(tmp_path / "compiled"), [1, 2, 3, 4], tol=1e-4)
    assert_same_weights(weights(tmp_path / "eager", 4), weights(tmp_path / "compiled", 4), tol=1e-4)
    # the checkpoint is the plain model's: an eager run continues it
    assert run_pretraining.main(argv(data, tmp_path / "compiled", resume="auto", **(flags | {"max_steps": 6}))) == 0
    assert rows(tmp_path / "compiled")[-1]["step"] == 6


def test_compile_mode_reaches_torch_compile_and_marks_each_step(data, tmp_path, monkeypatch, capsys):
    """--compile_mode reduce-overhead: torch.compile gets the mode and every step starts a new CUDA-graph replay
    (the graphs themselves are made on a GPU only). Stand-ins for torch.compile (the model itself) and the step
    mark (a counter) make the run an eager one, so its rows must equal the eager run's."""
    flags = dict(config="tiny_nodrop.json", max_steps=3, save_steps=3, warmup_proportion=0.0)
    run_pretraining.main(argv(data, tmp_path / "eager", **flags))
    modes, marks = [], []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or model)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    run_pretraining.main(argv(data, tmp_path / "graphs", compile=True, compile_mode="reduce-overhead", **flags))
    assert modes == ["reduce-overhead"] and len(marks) == 3
    assert_same_run(rows(tmp_path / "eager"), rows(tmp_path / "graphs"), [1, 2, 3], tol=0)
    run_pretraining.main(argv(data, tmp_path / "default", compile=True, **flags))
    assert modes == ["reduce-overhead", None] and len(marks) == 3  # the default mode marks nothing
    capsys.readouterr()
    for bad, expect in (({"compile_mode": "reduce-overhead"}, "add --compile"),
                        ({"compile": True, "compile_mode": "reduce-overhead", "gradient_accumulation_steps": 2},
                         "--gradient_accumulation_steps")):
        with pytest.raises(SystemExit) as e:
            run_pretraining.main(argv(data, tmp_path / "bad", **(flags | bad)))
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and expect in err[0], err
    assert not (tmp_path / "bad").exists()


def test_no_sop_trains_mlm_only(data, tmp_path):
    out = tmp_path / "no_sop"
    assert run_pretraining.main(argv(data, out, no_sop=True, weight_decay=0.0, max_steps=6, save_steps=6)) == 0
    r = rows(out)
    assert all(x["sop_loss"] is None and x["sop_acc"] is None and x["loss"] == x["mlm_loss"] for x in r)
    assert r[-1]["mlm_loss"] < r[0]["mlm_loss"]
    # the SOP classifier never got a gradient (weight 0), so Adam without decay left it as initialised
    run_pretraining.set_seed(1)
    init = BertForPreTraining(BertConfig.from_json_file(str(data / "tiny.json"))).state_dict()
    trained = {k: v for k, v in weights(out, 6).items() if k.startswith("cls.seq_relationship")}
    assert len(trained) == 2
    for k, v in trained.items():
        torch.testing.assert_close(v, init[k], rtol=0, atol=0)


def test_phase2_starts_from_phase1_weights_with_fresh_optimizer(trained, data, tmp_path):
    out = tmp_path / "phase2"
    # lr 0: the weights must come out exactly as phase 1 left them
    assert run_pretraining.main(argv(data, out, config=None, init_checkpoint=trained, max_seq_length=128,
                                     max_predictions_per_seq=20, learning_rate=0.0, max_steps=4, save_steps=4)) == 0
    assert_same_weights(weights(trained, 60), weights(out, 4), tol=0)
    st = train_state(out, 4)
    assert st["step"] == 4 and st["scheduler"]["last_epoch"] == 4 and st["args"]["max_seq_length"] == 128
    assert all(s["step"] == 4 for s in st["optimizer"]["state"].values())  # not phase 1's 60 steps
    # phase 1's training carried over (means over 4 batches of 8: one batch alone varies by +-0.5)
    fresh = sum(r["loss"] for r in rows(trained)[:4]) / 4
    assert sum(r["loss"] for r in rows(out)) / 4 < fresh - 0.5


def test_sigterm_saves_and_resumes(data, tmp_path):
    out = tmp_path / "term"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # its own process group, signalled as a whole the way a scheduler does: the loader workers get SIGTERM too
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "run_pretraining.py"),
                             *argv(data, out, max_steps=100000, save_steps=100000, num_workers=2)], cwd=ROOT,
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
    assert run_pretraining.main(argv(data, out, max_steps=100000, resume="auto",
                                     max_time_minutes=0.0001)) == 0
    log = rows(out)
    assert [r["step"] for r in log] == list(range(1, len(log) + 1)) and len(log) >= k + 1


def test_nonfinite_loss_stops_without_saving(data, tmp_path, monkeypatch, capsys):
    class Poisoned(BertForPreTraining):
        calls = 0

        def forward(self, *a, **k):
            out = super().forward(*a, **k)
            Poisoned.calls += 1
            if Poisoned.calls > 3:
                out["mlm_loss"] = out["mlm_loss"] * float("nan")
            return out

    monkeypatch.setattr(run_pretraining, "BertForPreTraining", Poisoned)
    out = tmp_path / "nan"
    with pytest.raises(SystemExit) as e:
        run_pretraining.main(argv(data, out, save_steps=2, log_steps=2))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert e.value.code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert "non-finite loss between steps 3 and 4" in errors[0] and "step-2" in errors[0]
    assert latest(out) == "step-2" and sorted(os.listdir(out / "checkpoints")) == ["latest", "step-2"]


def _snapshot(d):
    return {os.path.join(r, f): os.stat(os.path.join(r, f)).st_mtime_ns for r, _, fs in os.walk(d) for f in fs}


@pytest.mark.parametrize("case", ["missing_dir", "not_prepared", "config_vocab", "vocab_file", "batch",
                                  "resume_config", "existing_run", "seed", "short_seq_prob", "damaged_shard",
                                  "out_of_vocab_shard", "max_time_negative", "max_time_nan", "output_is_a_file",
                                  "shards_vocab_replaced", "cut_offsets", "offsets_out_of_order", "meta_not_a_dict",
                                  "resume_into_another_run", "rewind_with_a_batch_too_big"])
def test_bad_input_is_one_line_exit_2(case, data, trained, tmp_path, capsys):
    out, flags, expect = tmp_path / "out", {}, None
    other = tmp_path / "other_run"  # another run's finished output, for the cases that must leave it alone
    shutil.copytree(trained, other)
    if case == "missing_dir":
        flags, expect = {"input_dir": tmp_path / "nope"}, "--input_dir"
    elif case == "not_prepared":
        (tmp_path / "empty").mkdir()
        flags, expect = {"input_dir": tmp_path / "empty"}, "meta.json"
    elif case == "config_vocab":
        cfg = json.loads((data / "tiny.json").read_text()) | {"vocab_size": 999}
        (tmp_path / "c.json").write_text(json.dumps(cfg))
        flags, expect = {"config_file": tmp_path / "c.json"}, "meta.json"
    elif case == "vocab_file":
        (tmp_path / "v.txt").write_text((data / "vocab.txt").read_text().replace("[UNK]", "[UNKNOWN]"))
        flags, expect = {"vocab_file": tmp_path / "v.txt"}, "--vocab_file"
    elif case == "batch":
        flags, expect = {"train_batch_size": 10, "gradient_accumulation_steps": 3}, "--train_batch_size"
    elif case == "resume_config":
        cfg = json.loads((data / "tiny.json").read_text()) | {"hidden_size": 32}
        (tmp_path / "c.json").write_text(json.dumps(cfg))
        out, flags, expect = trained, {"config_file": tmp_path / "c.json", "resume": "auto"}, "hidden_size"
    elif case == "existing_run":
        out, expect = trained, "--resume"
    elif case in ("seed", "short_seq_prob"):
        flags, expect = {case: -1}, f"--{case}"
    elif case == "damaged_shard":  # found before training, not in a data-loader worker hours later
        shutil.copytree(data / "shards", tmp_path / "shards")
        ids = next((tmp_path / "shards").glob("*.ids.npy"))
        ids.write_bytes(ids.read_bytes()[:-64])
        flags, expect = {"input_dir": tmp_path / "shards"}, ids.name
    elif case == "out_of_vocab_shard":  # one id past the vocab: on a GPU an embedding assert that names nothing
        shutil.copytree(data / "shards", tmp_path / "shards")
        ids = next((tmp_path / "shards").glob("*.ids.npy"))
        arr = np.load(ids)
        arr[len(arr) // 2] = len((data / "vocab.txt").read_text(encoding="utf-8").splitlines())
        np.save(ids, arr)
        flags, expect = {"input_dir": tmp_path / "shards"}, f"{ids.name}: token id {arr[len(arr) // 2]} is outside"
    elif case in ("max_time_negative", "max_time_nan"):  # -1 trained a step and wrote DONE; NaN had no budget at all
        flags, expect = {"max_time_minutes": -1 if case == "max_time_negative" else "nan"}, "--max_time_minutes"
    elif case == "output_is_a_file":
        out.write_text("")
        expect = "--output_dir"
    elif case in ("shards_vocab_replaced", "cut_offsets", "offsets_out_of_order", "meta_not_a_dict"):
        shards = tmp_path / "shards"
        shutil.copytree(data / "shards", shards)
        flags = {"input_dir": shards}
        sent = next(shards.glob("*.sentences.npy"))
        if case == "shards_vocab_replaced":  # same size, other order: every id would mean another token
            lines = (shards / "vocab.txt").read_text(encoding="utf-8").splitlines()
            (shards / "vocab.txt").write_text("\n".join(lines[:10] + lines[10:][::-1]) + "\n", encoding="utf-8")
            expect = "is not the vocab these shards were built with"
        elif case == "cut_offsets":
            sent.write_bytes(sent.read_bytes()[:-16])
            expect = sent.name
        elif case == "offsets_out_of_order":
            arr = np.load(sent)
            arr[1] = arr[-1] + 5
            np.save(sent, arr)
            expect = f"{sent.name} (or its documents): offsets that do not rise"
        else:
            (shards / "meta.json").write_text("[]", encoding="utf-8")
            expect = "meta.json: not a"
    elif case == "resume_into_another_run":  # it used to delete that run's checkpoints and splice the two logs
        out, flags, expect = other, {"resume": trained / "checkpoints" / "step-40"}, "already holds checkpoints"
    elif case == "rewind_with_a_batch_too_big":  # refused before the output dir's DONE and log are touched
        out, flags, expect = other, {"resume": other / "checkpoints" / "step-40", "train_batch_size": 100000,
                                     "max_steps": 60}, "fewer than one batch of 100000"
    before, before_other = _snapshot(trained), _snapshot(other)
    with pytest.raises(SystemExit) as e:
        run_pretraining.main(argv(data, out, **flags))
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("warning: ")]  # a rewind with another batch size is warned about first
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and expect in err[0], err
    if case == "resume_config":
        assert str(trained / "checkpoints" / "step-60") in err[0]
    assert _snapshot(trained) == before and _snapshot(other) == before_other
    assert out in (trained, other) or not out.exists() or out.is_file()


def test_schedule_by_time_follows_the_budget(data, tmp_path):
    """With --schedule_by_time the lr tracks elapsed/budget: a 3 s budget finishes the warm-up and decays the lr
    within far fewer steps than --max_steps, where the step-based schedule would still be warming up."""
    out = tmp_path / "timed"
    rc = run_pretraining.main(argv(data, out, max_steps=100000, warmup_proportion=0.1, max_time_minutes=0.05,
                                   schedule_by_time=True, save_steps=100000))
    assert rc == 0
    lrs = [r["lr"] for r in rows(out)]
    step_based_peak = 1e-3 * len(lrs) / (0.1 * 100000)  # the step schedule's lr after this many steps
    assert max(lrs) > 10 * step_based_peak
    assert lrs[-1] < 0.5 * max(lrs)  # decaying towards 0 as the budget runs out


def test_time_budget_starts_after_a_slow_first_step(data, tmp_path, monkeypatch):
    """A first step that takes half the budget (as a torch.compile'd one can) must not eat the lr warm-up: the
    budget and the time-based schedule count from its end."""
    class SlowStart(run_pretraining.BertForPreTraining):
        calls = 0

        def forward(self, *a, **k):
            SlowStart.calls += 1
            if SlowStart.calls == 1:
                time.sleep(1.5)
            return super().forward(*a, **k)
    monkeypatch.setattr(run_pretraining, "BertForPreTraining", SlowStart)
    out = tmp_path / "slow"
    t0 = time.time()
    assert run_pretraining.main(argv(data, out, max_steps=100000, warmup_proportion=0.2, max_time_minutes=0.05,
                                     schedule_by_time=True, save_steps=100000)) == 0
    assert time.time() - t0 > 1.5 + 3
    lrs = [r["lr"] for r in rows(out)]
    # step 2 trains at the very start of the warm-up, not at lr_factor(1.5 s / 3 s) = 0.625 of the peak
    assert lrs[1] < 0.05 * max(lrs) and max(lrs) > 0.8e-3
    assert lrs[-1] < 0.5 * max(lrs)


def test_schedule_by_time_budget_spans_resumes(data, tmp_path, capsys):
    """With --schedule_by_time the budget is the whole run's, as its lr schedule is: a run resumed with part of it
    spent trains only for the rest (it used to train a fresh budget, at lr 0 past the first), and a finished run
    started again trains nothing and keeps its DONE."""
    out = tmp_path / "timed"
    flags = dict(max_steps=100000, warmup_proportion=0.1, max_time_minutes=0.05, schedule_by_time=True,
                 save_steps=100000)
    assert run_pretraining.main(argv(data, out, **flags)) == 0
    done = json.loads((out / "DONE").read_text())
    k = done["step"]
    assert k >= 3 and train_state(out, k)["budget_elapsed_s"] == pytest.approx(3.0, abs=1.0)
    capsys.readouterr()
    (out / "DONE").unlink()  # as a kill between the last save and the marker leaves it
    assert run_pretraining.main(argv(data, out, resume="auto", **flags)) == 0
    assert "budget was spent by step" in capsys.readouterr().out
    assert [r["step"] for r in rows(out)][-1] == k and json.loads((out / "DONE").read_text())["step"] == k
    # the same checkpoint with 0.5 s of its 3 s left: a short continuation, which ends the schedule at lr ~0
    state = train_state(out, k)
    state["budget_elapsed_s"] = 2.5
    torch.save(state, out / "checkpoints" / f"step-{k}" / "train_state.pt")
    assert run_pretraining.main(argv(data, out, resume="auto", **flags)) == 0
    more = [r for r in rows(out) if r["step"] > k]
    end = json.loads((out / "DONE").read_text())["step"]
    # it stopped once the whole budget was spent (3 s, plus the step it ended in), not after another 3 s
    assert len(more) >= 1 and train_state(out, end)["budget_elapsed_s"] < 4.5
    assert more[-1]["lr"] < 0.25 * max(r["lr"] for r in rows(out))
    # resumed without --schedule_by_time, the lr would follow the step schedule again: said, not silent
    capsys.readouterr()
    assert run_pretraining.main(argv(data, out, resume="auto", **dict(flags, schedule_by_time=None,
                                                                      max_steps=end + 1))) == 0
    assert "with changed max_steps, schedule_by_time:" in capsys.readouterr().err


def test_schedule_by_time_needs_a_budget(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_pretraining.main(argv(data, tmp_path / "x", schedule_by_time=True))
    assert e.value.code == 2
    assert "--schedule_by_time needs --max_time_minutes" in capsys.readouterr().err


def test_morph_config_must_match_the_shards(data, tmp_path, capsys):
    """A config recording a morpheme-split vocab refuses shards prepared without the analyser."""
    cfg = json.loads((data / "tiny.json").read_text()) | {"morph_analyzer": "kiwi"}
    (tmp_path / "kiwi.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit) as e:
        run_pretraining.main(argv(data, tmp_path / "out", config=None) + ["--config_file", str(tmp_path / "kiwi.json")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "morph_analyzer=None" in err and "'kiwi'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_tensorboard_gets_the_log_rows_and_a_broken_one_is_skipped(data, tmp_path, monkeypatch, capsys):
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
    run_pretraining.main(argv(data, tmp_path / "tb", max_steps=3))
    assert {t for t, _, s in scalars[:-1] if s == 3} >= {"train/loss", "train/mlm_loss", "train/lr", "train/seq_per_s",
                                                          "train/data_wait"}
    assert scalars[-1] == "closed" and [r["loss"] for r in rows(tmp_path / "tb")] == [
        v for t, v, _ in scalars[:-1] if t == "train/loss"]

    def broken(logdir):
        raise TypeError("Descriptors cannot be created directly")

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=broken))
    capsys.readouterr()
    run_pretraining.main(argv(data, tmp_path / "broken", max_steps=2))
    err = capsys.readouterr().err
    assert "warning: TensorBoard logging is off (TypeError: Descriptors" in err and len(rows(tmp_path / "broken")) == 2

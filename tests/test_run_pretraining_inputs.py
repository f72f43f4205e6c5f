"""run_pretraining.py's refusals and stops on the CPU (tiny model, the shards of pretraining_helpers.py): bad input
is one line on stderr and exit code 2 with the output dirs untouched; a non-finite loss stops without saving; a
time budget stops the run, stretches the lr schedule over it (--schedule_by_time) and spans resumes.
"""
import json
import os
import shutil
import sys
import time

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import run_pretraining  # noqa: E402
from models.modeling import BertForPreTraining  # noqa: E402
from helpers import one_thread  # noqa: E402,F401 (one_thread: autouse)
from pretraining_helpers import argv, latest, rows, snapshot, train_state, weights  # noqa: E402


def test_an_epoch_smaller_than_one_batch_is_one_line_exit_2(pretrain_data, tmp_path, capsys):
    for flags, tail in (({}, "(--train_batch_size)"), ({"source_weights": "*=1"}, "with --source_weights)")):
        with pytest.raises(SystemExit) as e:
            run_pretraining.main(argv(pretrain_data, tmp_path / str(len(flags)), shards="small_shards",
                                      train_batch_size=4096, **flags))
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and "fewer than one batch of 4096" in err[0], err
        assert err[0].endswith(tail), err


def test_nonfinite_loss_stops_without_saving(pretrain_data, tmp_path, monkeypatch, capsys):
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
        run_pretraining.main(argv(pretrain_data, out, save_steps=2, log_steps=2))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert e.value.code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert "non-finite loss between steps 3 and 4" in errors[0] and "step-2" in errors[0]
    assert latest(out) == "step-2" and sorted(os.listdir(out / "checkpoints")) == ["latest", "step-2"]


def test_a_step_without_masked_tokens_trains_on(pretrain_data, tmp_path, monkeypatch):
    """Whole-word masking leaves a short example whose words all exceed its budget without a masked token (~2.5%
    of the examples at 64 tokens, so most steps of --train_batch_size 1 hit one): such a step trains the SOP head
    alone and its log row has no MLM numbers, where 0/0 made the loss NaN and stopped the run."""
    import pretraining_data

    def nothing_masked(input_ids, *a, **k):
        return np.array(input_ids, dtype=np.int64), np.full(len(input_ids), -100, np.int64), []

    monkeypatch.setattr(pretraining_data, "mask_tokens", nothing_masked)
    out = tmp_path / "unmasked"
    assert run_pretraining.main(argv(pretrain_data, out, train_batch_size=2, max_steps=2, save_steps=2)) == 0
    logged = rows(out)
    assert [r["step"] for r in logged] == [1, 2]
    for r in logged:
        assert r["mlm_loss"] is None and r["mlm_acc"] is None and r["loss"] == r["sop_loss"] > 0
    assert all(torch.isfinite(v).all() for v in weights(out, 2).values())


@pytest.mark.parametrize("case", ["missing_dir", "not_prepared", "config_vocab", "vocab_file", "batch",
                                  "resume_config", "existing_run", "seed", "short_seq_prob", "damaged_shard",
                                  "out_of_vocab_shard", "max_time_negative", "max_time_nan", "output_is_a_file",
                                  "output_under_a_file", "shards_vocab_replaced", "cut_offsets", "offsets_out_of_order", "meta_not_a_dict",
                                  "resume_into_another_run", "rewind_with_a_batch_too_big"])
def test_bad_input_is_one_line_exit_2(case, pretrain_data, pretrain_run, tmp_path, capsys):
    out, flags, expect = tmp_path / "out", {}, None
    other = tmp_path / "other_run"  # another run's finished output, for the cases that must leave it alone
    shutil.copytree(pretrain_run, other)
    if case == "missing_dir":
        flags, expect = {"input_dir": tmp_path / "nope"}, "--input_dir"
    elif case == "not_prepared":
        (tmp_path / "empty").mkdir()
        flags, expect = {"input_dir": tmp_path / "empty"}, "meta.json"
    elif case == "config_vocab":
        cfg = json.loads((pretrain_data / "tiny.json").read_text()) | {"vocab_size": 999}
        (tmp_path / "c.json").write_text(json.dumps(cfg))
        flags, expect = {"config_file": tmp_path / "c.json"}, "meta.json"
    elif case == "vocab_file":
        (tmp_path / "v.txt").write_text((pretrain_data / "vocab.txt").read_text().replace("[UNK]", "[UNKNOWN]"))
        flags, expect = {"vocab_file": tmp_path / "v.txt"}, "--vocab_file"
    elif case == "batch":
        flags, expect = {"train_batch_size": 10, "gradient_accumulation_steps": 3}, "--train_batch_size"
    elif case == "resume_config":
        cfg = json.loads((pretrain_data / "tiny.json").read_text()) | {"hidden_size": 32}
        (tmp_path / "c.json").write_text(json.dumps(cfg))
        out, flags, expect = pretrain_run, {"config_file": tmp_path / "c.json", "resume": "auto"}, "hidden_size"
    elif case == "existing_run":
        out, expect = pretrain_run, "--resume"
    elif case in ("seed", "short_seq_prob"):
        flags, expect = {case: -1}, f"--{case}"
    elif case == "damaged_shard":  # found before training, not in a data-loader worker hours later
        shutil.copytree(pretrain_data / "shards", tmp_path / "shards")
        ids = next((tmp_path / "shards").glob("*.ids.npy"))
        ids.write_bytes(ids.read_bytes()[:-64])
        flags, expect = {"input_dir": tmp_path / "shards"}, ids.name
    elif case == "out_of_vocab_shard":  # one id past the vocab: on a GPU an embedding assert that names nothing
        shutil.copytree(pretrain_data / "shards", tmp_path / "shards")
        ids = next((tmp_path / "shards").glob("*.ids.npy"))
        arr = np.load(ids)
        arr[len(arr) // 2] = len((pretrain_data / "vocab.txt").read_text(encoding="utf-8").splitlines())
        np.save(ids, arr)
        flags, expect = {"input_dir": tmp_path / "shards"}, f"{ids.name}: token id {arr[len(arr) // 2]} is outside"
    elif case in ("max_time_negative", "max_time_nan"):  # -1 trained a step and wrote DONE; NaN had no budget at all
        flags, expect = {"max_time_minutes": -1 if case == "max_time_negative" else "nan"}, "--max_time_minutes"
    elif case == "output_is_a_file":
        out.write_text("")
        expect = "--output_dir"
    elif case == "output_under_a_file":
        out.write_text("")
        flags, expect = {"output_dir": out / "run"}, "is a file"
    elif case in ("shards_vocab_replaced", "cut_offsets", "offsets_out_of_order", "meta_not_a_dict"):
        shards = tmp_path / "shards"
        shutil.copytree(pretrain_data / "shards", shards)
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
        out, flags, expect = other, {"resume": pretrain_run / "checkpoints" / "step-40"}, "already holds checkpoints"
    elif case == "rewind_with_a_batch_too_big":  # refused before the output dir's DONE and log are touched
        out, flags, expect = other, {"resume": other / "checkpoints" / "step-40", "train_batch_size": 100000,
                                     "max_steps": 60}, "fewer than one batch of 100000"
    before, before_other = snapshot(pretrain_run), snapshot(other)
    with pytest.raises(SystemExit) as e:
        run_pretraining.main(argv(pretrain_data, out, **flags))
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("warning: ")]  # a rewind with another batch size is warned about first
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and expect in err[0], err
    if case == "resume_config":
        assert str(pretrain_run / "checkpoints" / "step-60") in err[0]
    assert snapshot(pretrain_run) == before and snapshot(other) == before_other
    assert out in (pretrain_run, other) or not out.exists() or out.is_file()


def test_schedule_by_time_follows_the_budget(pretrain_data, tmp_path):
    """With --schedule_by_time the lr tracks elapsed/budget: a 3 s budget finishes the warm-up and decays the lr
    within far fewer steps than --max_steps, where the step-based schedule would still be warming up."""
    out = tmp_path / "timed"
    rc = run_pretraining.main(argv(pretrain_data, out, max_steps=100000, warmup_proportion=0.1, max_time_minutes=0.05,
                                   schedule_by_time=True, save_steps=100000))
    assert rc == 0
    lrs = [r["lr"] for r in rows(out)]
    step_based_peak = 1e-3 * len(lrs) / (0.1 * 100000)  # the step schedule's lr after this many steps
    assert max(lrs) > 10 * step_based_peak
    assert lrs[-1] < 0.5 * max(lrs)  # decaying towards 0 as the budget runs out
    # stopped by the budget, long before --max_steps: DONE names the step it stopped at and its checkpoint
    done = json.loads((out / "DONE").read_text())
    assert done["step"] == rows(out)[-1]["step"] < 100000 and done["checkpoint"].endswith(f"step-{done['step']}")


def test_time_budget_starts_after_a_slow_first_step(pretrain_data, tmp_path, monkeypatch):
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
    assert run_pretraining.main(argv(pretrain_data, out, max_steps=100000, warmup_proportion=0.2, max_time_minutes=0.05,
                                     schedule_by_time=True, save_steps=100000)) == 0
    assert time.time() - t0 > 1.5 + 3
    lrs = [r["lr"] for r in rows(out)]
    # step 2 trains at the very start of the warm-up, not at lr_factor(1.5 s / 3 s) = 0.625 of the peak
    assert lrs[1] < 0.05 * max(lrs) and max(lrs) > 0.8e-3
    assert lrs[-1] < 0.5 * max(lrs)


def test_schedule_by_time_budget_spans_resumes(pretrain_data, tmp_path, capsys):
    """With --schedule_by_time the budget is the whole run's, as its lr schedule is: a run resumed with part of it
    spent trains only for the rest (it used to train a fresh budget, at lr 0 past the first), and a finished run
    started again trains nothing and keeps its DONE."""
    out = tmp_path / "timed"
    flags = dict(max_steps=100000, warmup_proportion=0.1, max_time_minutes=0.05, schedule_by_time=True,
                 save_steps=100000)
    assert run_pretraining.main(argv(pretrain_data, out, **flags)) == 0
    done = json.loads((out / "DONE").read_text())
    k = done["step"]
    assert k >= 3 and train_state(out, k)["budget_elapsed_s"] == pytest.approx(3.0, abs=1.0)
    capsys.readouterr()
    (out / "DONE").unlink()  # as a kill between the last save and the marker leaves it
    assert run_pretraining.main(argv(pretrain_data, out, resume="auto", **flags)) == 0
    assert "budget was spent by step" in capsys.readouterr().out
    assert [r["step"] for r in rows(out)][-1] == k and json.loads((out / "DONE").read_text())["step"] == k
    # the same checkpoint with 0.5 s of its 3 s left: a short continuation, which ends the schedule at lr ~0
    state = train_state(out, k)
    state["budget_elapsed_s"] = 2.5
    torch.save(state, out / "checkpoints" / f"step-{k}" / "train_state.pt")
    assert run_pretraining.main(argv(pretrain_data, out, resume="auto", **flags)) == 0
    more = [r for r in rows(out) if r["step"] > k]
    end = json.loads((out / "DONE").read_text())["step"]
    # it stopped once the whole budget was spent (3 s, plus the step it ended in), not after another 3 s
    assert len(more) >= 1 and train_state(out, end)["budget_elapsed_s"] < 4.5
    assert more[-1]["lr"] < 0.25 * max(r["lr"] for r in rows(out))
    # resumed without --schedule_by_time, the lr would follow the step schedule again: said, not silent
    capsys.readouterr()
    assert run_pretraining.main(argv(pretrain_data, out, resume="auto", **dict(flags, schedule_by_time=None,
                                                                      max_steps=end + 1))) == 0
    assert "with changed max_steps, schedule_by_time:" in capsys.readouterr().err


def test_schedule_by_time_needs_a_budget(pretrain_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_pretraining.main(argv(pretrain_data, tmp_path / "x", schedule_by_time=True))
    assert e.value.code == 2
    assert "--schedule_by_time needs --max_time_minutes" in capsys.readouterr().err


def test_morph_config_must_match_the_shards(pretrain_data, tmp_path, capsys):
    """A config recording a morpheme-split vocab refuses shards prepared without the analyser."""
    cfg = json.loads((pretrain_data / "tiny.json").read_text()) | {"morph_analyzer": "kiwi"}
    (tmp_path / "kiwi.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit) as e:
        run_pretraining.main(argv(pretrain_data, tmp_path / "out", config=None) +
                             ["--config_file", str(tmp_path / "kiwi.json")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "morph_analyzer=None" in err and "'kiwi'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "checkpoints").exists()

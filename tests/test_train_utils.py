"""train_utils: the loader workers' default share of the CPUs, the RNG state a checkpoint keeps, every script's
--local_rank spellings and each rank's own dropout masks."""
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train_utils  # noqa: E402


def test_default_num_workers_shares_the_node_cpus_between_local_ranks(monkeypatch):
    from train_utils import default_num_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_num_workers() == 8  # 15 free CPUs, capped
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_num_workers() == 3  # 16 / 4 ranks, one CPU left for each rank
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert default_num_workers() == 1  # never zero: masking must not run in the training process


def test_rng_state_keeps_this_gpus_generator_only(monkeypatch):
    """Each rank saves its own GPU's generator (not every visible GPU's), so a checkpoint resumes where fewer GPUs
    are visible; a list saved by earlier versions still restores this GPU's entry. (No GPU here: torch.cuda's
    generator functions are stood in for.)"""
    gpus = {0: torch.tensor([5], dtype=torch.uint8), 1: torch.tensor([7], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": gpus[1].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device="cuda": gpus.__setitem__(1, s.clone()))
    state = train_utils.rng_state_portable()
    assert torch.equal(state["cuda"], torch.tensor([7], dtype=torch.uint8))
    gpus[1] = torch.tensor([9], dtype=torch.uint8)
    train_utils.set_rng_state_portable(state)
    assert int(gpus[1][0]) == 7
    train_utils.set_rng_state_portable(state | {"cuda": [torch.tensor([1], dtype=torch.uint8),
                                                          torch.tensor([3], dtype=torch.uint8)]})
    assert int(gpus[1][0]) == 3  # an earlier version's list: this GPU's entry
    train_utils.set_rng_state_portable(state | {"cuda": [torch.tensor([1], dtype=torch.uint8)]})
    assert int(gpus[1][0]) == 3  # saved where fewer GPUs were visible: left as it is, no IndexError


def test_every_script_takes_the_older_launchers_local_rank_spelling():
    """python -m torch.distributed.launch (torch >= 2.0) passes --local-rank=N, with a hyphen; torchrun passes
    LOCAL_RANK in the environment. Every script takes either spelling (the hyphen was refused)."""
    import eval_classifier
    import eval_qa
    import run_classifier
    import run_pretraining
    import run_qa
    for module, argv in ((run_qa, ["--train_file", "x"]), (eval_qa, []), (run_classifier, ["--task_name", "korsts"]),
                         (eval_classifier, ["--task_name", "korsts"]), (run_pretraining, ["--input_dir", "x"])):
        parser = module.build_parser()
        assert parser.parse_args(argv + ["--local-rank=1"]).local_rank == 1, module.__name__
        assert parser.parse_args(argv + ["--local_rank", "2"]).local_rank == 2, module.__name__


def test_each_rank_draws_its_own_dropout_masks():
    """Under DDP every rank seeded alike and drew the same dropout masks; seed_dropout_per_rank gives each (seed, rank)
    its own stream (seed s's rank 1 is not seed s+1's rank 0), and leaves one process's stream as it was."""
    from types import SimpleNamespace

    def draw(seed, rank, distributed=True):
        torch.manual_seed(seed)
        train_utils.seed_dropout_per_rank(seed, SimpleNamespace(distributed=distributed, rank=rank))
        return torch.rand(8)
    draws = [draw(s, r) for s in (1, 2) for r in (0, 1)]
    assert all(not torch.equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1:])
    alone = draw(1, 0, distributed=False)
    torch.manual_seed(1)
    assert torch.equal(alone, torch.rand(8))


def test_parse_seeds():
    import pytest
    assert train_utils.parse_seeds("1-10") == list(range(1, 11))
    assert train_utils.parse_seeds("1,3,5") == [1, 3, 5]
    assert train_utils.parse_seeds("1-3,7") == [1, 2, 3, 7]
    for bad in ("3-1", "a", "1,1", "1-"):
        with pytest.raises(ValueError, match="--seeds"):
            train_utils.parse_seeds(bad)
    assert train_utils.parse_seeds("4-4") == [4]  # a range of one seed


def test_parse_bool_takes_absls_spellings():
    import argparse

    import pytest
    for text in ("true", "True", "T", "1", "yes", "Y", " true "):
        assert train_utils.parse_bool(text) is True, text
    for text in ("false", "False", "f", "0", "no", "N"):
        assert train_utils.parse_bool(text) is False, text
    for bad in ("maybe", "", "2"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected true or false"):
            train_utils.parse_bool(bad)


def shared_args(*argv):
    import argparse
    parser = argparse.ArgumentParser()
    train_utils.add_optim_args(parser)
    train_utils.add_compile_arg(train_utils.add_runtime_args(parser))
    return parser.parse_args(list(argv))


def test_check_training_args_bounds():
    """The shared training flags' bounds at their edges: no clipping (0 or inf) and one micro-batch are fine; no
    micro-batch at all is refused."""
    import pytest
    train_utils.check_training_args(shared_args())
    for argv in (["--max_grad_norm", "0"], ["--max_grad_norm", "inf"], ["--warmup_proportion", "0"],
                 ["--learning_rate", "0"], ["--gradient_accumulation_steps", "1"], ["--seed", "0"]):
        train_utils.check_training_args(shared_args(*argv))
    for argv, message in ((["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps 0: must be >= 1"),
                          (["--max_grad_norm", "nan"], "--max_grad_norm nan: must be >= 0"),
                          (["--adam_epsilon", "inf"], "--adam_epsilon inf: must be a positive number")):
        with pytest.raises(ValueError, match=message):
            train_utils.check_training_args(shared_args(*argv))


def test_mean_over_ranks_of_nothing_is_zero():
    from types import SimpleNamespace
    rt = SimpleNamespace(device=torch.device("cpu"), distributed=False)
    assert train_utils.mean_over_ranks(6.0, 4, rt) == 1.5
    assert train_utils.mean_over_ranks(0.0, 0, rt) == 0.0  # no rows (an empty shard): not 0/0


def test_finite_loss_stops_on_inf_and_nan(capsys):
    import pytest
    assert train_utils.finite_loss(0.25, 3) == 0.25
    for bad in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(SystemExit) as e:
            train_utils.finite_loss(bad, 7)
        assert e.value.code == 2 and f"training loss is {bad} at step 7" in capsys.readouterr().err


def test_precision_runtime_autocast_and_scaler():
    """bf16 autocasts to bfloat16 with no loss scaling (it has fp32's exponent range); fp16 autocasts to float16
    and scales; no AMP does neither."""
    cpu = torch.device("cpu")
    with train_utils.Runtime(cpu, amp="bf16").autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with train_utils.Runtime(cpu, amp="fp16").autocast():
        assert torch.get_autocast_dtype("cpu") == torch.float16
    with train_utils.Runtime(cpu, amp="no").autocast():
        assert not torch.is_autocast_enabled("cpu")
    assert not train_utils.make_grad_scaler(train_utils.Runtime(cpu, amp="bf16")).is_enabled()
    assert not train_utils.make_grad_scaler(train_utils.Runtime(cpu, amp="no")).is_enabled()


def test_rng_state_portable_round_trips_mid_stream():
    """Saved mid-stream (numpy's position inside its key block, a cached Gaussian) and restored after more draws,
    every generator gives again exactly the draws that followed the save; torch.load(weights_only=True) takes it."""
    import io
    import random

    import numpy as np
    train_utils.set_seed(2**31 + 5)  # seeds up to 2**32 - 1 reach numpy as they are
    assert np.random.get_state()[1][0] == np.random.RandomState(2**31 + 5).get_state()[1][0]
    np.random.rand(3)
    np.random.standard_normal()  # leaves a Gaussian cached
    buf = io.BytesIO()
    torch.save(train_utils.rng_state_portable(), buf)
    after = (random.random(), np.random.rand(4).tolist(), np.random.standard_normal(), torch.rand(3))
    np.random.rand(50)
    random.random()
    torch.rand(5)
    buf.seek(0)
    train_utils.set_rng_state_portable(torch.load(buf, weights_only=True))
    again = (random.random(), np.random.rand(4).tolist(), np.random.standard_normal(), torch.rand(3))
    assert again[:3] == after[:3] and torch.equal(again[3], after[3])

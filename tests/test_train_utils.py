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

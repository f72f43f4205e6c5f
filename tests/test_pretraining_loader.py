"""pretraining_loader on shards of real Korean text: collation, and run_batches (one loader across epochs, from any
position in an epoch, small or failing epochs reported when the run reaches them, torch's global RNG untouched)."""
import pytest
import torch
from torch.utils.data import DataLoader

from helpers import patch_epoch_1
from pretraining_data import PretrainingDataset
from pretraining_loader import SmallEpochError, collate_pretraining, run_batches

L = 128


@pytest.fixture(scope="module")
def shards(korean_shards):  # conftest: shared with test_pretraining_data.py
    return korean_shards


def test_collate_and_worker_processes(shards):
    ds = PretrainingDataset(shards, max_seq_length=L, seed=7)
    batch = collate_pretraining([ds[i] for i in range(4)])
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == {
        "input_ids": ((4, L), torch.int64), "token_type_ids": ((4, L), torch.int64),
        "attention_mask": ((4, L), torch.int64), "mlm_labels": ((4, L), torch.int64),
        "mlm_positions": ((4, 20), torch.int64), "sop_label": ((4,), torch.int64)}
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=1, collate_fn=collate_pretraining)
    from_worker = next(iter(loader))
    assert all(torch.equal(batch[k], from_worker[k]) for k in batch)


def test_run_batches_reads_on_across_epochs_with_one_loader(shards, monkeypatch):
    """From a position inside an epoch: whole steps of `accum` micro-batches, the epoch's examples in order from
    that position (rank 1 of 2: every second one), then the next epoch's from its start, with one loader (its
    workers started once); a position with less than one step left goes on at the next epoch."""
    import pretraining_loader
    made, real = [], pretraining_loader.DataLoader
    monkeypatch.setattr(pretraining_loader, "DataLoader", lambda *a, **k: made.append(1) or real(*a, **k))
    rank1 = PretrainingDataset(shards, max_seq_length=L, seed=7, rank=1, world_size=2)
    kw = dict(batch=8, micro_batch=2, accum=2, world_size=2, num_workers=1, seed=7, pin_memory=False)
    rank1.set_epoch(1)
    total = rank1.num_global_examples
    steps = run_batches(rank1, 1, total - 24, **kw)  # three steps of 8 left in epoch 1, 4 rows of each here
    got = [next(steps) for _ in range(5)]
    steps.close()
    assert [e for e, _ in got] == [1, 1, 1, 2, 2] and len(made) == 1
    assert all(len(mbs) == 2 and mb["input_ids"].shape == (2, L) for _, mbs in got for mb in mbs)
    ref = PretrainingDataset(shards, max_seq_length=L, seed=7, rank=1, world_size=2)
    ref.set_epoch(1)
    want1 = collate_pretraining([ref[i] for i in range((total - 24) // 2, total // 2)])
    ref.set_epoch(2)
    want2 = collate_pretraining([ref[i] for i in range(8)])
    rows1 = [mb for _, mbs in got[:3] for mb in mbs]
    rows2 = [mb for _, mbs in got[3:] for mb in mbs]
    for rows, want in ((rows1, want1), (rows2, want2)):
        assert all(torch.equal(torch.cat([mb[k] for mb in rows]), want[k]) for k in want)
    late = run_batches(rank1, 1, total - 7, num_workers=0, **{k: v for k, v in kw.items() if k != "num_workers"})
    epoch, mbs = next(late)
    assert epoch == 2 and all(torch.equal(torch.cat([mb[k] for mb in mbs]), want2[k][:4]) for k in want2)


def test_run_batches_reports_a_small_epoch_after_the_steps_before_it(shards, monkeypatch):
    patch_epoch_1(monkeypatch, per_rank=2)
    ds = PretrainingDataset(shards, max_seq_length=L, seed=7)
    n = ds.num_global_examples
    steps = run_batches(ds, 0, n - n % 4 - 8, batch=4, micro_batch=4, accum=1, world_size=1, num_workers=0, seed=7,
                        pin_memory=False)
    assert [next(steps)[0], next(steps)[0]] == [0, 0]  # epoch 0's last two steps first
    with pytest.raises(SmallEpochError, match="^epoch 1 has 2 examples, fewer than one batch of 4$"):
        next(steps)


def test_run_batches_takes_an_epoch_of_exactly_one_step_and_leaves_the_global_rng(shards, monkeypatch):
    """An epoch of exactly one batch is one step, not a small epoch; and setting up the loader and drawing its
    batches takes nothing from torch's global RNG (it has its own generator), so dropout draws stay in step."""
    patch_epoch_1(monkeypatch, per_rank=4)
    ds = PretrainingDataset(shards, max_seq_length=L, seed=7)
    n = ds.num_global_examples
    torch.manual_seed(0)
    before = torch.get_rng_state()
    steps = run_batches(ds, 0, n - n % 4 - 4, batch=4, micro_batch=4, accum=1, world_size=1, num_workers=0, seed=7,
                        pin_memory=False)
    assert [next(steps)[0] for _ in range(3)] == [0, 1, 2]
    steps.close()
    assert torch.equal(torch.get_rng_state(), before)


def test_run_batches_raises_an_epochs_setup_error_after_the_steps_before_it(shards, monkeypatch):
    """An epoch that cannot be set up (ds.set_epoch raises ValueError) is reported when the run reaches it: a
    worker's look-ahead does not raise it while steps of the epoch before are still to come."""
    patch_epoch_1(monkeypatch, error="epoch 1: shard missing")
    ds = PretrainingDataset(shards, max_seq_length=L, seed=7)
    n = ds.num_global_examples
    steps = run_batches(ds, 0, n - n % 2 - 6, batch=2, micro_batch=2, accum=1, world_size=1, num_workers=1, seed=7,
                        pin_memory=False)
    assert [next(steps)[0] for _ in range(3)] == [0, 0, 0]
    with pytest.raises(ValueError, match="^epoch 1: shard missing$"):
        next(steps)

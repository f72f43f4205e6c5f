"""batching: the global-batch sampler (every row once per epoch, ranks in step, length-grouped: less padding than
random), accumulation windows, batch widths and the copy to the device."""
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import batching  # noqa: E402
from batching import LENGTH_GROUP, GlobalBatchSampler  # noqa: E402


def padded_tokens(batches, lengths):
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_each_row_once_per_epoch_and_less_padding_than_random():
    lengths = np.random.default_rng(0).integers(20, 385, size=1000)
    s = GlobalBatchSampler(lengths, batch_size=16, seed=3, group=10)
    batches = list(s)
    assert len(batches) == len(s) == 63
    flat = sorted(i for b in batches for i in b)
    assert flat[:1000] == list(range(1000)) or sorted(set(flat)) == list(range(1000))
    assert len(flat) == 63 * 16 and len(set(flat)) == 1000  # 8 rows repeated to fill the last batch
    order = np.random.default_rng(0).permutation(1000)
    random_batches = [order[i:i + 16] for i in range(0, 1000, 16)]
    assert padded_tokens(batches, lengths) < 0.8 * padded_tokens(random_batches, lengths)
    assert list(s) == batches  # (seed, epoch) fixes the order
    s.set_epoch(1)
    assert list(s) != batches
    sizes = [max(lengths[i] for i in b) for b in batches]
    assert sizes != sorted(sizes, reverse=True)  # batches are not served longest-first


@pytest.mark.parametrize("group", [0, LENGTH_GROUP])
@pytest.mark.parametrize("n", [5, 97, 256])
def test_ranks_split_each_global_batch(n, group):
    lengths = np.arange(n) % 50 + 1
    per_rank = [list(GlobalBatchSampler(lengths, 4, seed=1, rank=r, world_size=3, group=group)) for r in range(3)]
    whole = list(GlobalBatchSampler(lengths, 12, seed=1, group=group))
    assert all(len(b) == len(whole) for b in per_rank)  # every rank runs the same number of steps
    for k, global_batch in enumerate(whole):
        assert sorted(i for r in range(3) for i in per_rank[r][k]) == sorted(global_batch)
        assert all(len(per_rank[r][k]) == 4 for r in range(3))
    assert set(i for b in whole for i in b) == set(range(n))


@pytest.mark.parametrize("group", [0, LENGTH_GROUP])
@pytest.mark.parametrize("n", [7, 100])
def test_an_optimizer_step_sees_the_same_rows_however_its_batch_is_split(n, group):
    """Batches of 12 rows per optimizer step: one process, three ranks, or accumulation over three micro-batches
    (alone or with two ranks: 2 x 3 x 2) give each step the same rows, the last step's repeated rows included
    (DistributedSampler padded only for several ranks, so their last step differed from one process's)."""
    lengths = np.arange(n) * 7 % 40 + 1
    whole = list(GlobalBatchSampler(lengths, 12, seed=5, group=group))
    for world, accum in ((3, 1), (1, 3), (2, 3)):
        micro = 12 // (world * accum)
        per_rank = [list(GlobalBatchSampler(lengths, micro, seed=5, rank=r, world_size=world, accum=accum,
                                            group=group)) for r in range(world)]
        assert all(len(b) == len(whole) * accum for b in per_rank)
        for k, step_rows in enumerate(whole):
            got = [i for r in range(world) for b in per_rank[r][k * accum:(k + 1) * accum] for i in b]
            assert sorted(got) == sorted(step_rows) and all(len(b) == micro for b in per_rank[0])


@pytest.mark.parametrize("group", [0, LENGTH_GROUP])
def test_orders_of_neighbouring_seeds_and_epochs_differ(group):
    """Each (seed, epoch) its own order: DistributedSampler shuffles with seed + epoch, so seed s's epoch e+1 was
    seed s+1's epoch e, and a 10-seed grid of 10 epochs saw 19 distinct orders instead of 100."""
    lengths = np.arange(200) % 30 + 1
    orders = set()
    for seed in range(1, 11):
        s = GlobalBatchSampler(lengths, 16, seed=seed, group=group)
        for epoch in range(1, 11):
            s.set_epoch(epoch)
            orders.add(tuple(i for b in s for i in b))
    assert len(orders) == 100


def test_random_batches_are_not_grouped_by_length():
    lengths = np.random.default_rng(0).integers(20, 385, size=1000)
    spread = [np.ptp(lengths[b]) for b in GlobalBatchSampler(lengths, 16, seed=3)]
    grouped = [np.ptp(lengths[b]) for b in GlobalBatchSampler(lengths, 16, seed=3, group=LENGTH_GROUP)]
    assert np.mean(spread) > 5 * np.mean(grouped)


def test_batch_to_device_drops_only_a_mask_that_masks_nothing():
    import torch

    from models.modeling import BertConfig, BertForQuestionAnswering
    from batching import batch_to_device

    full = {"input_ids": torch.randint(5, 1000, (2, 16), dtype=torch.int32), "attention_mask": torch.ones(2, 16)}
    padded = {k: v.clone() for k, v in full.items()}
    padded["attention_mask"][1, 10:] = 0
    out = batch_to_device(full, torch.device("cpu"), torch.long)
    assert set(out) == {"input_ids"} and out["input_ids"].dtype == torch.long
    assert "attention_mask" in full  # the caller's batch is left as it was
    out = batch_to_device(padded, torch.device("cpu"))
    assert torch.equal(out["attention_mask"], padded["attention_mask"])
    assert set(batch_to_device({"input_ids": full["input_ids"]}, torch.device("cpu"))) == {"input_ids"}

    # without the mask the model computes the same thing (it is what lets SDPA pick its flash kernel on a GPU)
    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig.from_json_file(os.path.join(ROOT, "models/configs/tiny.json"))).eval()
    ids = full["input_ids"].long()
    with torch.no_grad():
        a = model(ids, attention_mask=torch.ones_like(ids))["start_logits"]
        b = model(ids)["start_logits"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_accumulation_windows_draw_whole_windows():
    drawn = []

    def batches():
        for b in range(7):
            drawn.append(b)
            yield b

    windows = batching.accumulation_windows(batches(), 3)
    assert next(windows) == [0, 1, 2] and drawn == [0, 1, 2]  # the window is complete before it trains
    assert list(windows) == [[3, 4, 5], [6]]  # the epoch's last window is shorter
    assert list(batching.accumulation_windows([], 2)) == []


def test_round_width_rounds_up_within_max_seq_length():
    assert [batching.round_width(n, 8, 128) for n in (1, 7, 8, 9, 70, 121, 128)] == [8, 8, 8, 16, 72, 128, 128]
    assert batching.round_width(70, 1, 128) == 70  # 1: the longest row, as before
    assert batching.round_width(126, 8, 126) == 126  # never past max_seq_length ...
    assert batching.round_width(130, 8, 128) == 130  # ... and never below the longest row
    assert batching.round_width(130, 8, None) == 136  # None: no cap


def test_pad_multiple_defaults_to_8_on_a_gpu_only():
    assert batching.pad_multiple(None, torch.device("cpu")) == 1
    assert batching.pad_multiple(None, torch.device("cuda")) == 8
    assert batching.pad_multiple(64, torch.device("cpu")) == 64
    for bad in (0, -8):
        with pytest.raises(ValueError, match=f"--pad_to_multiple_of {bad}: must be a positive whole number"):
            batching.pad_multiple(bad, torch.device("cpu"))


def test_sampler_rules_as_stated():
    """GlobalBatchSampler's definitions, each pinned (the tests above compare sets of rows, which these rules can
    break without changing): the last global batch repeats distinct rows from the epoch's start; grouped batches
    run longest first within themselves but come in random order, also within one group; rank r takes rows r::W
    of each global batch."""
    import collections
    counts = collections.Counter(i for b in GlobalBatchSampler(np.ones(9), batch_size=4, seed=0) for i in b)
    assert max(counts.values()) == 2 and sum(v == 2 for v in counts.values()) == 3
    lengths = np.random.default_rng(0).integers(1, 500, 400)  # 50 batches of 8: one group
    grouped = list(GlobalBatchSampler(lengths, 8, seed=1, group=50))
    assert all(list(lengths[b]) == sorted(lengths[b], reverse=True) for b in grouped)
    longest = [lengths[b].max() for b in grouped]
    assert longest != sorted(longest, reverse=True)
    whole = list(GlobalBatchSampler(lengths[:100], 8, seed=1, group=50))
    for r in range(2):
        shard = list(GlobalBatchSampler(lengths[:100], 4, seed=1, rank=r, world_size=2, group=50))
        assert [list(b) for b in shard] == [list(b[r::2]) for b in whole]

"""How the fine-tuning and pretraining scripts form and feed their batches: global-batch sampling (random or
length-grouped), batch widths (rounded to a multiple on a GPU), gradient-accumulation windows and the copy to the
device.

Everything takes explicit arguments; nothing here reads global flags.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch



def add_group_by_length_arg(group):
    group.add_argument("--group_by_length", action="store_true",
                       help="batch examples of similar length (each batch is cut to its longest): much less "
                            "padding, faster epochs; the batches still come in random order")


def add_pad_multiple_arg(group):
    group.add_argument("--pad_to_multiple_of", type=int, default=None, metavar="N",
                       help="round each batch's width (its longest row) up to a multiple of N, at most "
                            "max_seq_length; default 8 on a GPU, 1 on the CPU. On a GPU every new batch shape "
                            "costs a new attention plan, so fewer widths are cheaper than less padding")


def pad_multiple(n: int | None, device: torch.device) -> int:
    """--pad_to_multiple_of n, resolved (None: not given): the CPU gains nothing from padding, a GPU gains from fewer
    shapes. ValueError naming the flag for n < 1."""
    if n is not None and n < 1:
        raise ValueError(f"--pad_to_multiple_of {n}: must be a positive whole number")
    return (8 if device.type == "cuda" else 1) if n is None else n


def round_width(longest: int, multiple: int, limit: int | None) -> int:
    """A batch's width: its longest row rounded up to a multiple, but never past limit (max_seq_length; None: no
    cap), and never below the longest row."""
    rounded = -(-longest // multiple) * multiple
    return rounded if limit is None else max(longest, min(rounded, limit))


LENGTH_GROUP = 50  # --group_by_length: rows are sorted by length within groups of this many global batches


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Each optimizer step's rows drawn as one global batch (batch_size x world_size x accum rows) and split over the
    ranks and micro-batches, so one step sees the same rows for any split of its batch: 1 process x 2 micro-batches
    = 2 ranks x 1, given the same --train_batch_size.

    Each epoch: shuffle all rows, repeat rows from the epoch's start to fill the last global batch (every rank then
    runs the same number of steps; on one process too, so the split changes nothing), and cut the order into global
    batches. With `group` > 0 (--group_by_length: LENGTH_GROUP), the order is first cut into groups of `group`
    global batches, each sorted by length (longest first), and the batches are served in random order: batches of
    similar length, cut to their longest row, carry little padding. Rank r takes rows r, r + W, ... of every global
    batch, as `accum` micro-batches of batch_size. The order depends only on (seed, epoch) and the global batch's
    size: seed s's epoch e+1 is not seed s+1's epoch e, as with DistributedSampler's seed + epoch, which gave a
    10-seed grid of 10 epochs only 19 distinct orders.
    """

    def __init__(self, lengths, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, group: int = 0,
                 accum: int = 1):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.rank, self.world_size, self.group = batch_size, seed, rank, world_size, group
        self.accum = accum
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self) -> int:  # micro-batches per rank
        return -(-len(self.lengths) // (self.batch_size * self.world_size * self.accum)) * self.accum

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        step = self.batch_size * self.world_size * self.accum
        order = rng.permutation(len(self.lengths))
        order = np.resize(order, len(self) // self.accum * step)  # cycles through the order to fill the last batch
        if self.group:
            batches = []
            for g in range(0, len(order), step * self.group):
                chunk = order[g:g + step * self.group]
                chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                batches += [chunk[b:b + step] for b in range(0, len(chunk), step)]
            batches = [batches[k] for k in rng.permutation(len(batches))]
        else:
            batches = [order[b:b + step] for b in range(0, len(order), step)]
        for batch in batches:
            mine = batch[self.rank::self.world_size]  # grouped: still longest first, each micro-batch of a length
            for a in range(self.accum):
                yield mine[a * self.batch_size:(a + 1) * self.batch_size].tolist()


def accumulation_windows(batches, accum: int):
    """Lists of `accum` consecutive micro-batches, each list drawn whole before any of it trains: a script can then
    weigh every micro-batch by its share of its window's rows. From GlobalBatchSampler every list is whole and every
    micro-batch full; from another loader the epoch's last list may be shorter, or a micro-batch short, and each
    still counts as its rows, as in one batch of them all."""
    batches = iter(batches)
    while window := list(itertools.islice(batches, accum)):
        yield window


def batch_to_device(batch: dict, device, dtype=None) -> dict:
    """A CPU batch copied to device (non-blocking: loaders pin memory), optionally cast, without an attention_mask
    that masks nothing.

    Without a mask SDPA may run its flash kernel, which takes none. The check is made here on the CPU, before the
    copy, so it costs no GPU sync (Hugging Face makes the same check on the GPU).
    """
    mask = batch.get("attention_mask")
    drop = mask is not None and bool(mask.all())
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items() if not (drop and k == "attention_mask")}
    return {k: v.to(dtype) for k, v in out.items()} if dtype is not None else out

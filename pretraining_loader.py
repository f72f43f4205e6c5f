"""The training run's batches from a PretrainingDataset: one DataLoader for the whole run, across epochs, from any
position in an epoch (exact resume), and the collate that stacks examples into tensors.

    batches = run_batches(ds, epoch, epoch_pos, batch=256, micro_batch=256, accum=1, world_size=1, num_workers=8,
                          seed=42, pin_memory=True)
    for epoch, micro_batches in batches: ...   # one training step's micro-batches for this rank

How examples are made, and which rank reads which: pretraining_data.py.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from train_utils import ignore_stop_signals, shutdown_workers


def collate_pretraining(items: list[dict]) -> dict:
    """Stack items into torch tensors [B, max_seq_length] (mlm_positions [B, max_predictions], sop_label [B]); rows
    keep their fixed padding so every batch has the same shape (no recompiles, identical shapes on every rank)."""
    return {key: torch.from_numpy(np.stack([it[key] for it in items])) for key in items[0]}


class SmallEpochError(ValueError):
    """An epoch (all ranks) holds fewer examples than one training step takes."""


def run_batches(ds, epoch: int, epoch_pos: int, *, batch: int, micro_batch: int, accum: int, world_size: int,
                num_workers: int, seed: int, pin_memory: bool):
    """Every training step's (epoch, list of `accum` micro-batches for this rank), from global example `epoch_pos`
    of `epoch` on, epoch after epoch without end; an epoch whose rest holds less than one whole step of `batch`
    examples (all ranks) is skipped. Raises ValueError when an epoch cannot be set up (ds.set_epoch), or
    SmallEpochError when it holds less than one step from its start: here for the first epoch, and for a later
    one once every step before it has been yielded.

    One loader for the whole run, so its workers start once and mask across epoch boundaries: a loader per epoch
    stalled the GPU at every epoch start (0.55 s with 14 workers on an H200, where an epoch of the Small model
    takes 12 s). Its sampler hands out (epoch, index) keys, each worker's copy of `ds` setting itself up for a new
    epoch when its first key arrives; `ds` itself is set up here, one epoch ahead of the keys' consumer, to count
    the epoch's steps (and serves the items when num_workers is 0). Keys run over explicit index ranges, so a
    resumed run reads exactly the examples the stopped run would have read next; the loader's own generator keeps
    worker seeding off the global RNG (dropout stays in step).
    """
    sizes = {}  # epoch -> examples over all ranks; an epoch that cannot be set up is not stored

    def steps(e: int, pos: int) -> int:  # whole steps left in epoch e from global example pos (every rank's count)
        if e not in sizes:
            ds.set_epoch(e)
            sizes[e] = ds.num_global_examples
        n = (sizes[e] - pos) // batch
        if sizes[e] < batch:
            raise SmallEpochError(f"epoch {e} has {sizes[e]} examples, fewer than one batch of {batch}")
        return max(n, 0)

    def keys():  # stops at an epoch that fails: its error is raised to the consumer when the run reaches it
        e, pos = epoch, epoch_pos
        while True:
            try:
                n = steps(e, pos)
            except ValueError:
                return
            start = pos // world_size
            yield from ((e, i) for i in range(start, start + n * accum * micro_batch))
            e, pos = e + 1, 0

    def step_batches(loader):  # the iterator lives in the generator's frame: closing the generator frees the workers
        it = None
        try:
            # the workers start at the first step, not when the run is set up: an error between the two (a cut
            # log.jsonl, a full disk) would leave them running, and they ignore the signals that end a process
            it = iter(loader)
            e, pos = epoch, epoch_pos
            while True:
                for _ in range(steps(e, pos)):  # set up again (deterministic) where the keys stopped: the same error
                    yield e, [next(it) for _ in range(accum)]
                e, pos = e + 1, 0
        finally:
            if it is not None:
                shutdown_workers(it)  # an error's traceback keeps this frame (and a worker's error, torch's
                # re-raise, a reference cycle) alive

    steps(epoch, epoch_pos)  # the first epoch's errors raise here, before any worker starts; they copy `ds` set up
    loader = DataLoader(ds, batch_size=micro_batch, sampler=keys(), num_workers=num_workers,
                        collate_fn=collate_pretraining, worker_init_fn=ignore_stop_signals, pin_memory=pin_memory,
                        generator=torch.Generator().manual_seed(seed + epoch))
    return step_batches(loader)

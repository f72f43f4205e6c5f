"""Pretraining examples built at load time from token shards: SOP pairs + n-gram whole-word dynamic masking.

    ds = PretrainingDataset("runs/shards", max_seq_length=128, max_predictions_per_seq=20, seed=42)
    loader = DataLoader(ds, batch_size=32, shuffle=False, collate_fn=collate_pretraining, num_workers=2)
    for epoch in range(3): ds.set_epoch(epoch); [train_step(b) for b in loader]

Shards are written by create_pretraining_data.py (format in its docstring). Only a small index is built per
epoch (set_epoch); examples are made on access, so each epoch re-chunks the documents (a random short target
shifts every later chunk of its document), re-draws the A|B split, the SOP swap and the masks.

Reproducibility. Epoch e's chunking and its global example order come from np.random.default_rng([seed, e]);
every random choice of the example at global position g comes from np.random.default_rng([seed, e, g]). So an
example depends only on (seed, epoch, g): not on worker count, batch size, rank count or access order.

Sharding across ranks. The epoch's chunks are put in a deterministic permuted order (global positions 0..N-1).
With world_size W every rank gets n = N // W examples (the last N % W positions are dropped, so all ranks run
the same number of steps): rank r's local index i is global position g = r + i * W. Read with shuffle=False and
batch size b per rank, rank r's k-th batch is the positions {r + j*W : k*b <= j < (k+1)*b}; the union over ranks
is exactly the positions [k*b*W, (k+1)*b*W), i.e. global batch k of a one-rank run with batch b*W. (A one-rank
run has all N positions; the W-rank run stops after the first n*W.)

DataLoader workers get a copy of the dataset when the iterator is created, so call set_epoch before iterating
and do not use persistent_workers=True (a persistent worker would keep the old epoch's index).
"""
from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
import re

import numpy as np
import torch
from torch.utils.data import Dataset

from tokenization import load_vocab, special_token_ids

FORMAT = "korean-bert-pretraining-shards"
FORMAT_VERSION = 1
IGNORE_INDEX = -100
_BRACKETED = re.compile(r"^\[[^\]\s]+\]$")  # [PAD], [UNK], [unused12], ...


def shard_path(input_dir: str, shard: str, part: str) -> str:
    """input_dir/shard_00000.<part>.npy, part in ids, word_start, sentences, documents."""
    return os.path.join(input_dir, f"{shard}.{part}.npy")


def vocab_sha256(vocab_file: str) -> str:
    """meta.json's "vocab_sha256": what ties shards to the vocab they were built with (recorded by
    create_pretraining_data.py, checked by run_pretraining.py)."""
    h = hashlib.sha256()
    with open(vocab_file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_meta(input_dir: str) -> dict:
    path = os.path.join(input_dir, "meta.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: {input_dir} is not a complete pretraining-data directory "
                                f"(create it with create_pretraining_data.py)")
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} directory")
    return meta


def unpack_bits(packed: np.ndarray, start: int, end: int) -> np.ndarray:
    """Bits [start, end) of a little-bit-order np.packbits array, as bool."""
    lo = start // 8
    bits = np.unpackbits(np.asarray(packed[lo:(end + 7) // 8]), bitorder="little")
    return bits[start - lo * 8:end - lo * 8].astype(bool)


# ----------------------------------------------------------------------------------------------------------------
# masking (module level and free of dataset state so it can be tested on synthetic ids)

@functools.lru_cache(maxsize=None)
def ngram_cdf(max_ngram: int) -> np.ndarray:
    p = 1.0 / np.arange(1, max_ngram + 1)
    return np.cumsum(p / p.sum())


def choose_spans(unit_len: np.ndarray, contiguous: np.ndarray, budget: int, max_ngram: int,
                 rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Non-overlapping n-grams of masking units (whole words, or single pieces) with p(n) ~ 1/n, up to `budget` tokens.

    unit_len[u]: tokens in unit u; contiguous[u]: unit u+1 directly follows unit u (no [SEP] between), so an
    n-gram never straddles segments. Each round draws n from p(n) and places the n-gram uniformly among the
    starts where it fits: inside the sequence, clear of earlier spans, within the remaining budget. Only when no
    such start exists is n shortened (in practice: the last span, which has to fit the budget's remainder).
    ALBERT instead visits starts in random order and drops n-grams that overlap earlier ones, which skews the
    realised lengths toward unigrams; here every drawn length is kept unless the budget forbids it.
    Returns (first unit, n units, drawn n) per span, in the order chosen.
    """
    n_units = len(unit_len)
    if n_units == 0 or budget <= 0:
        return []
    cum = np.concatenate([[0], np.cumsum(unit_len)])
    # cost[k][s]: tokens of the (k+1)-gram starting at unit s; ok[k][s]: that n-gram exists and is still free
    cost, ok = [], []
    run = np.ones(n_units, bool)
    for k in range(max_ngram):
        m = max(n_units - k, 0)
        if k:
            run = run[:m] & contiguous[k - 1:k - 1 + m]
        cost.append(cum[k + 1:k + 1 + m] - cum[:m])
        ok.append(run.copy())
    least = [int(c.min()) if len(c) else 0 for c in cost]  # cheapest n-gram of each length, taken or not
    cdf = ngram_cdf(max_ngram).tolist()
    pool = []  # uniforms drawn 64 at a time: one generator call per ~20 draws is most of the speed-up

    def uniform():
        if not pool:
            pool.extend(rng.random(64).tolist()[::-1])
        return pool.pop()

    spans, left = [], budget
    while left > 0:
        drawn = bisect.bisect_right(cdf, uniform()) + 1
        for n in range(min(drawn, max_ngram), 0, -1):
            okn, costn = ok[n - 1], cost[n - 1]
            if not len(okn) or least[n - 1] > left:
                continue
            # a start uniform among those that fit: by rejection (exact, and it almost always hits in a few
            # tries, as spans cover a small part of the sequence), else by listing them all
            for _ in range(8):
                s = int(uniform() * len(okn))
                if okn[s] and costn[s] <= left:
                    break
            else:
                cand = np.flatnonzero(okn & (costn <= left))
                if not len(cand):
                    continue
                s = int(cand[int(uniform() * len(cand))])
            break
        else:
            break
        left -= int(cost[n - 1][s])
        for k in range(max_ngram):  # n-grams of any length that would overlap units s..s+n-1
            ok[k][max(0, s - k):s + n] = False
        spans.append((s, n, drawn))
    return spans


def mask_tokens(input_ids: np.ndarray, word_start: np.ndarray, maskable: np.ndarray, rng: np.random.Generator, *,
                masked_lm_prob: float, max_predictions: int, max_ngram: int, whole_word: bool, mask_id: int,
                random_ids: np.ndarray, num_real_tokens: int | None = None):
    """Dynamic n-gram (whole-word) masking of one sequence.

    input_ids, word_start, maskable: [T]; word_start marks the first piece of a word (segment starts included),
    maskable is False at [CLS]/[SEP]/[UNK]/padding. Budget = min(max_predictions, max(1, round(prob * real tokens))).
    The 80/10/10 choice ([MASK] / random non-special token / unchanged) is made once per span, as in SpanBERT:
    an n-gram is hidden or shown as a whole, and the token-level split is still 80/10/10 in expectation.
    Returns (masked input_ids, labels with IGNORE_INDEX where not predicted, spans), spans as (first token, end
    token, n units, drawn n) in the order chosen.
    """
    T = len(input_ids)
    real = int(maskable.sum()) if num_real_tokens is None else num_real_tokens
    budget = min(max_predictions, max(1, int(masked_lm_prob * real + 0.5)))
    pos = np.flatnonzero(maskable)
    labels = np.full(T, IGNORE_INDEX, np.int64)
    out = np.array(input_ids, dtype=np.int64)
    if len(pos) == 0:
        return out, labels, []
    prev_maskable = np.concatenate([[False], maskable[:-1]])
    starts_unit = (word_start | ~prev_maskable)[pos] if whole_word else np.ones(len(pos), bool)
    unit_first = pos[starts_unit]
    unit_end = np.append(pos[np.flatnonzero(starts_unit)[1:] - 1] + 1, pos[-1] + 1)  # exclusive
    spans = choose_spans(unit_end - unit_first, unit_end[:-1] == unit_first[1:], budget, max_ngram, rng)
    decision = rng.random(len(spans))
    replace = rng.integers(0, len(random_ids), size=T)
    token_spans = []
    for (s, n, drawn), d in zip(spans, decision):
        a, b = int(unit_first[s]), int(unit_end[s + n - 1])
        labels[a:b] = out[a:b]
        if d < 0.8:
            out[a:b] = mask_id
        elif d < 0.9:
            out[a:b] = random_ids[replace[a:b]]
        token_spans.append((a, b, n, drawn))
    return out, labels, token_spans


# ----------------------------------------------------------------------------------------------------------------

class PretrainingDataset(Dataset):
    """SOP pairs with n-gram whole-word masking, rebuilt every epoch from create_pretraining_data.py shards.

    Chunking (per document, per epoch): the document's tokens are cut into consecutive chunks that fill the target
    length exactly: target = max_seq_length - 3, or with prob short_seq_prob a uniform length in [2, target]. A
    sentence that straddles the target is cut there and its remainder starts the next chunk, so no token is
    dropped and no pair ever needs truncating (ALBERT's overshoot-then-truncate loses up to a sentence per chunk).
    A chunk is split into A | B at a random sentence boundary inside it (a chunk inside one sentence: at a random
    token); with prob 0.5 the halves are swapped (sop_label 1 = swapped, 0 = in order). A document tail of a
    single token is dropped (it cannot form a pair).

    Items: input_ids, token_type_ids, attention_mask, mlm_labels (int64 [max_seq_length], padded; -100 where not
    predicted), mlm_positions (int64 [max_predictions_per_seq]: the predicted positions in order, then 0s) and
    sop_label (int64 scalar). See the module docstring for determinism and the rank split.
    """

    def __init__(self, input_dir: str, max_seq_length: int = 128, max_predictions_per_seq: int = 20,
                 masked_lm_prob: float = 0.15, max_ngram: int = 3, whole_word: bool = True,
                 short_seq_prob: float = 0.1, seed: int = 42, rank: int = 0, world_size: int = 1,
                 sop: bool = True):
        if max_seq_length < 5:
            raise ValueError(f"max_seq_length={max_seq_length}: need at least 5 ([CLS] a [SEP] b [SEP])")
        if max_ngram < 1 or max_predictions_per_seq < 1 or not 0 < masked_lm_prob < 1:
            raise ValueError("need max_ngram >= 1, max_predictions_per_seq >= 1 and 0 < masked_lm_prob < 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.input_dir = input_dir
        self.meta = read_meta(input_dir)
        self.vocab_file = os.path.join(input_dir, "vocab.txt")
        vocab = load_vocab(self.vocab_file)
        vocab_size = max(vocab.values()) + 1
        if vocab_size != self.meta["vocab_size"]:
            raise ValueError(f"{self.vocab_file} has {vocab_size} tokens but meta.json says {self.meta['vocab_size']}")
        sp = special_token_ids(vocab, self.vocab_file)
        self.pad_id, self.cls_id, self.sep_id, self.mask_id = sp["pad"], sp["cls"], sp["sep"], sp["mask"]
        special = np.zeros(vocab_size, bool)
        special[[i for t, i in vocab.items() if _BRACKETED.match(t)] + list(sp.values())] = True
        self._special = special
        self._random_ids = np.flatnonzero(~special)
        self.max_seq_length, self.max_predictions_per_seq = max_seq_length, max_predictions_per_seq
        self.masked_lm_prob, self.max_ngram, self.whole_word = masked_lm_prob, max_ngram, whole_word
        self.short_seq_prob, self.seed, self.rank, self.world_size = short_seq_prob, seed, rank, world_size
        self.sop = sop
        self._shards = [s["name"] for s in self.meta["shards"]]
        # sentence/document offsets are small: load them; token arrays stay memory-mapped (opened lazily per process)
        self._sent_off = [np.load(shard_path(input_dir, s, "sentences")) for s in self._shards]
        self._doc_off = [np.load(shard_path(input_dir, s, "documents")) for s in self._shards]
        self._mm = {}
        self.set_epoch(0)

    def __getstate__(self):
        # DataLoader workers re-open the memory maps instead of receiving pickled copies of the token arrays
        return {k: v for k, v in self.__dict__.items() if k != "_mm"} | {"_mm": {}}

    def _arrays(self, k: int):
        if k not in self._mm:
            self._mm[k] = (np.load(shard_path(self.input_dir, self._shards[k], "ids"), mmap_mode="r"),
                           np.load(shard_path(self.input_dir, self._shards[k], "word_start"), mmap_mode="r"))
        return self._mm[k]

    # -- epoch index ---------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int):
        """Re-chunk the corpus and re-permute the example order for `epoch` (cheap: one pass over documents)."""
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch])
        max_tokens = self.max_seq_length - 3
        block, targets, ptr = 1 << 16, [], 0
        shard_of, starts, ends = [], [], []
        for k, (sent_off, doc_off) in enumerate(zip(self._sent_off, self._doc_off)):
            doc_bounds = sent_off[doc_off].tolist()  # token offset where each document starts (+ end)
            cs, ce = [], []
            for p, doc_end in zip(doc_bounds[:-1], doc_bounds[1:]):
                while doc_end - p >= 2:
                    if ptr == len(targets):  # drawn in blocks: one generator call per chunk would dominate
                        short = rng.random(block) < self.short_seq_prob
                        length = 2 + np.floor(rng.random(block) * (max_tokens - 1)).astype(np.int64)
                        targets, ptr = np.where(short, length, max_tokens).tolist(), 0
                    e = min(p + targets[ptr], doc_end)
                    ptr += 1
                    cs.append(p)
                    ce.append(e)
                    p = e
            shard_of.append(np.full(len(cs), k, np.int32))
            starts.append(np.asarray(cs, np.int64))
            ends.append(np.asarray(ce, np.int64))
        self._chunk_shard = np.concatenate(shard_of) if shard_of else np.zeros(0, np.int32)
        self._chunk_start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self._chunk_end = np.concatenate(ends) if ends else np.zeros(0, np.int64)
        self._order = rng.permutation(len(self._chunk_start))
        self._per_rank = len(self._order) // self.world_size
        if self._per_rank == 0:
            raise ValueError(f"{self.input_dir}: {len(self._order)} examples cannot be split over "
                             f"{self.world_size} ranks")

    @property
    def num_global_examples(self) -> int:
        """Examples per epoch over all ranks (= len(self) * world_size)."""
        return self._per_rank * self.world_size

    def global_index(self, i: int) -> int:
        return self.rank + i * self.world_size

    def __len__(self) -> int:
        return self._per_rank

    # -- one example ---------------------------------------------------------------------------------------------
    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self._per_rank:
            raise IndexError(f"index {i} out of range for {self._per_rank} examples")
        return self.example(self.global_index(i))

    def segments(self, g: int, rng: np.random.Generator):
        """(shard, A range, B range, swapped) of the example at global position g; draws from rng first."""
        c = self._order[g]
        k, s, e = int(self._chunk_shard[c]), int(self._chunk_start[c]), int(self._chunk_end[c])
        sent_off = self._sent_off[k]
        inner = sent_off[np.searchsorted(sent_off, s, "right"):np.searchsorted(sent_off, e, "left")]
        m = int(inner[rng.integers(len(inner))]) if len(inner) else s + int(rng.integers(1, e - s))
        # without SOP the pair stays in order; the coin is still tossed, so segments and masks are unchanged
        return k, (s, m), (m, e), bool(rng.random() < 0.5) and self.sop

    def example(self, g: int, return_spans: bool = False):
        """The item at global position g; with return_spans also the masked spans (see mask_tokens)."""
        rng = np.random.default_rng([self.seed, self.epoch, g])
        k, a, b, swapped = self.segments(g, rng)
        first, second = (b, a) if swapped else (a, b)
        ids, packed = self._arrays(k)
        la, lb = first[1] - first[0], second[1] - second[0]
        n = la + lb + 3
        L = self.max_seq_length
        input_ids = np.full(L, self.pad_id, np.int64)
        input_ids[0], input_ids[la + 1], input_ids[n - 1] = self.cls_id, self.sep_id, self.sep_id
        input_ids[1:la + 1] = ids[first[0]:first[1]]
        input_ids[la + 2:n - 1] = ids[second[0]:second[1]]
        word_start = np.zeros(L, bool)
        word_start[1:la + 1] = unpack_bits(packed, *first)
        word_start[la + 2:n - 1] = unpack_bits(packed, *second)
        word_start[[1, la + 2]] = True  # a segment may begin mid-word (random-token split): start a word there
        maskable = ~self._special[input_ids]
        maskable[n:] = False
        masked, labels, spans = mask_tokens(
            input_ids, word_start, maskable, rng, masked_lm_prob=self.masked_lm_prob,
            max_predictions=self.max_predictions_per_seq, max_ngram=self.max_ngram, whole_word=self.whole_word,
            mask_id=self.mask_id, random_ids=self._random_ids, num_real_tokens=la + lb)
        token_type_ids = np.zeros(L, np.int64)
        token_type_ids[la + 2:n] = 1
        attention_mask = np.zeros(L, np.int64)
        attention_mask[:n] = 1
        # where the predictions are, padded with 0 ([CLS], never a target) to a fixed max_predictions_per_seq:
        # the model gathers these rows, with shapes that never change and no GPU sync to count them
        positions = np.zeros(self.max_predictions_per_seq, np.int64)
        where = np.flatnonzero(labels != IGNORE_INDEX)
        positions[:len(where)] = where  # the budget never exceeds max_predictions_per_seq
        item = {"input_ids": masked, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
                "mlm_labels": labels, "mlm_positions": positions, "sop_label": np.array(int(swapped), np.int64)}
        return (item, spans) if return_spans else item


def collate_pretraining(items: list[dict]) -> dict:
    """Stack items into torch tensors [B, max_seq_length] (mlm_positions [B, max_predictions], sop_label [B]); rows
    keep their fixed padding so every batch has the same shape (no recompiles, identical shapes on every rank)."""
    return {key: torch.from_numpy(np.stack([it[key] for it in items])) for key in items[0]}

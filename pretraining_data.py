"""Pretraining examples built at load time from token shards: SOP pairs, masked by masking.mask_tokens each time.

    ds = PretrainingDataset("runs/shards", max_seq_length=128, max_predictions_per_seq=20, seed=42)
    loader = DataLoader(ds, batch_size=32, shuffle=False, collate_fn=collate_pretraining, num_workers=2)  # (1)
    for epoch in range(3): ds.set_epoch(epoch); [train_step(b) for b in loader]

Shards are written by create_pretraining_data.py (format in its docstring). Only a small index is built per
epoch (set_epoch); examples are made on access, so each epoch re-chunks the documents (a random short target
shifts every later chunk of its document), re-draws the A|B split, the SOP swap and the masks.

Reproducibility. Epoch e's chunking and its global example order come from np.random.default_rng([seed, e]);
every random choice of the example at global position g comes from np.random.default_rng([seed, e, g]); with
source_weights, each document's copies per epoch follow a phase drawn once per run from [seed, 2**63]. So an
example depends only on (seed, epoch, g): not on worker count, batch size, rank count or access order.

Sharding across ranks. The epoch's chunks are put in a deterministic permuted order (global positions 0..N-1).
With world_size W every rank gets n = N // W examples (the last N % W positions are dropped, so all ranks run
the same number of steps): rank r's local index i is global position g = r + i * W. Read with shuffle=False and
batch size b per rank, rank r's k-th batch is the positions {r + j*W : k*b <= j < (k+1)*b}; the union over ranks
is exactly the positions [k*b*W, (k+1)*b*W), i.e. global batch k of a one-rank run with batch b*W. (A one-rank
run has all N positions; the W-rank run stops after the first n*W.)

DataLoader workers get a copy of the dataset when the iterator is created, so call set_epoch before iterating
and do not use persistent_workers=True (a persistent worker would keep the old epoch's index), or index with
(epoch, i) keys, which set a copy up for their epoch: pretraining_loader.run_batches does that for a training
loop, one loader for the whole run from any position in an epoch. (1) collate_pretraining is in pretraining_loader.
"""
from __future__ import annotations

import bisect
import fnmatch
import hashlib
import json
import os
import re

import numpy as np
from torch.utils.data import Dataset

from fileio import file_sha256
from masking import IGNORE_INDEX, mask_tokens
from tokenization import load_vocab, special_token_ids

FORMAT = "korean-bert-pretraining-shards"
FORMAT_VERSION = 1
_PHASE_STREAM = 1 << 63  # the documents' phases (--source_weights): a stream apart from every [seed, e] and [seed, e, g]
_BRACKETED = re.compile(r"^\[[^\]\s]+\]$")  # [PAD], [UNK], [unused12], ...


def shard_path(input_dir: str, shard: str, part: str) -> str:
    """input_dir/shard_00000.<part>.npy, part in ids, word_start, sentences, documents."""
    return os.path.join(input_dir, f"{shard}.{part}.npy")


def vocab_sha256(vocab_file: str) -> str:
    """meta.json's "vocab_sha256": what ties shards to the vocab they were built with (recorded by
    create_pretraining_data.py, checked by run_pretraining.py)."""
    return file_sha256(vocab_file)


def shards_fingerprint(meta: dict) -> str:
    """A digest of meta.json's content (every shard's name and counts, the input files, the vocab's sha256) but not
    its run summary (seconds, MB/s, worker count): a resumed run's data position means the same examples only while
    this is unchanged, and the same shards prepared again must not look like other data."""
    data = {k: v for k, v in meta.items() if k != "summary"}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def read_meta(input_dir: str) -> dict:
    path = os.path.join(input_dir, "meta.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: {input_dir} is not a complete pretraining-data directory "
                                f"(create it with create_pretraining_data.py)")
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} directory")
    missing = [k for k in ("vocab_size", "vocab_sha256", "shards", "input_files") if k not in meta]
    if missing or not isinstance(meta["shards"], list) or not all(isinstance(s, dict) and "name" in s
                                                                  for s in meta["shards"]):
        raise ValueError(f"{path}: {'no ' + repr(missing[0]) if missing else 'a damaged shard list'} "
                         "(prepare the data again)")
    return meta


def check_token_ids(path: str, ids: np.ndarray, vocab_size: int):
    """ValueError naming the shard if an id is outside the vocab: on a GPU an out-of-range embedding index is an
    asynchronous device assert that names nothing, hours into a run. One pass over the (memory-mapped) ids."""
    top = int(ids.max()) if len(ids) else 0
    if top >= vocab_size:
        raise ValueError(f"{path}: token id {top} is outside the vocab ({vocab_size} entries): a damaged shard "
                         "(prepare the data again)")


def unpack_bits(packed: np.ndarray, start: int, end: int) -> np.ndarray:
    """Bits [start, end) of a little-bit-order np.packbits array, as bool."""
    lo = start // 8
    bits = np.unpackbits(np.asarray(packed[lo:(end + 7) // 8]), bitorder="little")
    return bits[start - lo * 8:end - lo * 8].astype(bool)


def unit_bounds(sent_off: np.ndarray, max_piece: int, word_start: np.ndarray | None = None) -> np.ndarray:
    """Token offsets where chunking units start (+ the end): the sentence starts, plus cuts inside a sentence longer
    than max_piece tokens, at most max_piece apart, so that a chunk of two units fits in one example and long legal
    sentences are not mostly truncated away. word_start (the shard's packed bits): each cut moves back to the start
    of the word it would split, so no segment starts with a '##' piece (cut anywhere, 47% of in-order second
    segments did and 2% of swapped ones: SOP's label could be read off that one token)."""
    long = np.flatnonzero(np.diff(sent_off) > max_piece)
    cuts = []
    for i in long:
        pos, end = int(sent_off[i]), int(sent_off[i + 1])
        while end - pos > max_piece:
            cut = pos + max_piece
            if word_start is not None:
                starts = np.flatnonzero(unpack_bits(word_start, pos + 1, cut + 1))
                cut = pos + 1 + int(starts[-1]) if len(starts) else cut  # a word longer than max_piece is still cut
            cuts.append(cut)
            pos = cut
    return np.unique(np.concatenate([sent_off, cuts])).astype(np.int64) if cuts else np.asarray(sent_off, np.int64)


def truncate_pair(pair, max_tokens: int, rng: np.random.Generator):
    """((a0, a1), (b0, b1)) cut to at most max_tokens in all: the longer range loses one token at a time (B on a
    tie), each from its front or back with prob 0.5, as ALBERT's truncate_seq_pair; each range keeps >= 1 token."""
    (a0, a1), (b0, b1) = pair
    la, lb = a1 - a0, b1 - b0
    if la + lb <= max_tokens:
        return pair
    if lb <= max_tokens // 2:
        keep_a, keep_b = max_tokens - lb, lb
    elif la <= (max_tokens + 1) // 2:
        keep_a, keep_b = la, max_tokens - la
    else:  # both long: they meet in the middle, A keeping the odd token
        keep_a, keep_b = (max_tokens + 1) // 2, max_tokens // 2
    front_a, front_b = rng.binomial(la - keep_a, 0.5), rng.binomial(lb - keep_b, 0.5)
    return (a0 + front_a, a0 + front_a + keep_a), (b0 + front_b, b0 + front_b + keep_b)


def chunk_documents(bounds: np.ndarray, first: np.ndarray, last: np.ndarray, max_tokens: int,
                    short_seq_prob: float, rng: np.random.Generator, scalar_below: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) token offsets of the chunks of documents [first[d], last[d]) (unit indices into `bounds`,
    the unit offsets), document by document, each document's chunks in order (the rule: PretrainingDataset).

    Every document takes its next chunk in the same round, a few array operations over the documents still open,
    instead of a Python step per chunk (0.27 s an epoch on the 159 MB corpus, which a training loop waited for at
    every epoch start); once fewer than `scalar_below` are open, each of those few long ones (a file without
    blank lines is one document) finishes in a plain loop, where a round per chunk would cost far more."""
    bounds, first, last = (np.asarray(a, np.int64) for a in (bounds, first, last))

    def next_end(i, end, target):  # the first boundary at or past the target, two units at least, no one-unit tail
        j = np.clip(np.searchsorted(bounds, bounds[i] + target, "left"), i + 2, end)
        return np.where(end - j == 1, end, j)

    def targets(n):
        short = rng.random(n) < short_seq_prob
        return np.where(short, 2 + np.floor(rng.random(n) * (max_tokens - 1)).astype(np.int64), max_tokens)

    one = (last - first == 1) & (bounds[last] - bounds[first] >= 2)  # a one-unit document: one chunk
    doc, cs, ce = [np.flatnonzero(one)], [bounds[first[one]]], [bounds[last[one]]]
    cur, open_ = first.copy(), np.flatnonzero(last - first >= 2)
    while len(open_) >= max(scalar_below, 1):
        i, end = cur[open_], last[open_]
        j = next_end(i, end, targets(len(open_)))
        doc.append(open_)
        cs.append(bounds[i])
        ce.append(bounds[j])
        cur[open_] = j
        open_ = open_[end - j >= 2]
    for d in open_.tolist():
        lo, end = int(cur[d]), int(last[d])
        b, i, n, js = bounds[lo:end + 1].tolist(), 0, end - lo, []  # this document's offsets, from its open unit
        t, p = [], 0
        while n - i >= 2:
            if p == len(t):  # drawn in blocks: one generator call per chunk would dominate
                t, p = targets(256).tolist(), 0
            j = bisect.bisect_left(b, b[i] + t[p], i + 2, n)  # as next_end, on a list: one C call
            p += 1
            i = n if n - j == 1 else j
            js.append(i)
        js = np.asarray(js, np.int64) + lo
        doc.append(np.full(len(js), d))
        cs.append(bounds[np.concatenate([[lo], js[:-1]])])
        ce.append(bounds[js])
    order = np.argsort(np.concatenate(doc), kind="stable")  # appended round by round: by document, then in order
    return np.concatenate(cs)[order], np.concatenate(ce)[order]


# ----------------------------------------------------------------------------------------------------------------
# corpus mix (--source_weights): a weight per input file, from patterns on the files' base names

def parse_source_weights(specs: list[str]) -> dict[str, float]:
    """["court_*=0.25", "statutes_*=0"] -> {"court_*": 0.25, "statutes_*": 0.0} (run_pretraining.py --source_weights)."""
    out = {}
    for spec in specs:
        pattern, _, w = spec.rpartition("=")
        try:
            weight = float(w)
        except ValueError:
            weight = None
        if not pattern or weight is None:
            raise ValueError(f"{spec}: not PATTERN=WEIGHT (e.g. court_*=0.25)")
        if pattern in out:
            raise ValueError(f"{pattern} is given twice")
        out[pattern] = weight
    return out


def resolve_source_weights(input_files: list[str], weights: dict[str, float]) -> np.ndarray:
    """One weight per input file from {pattern: weight}: a pattern is matched (fnmatch) against each file's base name,
    files no pattern matches keep weight 1. Every pattern must match a file and no file two patterns."""
    names = [os.path.basename(p) for p in input_files]
    out = np.ones(len(names))
    matched_by = {}
    for pattern, w in weights.items():
        if not (w >= 0 and np.isfinite(w)):
            raise ValueError(f"{pattern}={w}: a weight must be a finite number >= 0")
        hits = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(f"{pattern} matches none of the shards' input files ({', '.join(sorted(set(names)))})")
        for i in hits:
            if i in matched_by:
                raise ValueError(f"{names[i]} is matched by both {matched_by[i]} and {pattern}")
            matched_by[i] = pattern
            out[i] = w
    return out


class PretrainingDataset(Dataset):
    """SOP pairs with n-gram whole-word masking, rebuilt every epoch from create_pretraining_data.py shards.

    Chunking (per document, per epoch), as in ALBERT: units are the document's sentences, a sentence longer than
    half of max_seq_length - 3 being cut into pieces of that size. Consecutive units are gathered until they reach
    the target length: max_seq_length - 3, or with prob short_seq_prob a uniform length in [2, that]; a chunk takes
    at least two units, and a document's last unit joins the chunk before it. The chunk is split into A | B at a
    random unit boundary inside it; with prob 0.5 the halves are swapped (sop_label 1 = swapped, 0 = in order);
    then the longer half loses tokens, each from its front or back at random, until the pair fits (ALBERT's
    truncate_seq_pair). Every edge of a pair is thus a unit boundary or a random truncation, whatever the order,
    so the order cannot be read off the edges: chunks cut at arbitrary tokens (this module's earlier scheme, which
    used every token) gave the first segment a sentence end 85% of the time in order and 17% swapped, and a rule
    on that alone scored 83% SOP accuracy. The price: tokens past the fill of each chunk are left out of that
    epoch (about a tenth; other ones in the next epoch). A one-unit document is split at a random token.

    Corpus mix: source_weights {pattern on the file's base name: w} (resolve_source_weights) gives each document of
    a matching input file floor(w (e + 1) + u) - floor(w e + u) copies in epoch e, u a fixed uniform phase per
    document: w on average and every epoch within one of it, and a fractional w rotates through the documents
    (0.25: each document exactly once in every 4 epochs, a different quarter each epoch; 1.5: once and twice in
    turn; 2: twice, chunked differently; 0: never). source_shares: (input file, expected share of an epoch's
    tokens) in meta.json's input_files order.

    Items: input_ids, token_type_ids, attention_mask, mlm_labels (int64 [max_seq_length], padded; -100 where not
    predicted), mlm_positions (int64 [max_predictions_per_seq]: the predicted positions in order, then 0s) and
    sop_label (int64 scalar). See the module docstring for determinism and the rank split.
    """

    def __init__(self, input_dir: str, max_seq_length: int = 128, max_predictions_per_seq: int = 20,
                 masked_lm_prob: float = 0.15, max_ngram: int = 3, whole_word: bool = True,
                 short_seq_prob: float = 0.1, seed: int = 42, rank: int = 0, world_size: int = 1,
                 sop: bool = True, source_weights: dict[str, float] | None = None):
        if max_seq_length < 5:
            raise ValueError(f"max_seq_length={max_seq_length}: need at least 5 ([CLS] a [SEP] b [SEP])")
        if max_ngram < 1 or max_predictions_per_seq < 1 or not 0 < masked_lm_prob < 1:
            raise ValueError("need max_ngram >= 1, max_predictions_per_seq >= 1 and 0 < masked_lm_prob < 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if seed < 0 or not 0 <= short_seq_prob <= 1:
            raise ValueError(f"need seed >= 0 (got {seed}) and 0 <= short_seq_prob <= 1 (got {short_seq_prob})")
        self.input_dir = input_dir
        self.meta = read_meta(input_dir)
        self.vocab_file = os.path.join(input_dir, "vocab.txt")
        vocab = load_vocab(self.vocab_file)
        if vocab_sha256(self.vocab_file) != self.meta["vocab_sha256"]:
            raise ValueError(f"{self.vocab_file} is not the vocab these shards were built with (its sha256 differs "
                             "from meta.json's vocab_sha256)")
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
        self._mm = {}
        self._sent_off, self._doc_off = [], []
        for s in self._shards:
            for part, into in (("sentences", self._sent_off), ("documents", self._doc_off)):
                try:
                    into.append(np.load(shard_path(input_dir, s, part)))
                except (ValueError, OSError) as e:
                    raise ValueError(f"{shard_path(input_dir, s, part)}: {e}") from None
            so, do = self._sent_off[-1], self._doc_off[-1]
            # every later index is read from these: offsets out of order would train on wrong spans without error
            if not (so.ndim == do.ndim == 1 and len(so) >= 2 and len(do) >= 2 and so[0] == do[0] == 0
                    and do[-1] == len(so) - 1 and (np.diff(so) > 0).all() and (np.diff(do) > 0).all()):
                raise ValueError(f"{shard_path(input_dir, s, 'sentences')} (or its documents): offsets that do not "
                                 "rise from 0 to the end: a damaged shard (prepare the data again)")
        # token offsets inside a shard (32M tokens by default) fit int32: the per-epoch index every loader worker
        # builds for itself then takes 16 bytes per example instead of 28 (about 0.5 GB a worker at 4B tokens)
        self._index_dtype = np.int32 if max(int(so[-1]) for so in self._sent_off) < 2**31 else np.int64
        self._units = []
        for k, so in enumerate(self._sent_off):  # a missing or cut file fails here, not hours later in a worker
            try:
                ids, packed = self._arrays(k)
            except (ValueError, OSError) as e:
                raise ValueError(f"{shard_path(input_dir, self._shards[k], 'ids')} (or its word_start): {e}") from None
            if len(ids) != so[-1] or len(packed) != (int(so[-1]) + 7) // 8:
                raise ValueError(f"{shard_path(input_dir, self._shards[k], 'ids')}: {len(ids)} tokens and "
                                 f"{len(packed)} word-start bytes, but its sentence offsets end at {int(so[-1])}: "
                                 "a damaged shard (prepare the data again)")
            check_token_ids(shard_path(input_dir, self._shards[k], "ids"), ids, vocab_size)
            self._units.append(unit_bounds(so, max(1, (max_seq_length - 3) // 2), packed).astype(self._index_dtype))
        self._mm = {}  # opened again lazily in each process
        self._doc_weight = None  # per shard, every document's weight; None: each document once
        files = self.meta["input_files"]
        if source_weights:
            file_weight = resolve_source_weights(files, source_weights)
            sources = []
            for name, do in zip(self._shards, self._doc_off):
                path = shard_path(input_dir, name, "sources")
                if not os.path.isfile(path):
                    raise ValueError(f"{path} is missing: these shards predate per-document sources, which a "
                                     "corpus mix needs (prepare them again with create_pretraining_data.py)")
                src = np.load(path)
                if src.shape != (len(do) - 1,) or len(src) and not 0 <= src.min() <= src.max() < len(files):
                    raise ValueError(f"{path}: does not match the shard's documents and meta.json's input_files "
                                     "(a damaged shard: prepare the data again)")
                sources.append(src)
            self._doc_weight = [file_weight[src] for src in sources]
            phase_rng = np.random.default_rng([seed, _PHASE_STREAM])  # not the epoch: a phase holds for the run
            self._doc_phase = [phase_rng.random(len(src)) for src in sources]
            per_file = np.zeros(len(files))
            for src, so, do, w in zip(sources, self._sent_off, self._doc_off, self._doc_weight):
                np.add.at(per_file, src, np.diff(so[do]) * w)  # each document's tokens, weighted
            if per_file.sum() == 0:
                raise ValueError(f"source weights {source_weights} leave no documents to train on")
            self.source_shares = list(zip(files, (per_file / per_file.sum()).tolist()))
        else:
            self.source_shares = None
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
        """Re-chunk the corpus and re-permute the example order for `epoch` (tens of ms: vectorised over documents)."""
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch])
        shard_of, starts, ends = [], [], []
        for k, (units, sent_off, doc_off) in enumerate(zip(self._units, self._sent_off, self._doc_off)):
            doc_units = np.searchsorted(units, sent_off[doc_off])  # unit index of each document start (+ end)
            first, last = doc_units[:-1], doc_units[1:]
            if self._doc_weight is not None:
                w, u = self._doc_weight[k], self._doc_phase[k]
                copies = np.floor(w * (epoch + 1) + u) - np.floor(w * epoch + u)
                d = np.repeat(np.arange(len(w)), copies.astype(np.int64))
                first, last = doc_units[d], doc_units[d + 1]
            cs, ce = chunk_documents(units, first, last, self.max_seq_length - 3, self.short_seq_prob, rng)
            shard_of.append(np.full(len(cs), k, np.int32))
            starts.append(cs.astype(self._index_dtype))
            ends.append(ce.astype(self._index_dtype))
        self._chunk_shard = np.concatenate(shard_of) if shard_of else np.zeros(0, np.int32)
        self._chunk_start = np.concatenate(starts) if starts else np.zeros(0, self._index_dtype)
        self._chunk_end = np.concatenate(ends) if ends else np.zeros(0, self._index_dtype)
        n = len(self._chunk_start)
        self._order = rng.permutation(n).astype(np.int32 if n < 2**31 else np.int64)
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
    def __getitem__(self, i: int | tuple[int, int]) -> dict:
        if isinstance(i, tuple):  # (epoch, i) from run_batches: this copy sets itself up for a new epoch first
            epoch, i = i
            if epoch != self.epoch:
                self.set_epoch(epoch)
        if not 0 <= i < self._per_rank:
            raise IndexError(f"index {i} out of range for {self._per_rank} examples")
        return self.example(self.global_index(i))

    def segments(self, g: int, rng: np.random.Generator):
        """(shard, A range, B range, swapped) of the example at global position g; draws from rng first."""
        c = self._order[g]
        k, s, e = int(self._chunk_shard[c]), int(self._chunk_start[c]), int(self._chunk_end[c])
        units = self._units[k]
        inner = units[np.searchsorted(units, s, "right"):np.searchsorted(units, e, "left")]
        if not len(inner):  # a one-unit chunk is split inside its sentence, at a word start where there is one
            inner = s + 1 + np.flatnonzero(unpack_bits(self._arrays(k)[1], s + 1, e))
            inner = inner if len(inner) else np.arange(s + 1, e)
        m = int(inner[rng.integers(len(inner))])
        # without SOP the pair stays in order; the coin is still tossed, so segments and masks are unchanged
        return k, (s, m), (m, e), bool(rng.random() < 0.5) and self.sop

    def example(self, g: int, return_spans: bool = False):
        """The item at global position g; with return_spans also the masked spans (see mask_tokens)."""
        rng = np.random.default_rng([self.seed, self.epoch, g])
        k, a, b, swapped = self.segments(g, rng)
        first, second = truncate_pair((b, a) if swapped else (a, b), self.max_seq_length - 3, rng)
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
        word_start[[1, la + 2]] = True  # a segment may begin mid-word (a piece or a truncation): start a word there
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

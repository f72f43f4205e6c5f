"""PretrainingDataset on shards of real Korean text: SOP pairs, n-gram whole-word masking statistics, determinism
from (seed, epoch, index) and the rank split. The run's batches from it: test_pretraining_loader.py."""
import collections
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import create_pretraining_data as cpd
import tokenization
from helpers import text_lines, wikinews_vocab
from masking import IGNORE_INDEX, choose_spans, mask_tokens
from pretraining_data import PretrainingDataset, chunk_documents, read_meta, shard_path, truncate_pair, unit_bounds
from pretraining_loader import collate_pretraining

P_NGRAM = np.array([6, 3, 2]) / 11
L = 128



@pytest.fixture(scope="module")
def shards(korean_shards):  # conftest: shared with test_pretraining_loader.py
    return korean_shards


@pytest.fixture(scope="module")
def ds(shards):
    return PretrainingDataset(shards, max_seq_length=L, seed=7)


@pytest.fixture(scope="module")
def vocab(shards):
    v = tokenization.load_vocab(os.path.join(shards, "vocab.txt"))
    return v, {i: t for t, i in v.items()}, tokenization.special_token_ids(v)


@pytest.fixture(scope="module")
def corpus(shards):
    """Concatenated token stream of all shards + chunking-unit and document boundaries as global token offsets."""
    meta = read_meta(shards)
    ids, units, docs, base = [], [], [], 0
    for s in meta["shards"]:
        i = np.load(shard_path(shards, s["name"], "ids"))
        so = np.load(shard_path(shards, s["name"], "sentences"))
        do = np.load(shard_path(shards, s["name"], "documents"))
        ids.append(i)
        units.append(unit_bounds(so, (L - 3) // 2, np.load(shard_path(shards, s["name"], "word_start")))[:-1] + base)
        docs.append(so[do[:-1]] + base)
        base += len(i)
    return np.concatenate(ids), set(np.concatenate(units).tolist()) | {base}, np.append(np.concatenate(docs), base)


@pytest.fixture(scope="module")
def sample(ds):
    """Two epochs of examples as stacked arrays, with the masked spans of each example."""
    rows, spans = collections.defaultdict(list), []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item, sp = ds.example(ds.global_index(i), return_spans=True)
            for k, v in item.items():
                rows[k].append(v)
            spans.append(sp)
    ds.set_epoch(0)
    return {k: np.stack(v) for k, v in rows.items()}, spans


def originals(batch):
    return np.where(batch["mlm_labels"] != IGNORE_INDEX, batch["mlm_labels"], batch["input_ids"])


def test_epoch_is_thousands_of_examples(ds, sample):
    assert len(read_meta(ds.input_dir)["shards"]) > 2
    assert len(ds) > 1000 and len(sample[0]["input_ids"]) > 2000


def test_an_epochs_index_takes_16_bytes_per_example(ds):
    """Every loader worker builds the epoch's index (chunk shard, start, end, order) for itself: 4 bytes each per
    example (int32 offsets inside a shard), where int64 took 28 in all (about 0.9 GB a worker at 4B tokens)."""
    index = (ds._chunk_shard, ds._chunk_start, ds._chunk_end, ds._order)
    assert sum(a.nbytes for a in index) == 16 * len(ds._order) and len(ds._order) > 1000


def test_layout_token_types_and_lengths(sample, vocab):
    b, (_, _, sp) = sample[0], vocab
    orig = originals(b)
    n = b["attention_mask"].sum(1)
    assert (n <= L).all() and (n >= 5).all()
    for row, length in zip(range(len(n)), n):
        ids, tt = orig[row], b["token_type_ids"][row]
        assert b["attention_mask"][row, :length].all() and not b["attention_mask"][row, length:].any()
        seps = np.flatnonzero(ids[:length] == sp["sep"])
        assert ids[0] == sp["cls"] and len(seps) == 2 and seps[1] == length - 1 and 2 <= seps[0] <= length - 3
        assert not tt[:seps[0] + 1].any() and tt[seps[0] + 1:length].all() and not tt[length:].any()
        assert (b["input_ids"][row, length:] == sp["pad"]).all()
    assert b["sop_label"].shape == (len(n),) and set(np.unique(b["sop_label"])) == {0, 1}


def test_chunks_tile_documents_at_unit_boundaries(shards, ds, corpus):
    meta = read_meta(shards)
    ds.set_epoch(3)
    used = sum(int(ds[i]["attention_mask"].sum()) - 3 for i in range(len(ds)))
    units = ds._units  # the sentence starts and the cuts inside long sentences (test_unit_bounds_cut_long_sentences)
    for k, (so, do) in enumerate(zip(ds._sent_off, ds._doc_off)):
        mine = ds._chunk_shard == k
        s, e = ds._chunk_start[mine], ds._chunk_end[mine]
        order = np.argsort(s)
        s, e = s[order], e[order]
        assert np.isin(s, units[k]).all() and np.isin(e, units[k]).all()
        docs = so[do]
        # a chunk never crosses a document start; chunks of a document abut, and tile it when it has 2+ tokens
        assert (np.searchsorted(docs, s, "right") == np.searchsorted(docs, e, "left")).all()
        multi = np.diff(docs) >= 2
        assert set(docs[:-1][multi].tolist()) <= set(s.tolist()) and set(docs[1:][multi].tolist()) <= set(e.tolist())
        inside = np.searchsorted(docs, s[1:], "right") == np.searchsorted(docs, e[:-1], "left")
        assert (s[1:][inside] == e[:-1][inside]).all()
    ds.set_epoch(0)
    # tokens past a chunk's fill are left out for the epoch: about a tenth (ALBERT's truncation)
    assert 0.8 * meta["num_tokens"] <= used <= meta["num_tokens"]


def test_unit_bounds_cut_long_sentences():
    sent_off = np.array([0, 5, 25, 26, 60])
    assert unit_bounds(sent_off, 8).tolist() == [0, 5, 13, 21, 25, 26, 34, 42, 50, 58, 60]
    assert unit_bounds(sent_off, 40).tolist() == sent_off.tolist()
    # with word starts, each cut moves back to the start of the word it would split (never to or before the last
    # cut: a word longer than 8 tokens is still cut), and units stay at most 8 tokens long
    starts = np.zeros(60, bool)
    starts[[0, 3, 5, 9, 12, 17, 20, 25, 26, 27, 30, 41, 50, 51]] = True
    bounds = unit_bounds(sent_off, 8, np.packbits(starts, bitorder="little"))
    assert bounds.tolist() == [0, 5, 12, 20, 25, 26, 30, 38, 41, 49, 51, 59, 60]
    assert np.diff(bounds).max() <= 8


def test_truncate_pair_is_albert_truncation():
    # the lengths of ALBERT's truncate_seq_pair (the longer side loses a token, B on a tie) are those of the
    # sentence-pair features' loop in cls_data; ours is the closed form of it
    from cls_features import truncate_pair as reference

    rng = np.random.default_rng(0)
    fronts = []
    for _ in range(3000):
        la, lb, m = (int(x) for x in rng.integers(1, 200, 3))
        m = max(m, 2)
        (a0, a1), (b0, b1) = truncate_pair(((100, 100 + la), (100 + la, 100 + la + lb)), m, rng)
        assert (a1 - a0, b1 - b0) == reference(la, lb, m)
        assert 100 <= a0 <= a1 <= 100 + la <= b0 <= b1 <= 100 + la + lb
        if la - (a1 - a0) >= 20:
            fronts.append((a0 - 100) / (la - (a1 - a0)))
    assert len(fronts) > 100 and abs(np.mean(fronts) - 0.5) < 0.05  # tokens go from the front or back alike


def test_sop_order_is_not_written_on_the_edges(sample, vocab):
    # ALBERT's point: the order must be learnt from the content. Cut at arbitrary tokens (the earlier chunking),
    # the first segment ended a sentence 85% of the time in order and 17% swapped, and a lookup on four edge
    # features predicted the label 80-89% of the time.
    b, (_, inv, sp) = sample[0], vocab
    orig, n, y = originals(b), b["attention_mask"].sum(1), b["sop_label"]
    rows = np.arange(len(n))
    sep = np.argmax(orig == sp["sep"], axis=1)
    final = np.array([t in (".", "!", "?", "…", '"', "'", ")") for t in map(inv.get, range(len(inv)))])
    cont = np.array([t.startswith("##") for t in map(inv.get, range(len(inv)))])
    features = np.stack([final[orig[rows, sep - 1]], final[orig[rows, n - 2]], cont[orig[:, 1]],
                         cont[orig[rows, sep + 1]]], 1) @ np.array([1, 2, 4, 8])
    ends = final[orig[rows, sep - 1]]
    assert abs(ends[y == 0].mean() - ends[y == 1].mean()) < 0.15
    half = len(y) // 2
    table = {c: y[:half][features[:half] == c].mean() > 0.5 for c in np.unique(features[:half])}
    accuracy = np.mean([table.get(c, False) == bool(t) for c, t in zip(features[half:], y[half:])])
    assert accuracy < 0.6


def test_sop_order_is_not_written_on_the_edges_of_one_sentence_documents(tmp_path):
    """Documents of one sentence (a comment each) are split inside it, and long sentences are cut into units: cut at
    any token, the in-order second segment began with a '##' piece 47% of the time and the swapped one 2%, so
    that one token told the label 73% of the time. Cut at word starts, neither edge tells it."""
    vocab = wikinews_vocab(tmp_path, 3000, 4000)
    comments = [line for line in text_lines("unlabeled_comments_5.txt", 0, 2000) if line.strip()]
    (tmp_path / "c.txt").write_text("\n\n".join(comments) + "\n", encoding="utf-8")
    out = str(tmp_path / "shards")
    cpd.main(["--input_files", str(tmp_path / "c.txt"), "--vocab_file", vocab, "--output_dir", out,
              "--sentence_splitter", "none", "--num_workers", "1"])
    ds = PretrainingDataset(out, max_seq_length=L, seed=1)
    inv = {i: t for t, i in tokenization.load_vocab(vocab).items()}
    y, piece = [], []
    for i in range(len(ds)):
        item = ds[i]
        orig = originals(item)
        y.append(int(item["sop_label"]))
        piece.append(inv[int(orig[int(np.argmax(item["token_type_ids"]))])].startswith("##"))
    y, piece = np.array(y), np.array(piece)
    assert len(y) > 1000 and abs(piece[y == 0].mean() - piece[y == 1].mean()) < 0.05
    assert np.mean(np.where(piece, 0, 1) == y) < 0.56


def test_masked_fraction_and_budget(shards, sample):
    b = sample[0]
    real = b["attention_mask"].sum(1) - 3
    pred = (b["mlm_labels"] != IGNORE_INDEX).sum(1)
    budget = np.minimum(20, np.maximum(1, np.floor(0.15 * real + 0.5)))
    assert (pred <= budget).all()
    assert (pred == budget).mean() > 0.9
    assert pred.sum() / real.sum() == pytest.approx(0.15, abs=0.01)
    small = PretrainingDataset(shards, max_seq_length=L, max_predictions_per_seq=5, seed=7)
    counts = np.array([(small[i]["mlm_labels"] != IGNORE_INDEX).sum() for i in range(300)])
    assert counts.max() == 5 and (counts == 5).mean() > 0.8
    # mlm_positions: exactly the predicted positions, in order, then [CLS] (position 0, never predicted)
    for i in range(300):
        it = small[i]
        where = np.flatnonzero(it["mlm_labels"] != IGNORE_INDEX)
        assert it["mlm_positions"].shape == (5,) and it["mlm_labels"][0] == IGNORE_INDEX
        assert np.array_equal(it["mlm_positions"], np.concatenate([where, np.zeros(5 - len(where), np.int64)]))


def test_80_10_10(sample, vocab):
    b, (_, _, sp) = sample[0], vocab
    m = b["mlm_labels"] != IGNORE_INDEX
    inp, lab = b["input_ids"][m], b["mlm_labels"][m]
    assert len(lab) > 20000
    assert (inp == sp["mask"]).mean() == pytest.approx(0.8, abs=0.03)
    assert (inp == lab).mean() == pytest.approx(0.1, abs=0.03)
    assert ((inp != lab) & (inp != sp["mask"])).mean() == pytest.approx(0.1, abs=0.03)


def test_ngram_lengths(sample):
    spans = [s for ex in sample[1] for s in ex]
    drawn = np.bincount([d for *_, d in spans], minlength=4)[1:] / len(spans)
    assert np.abs(drawn - P_NGRAM).max() < 0.02, drawn
    # a drawn length is only shortened when the rest of the budget cannot hold it: rare, and never lengthened
    assert all(n <= d for *_, n, d in spans)
    assert np.mean([n < d for *_, n, d in spans]) < 0.1
    realised = np.bincount([n for *_, n, _ in spans], minlength=4)[1:] / len(spans)
    assert np.abs(realised - P_NGRAM).max() < 0.06, realised


def test_ngram_lengths_realised_when_budget_is_loose():
    rng = np.random.default_rng(0)
    got = []
    for _ in range(300):
        unit_len = rng.integers(1, 4, size=400)
        contiguous = rng.random(399) > 0.02
        got += [n for _, n, _ in choose_spans(unit_len, contiguous, 60, 3, rng)]
    realised = np.bincount(got, minlength=4)[1:] / len(got)
    assert np.abs(realised - P_NGRAM).max() < 0.03, realised


def test_span_starts_are_uniform_among_those_that_fit():
    # units of 1-3 tokens and a budget of 2: a unigram may start at the 1- and 2-token units, a bigram only at
    # units 0 and 5 (1 + 1 tokens). Both the rejection draw and the listing fallback must give uniform starts.
    unit_len = np.array([1, 1, 3, 2, 3, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 2])
    contiguous = np.ones(len(unit_len) - 1, bool)
    rng = np.random.default_rng(0)
    first = {}
    for _ in range(6000):
        s, n, _ = choose_spans(unit_len, contiguous, 2, 2, rng)[0]
        first[n, s] = first.get((n, s), 0) + 1
    fits = {1: [0, 1, 3, 5, 6, 15], 2: [0, 5]}
    assert sorted(first) == sorted((n, s) for n in fits for s in fits[n])
    for n, starts in fits.items():
        counts = np.array([first[n, s] for s in starts])
        assert np.abs(counts / counts.sum() - 1 / len(starts)).max() < 0.03, (n, counts)
    # p(n) ~ 1/n: a bigram is drawn a third of the time and always fits
    assert sum(first[2, s] for s in fits[2]) / 6000 == pytest.approx(1 / 3, abs=0.03)


def test_special_tokens_never_masked_or_predicted(sample, vocab):
    b, (v, _, sp) = sample[0], vocab
    special = np.array(sorted({i for t, i in v.items() if t.startswith("[") and t.endswith("]")}))
    assert not np.isin(b["mlm_labels"], special).any()
    orig = originals(b)
    at_special = np.isin(orig, special)
    assert (b["input_ids"][at_special] == orig[at_special]).all()  # [CLS]/[SEP]/[UNK]/[PAD] left as they are
    m = b["mlm_labels"] != IGNORE_INDEX
    replaced = b["input_ids"][m & (b["input_ids"] != orig)]
    assert not np.isin(replaced[replaced != sp["mask"]], special).any()  # random tokens are never specials


def continuation_mask(orig, inv, sep_id):
    """True at pieces that continue the word of the previous piece (segment starts excluded)."""
    is_cont = np.vectorize(lambda i: inv[int(i)].startswith("##") and len(inv[int(i)]) > 2)(orig)
    sep1 = (orig == sep_id).argmax(1)
    is_cont[:, 1] = False
    is_cont[np.arange(len(orig)), sep1 + 1] = False
    return is_cont


def test_whole_words_are_never_split(shards, sample, vocab):
    b, (_, inv, sp) = sample[0], vocab
    orig = originals(b)
    masked = b["mlm_labels"] != IGNORE_INDEX
    cont = continuation_mask(orig, inv, sp["sep"])
    assert cont.sum() > 10000
    prev = np.roll(masked, 1, axis=1)
    assert (masked[cont] == prev[cont]).all()
    # control: with single-piece units the same check fails, so it has power
    pieces = PretrainingDataset(shards, max_seq_length=L, whole_word=False, seed=7)
    rows = [pieces[i] for i in range(300)]
    pb = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    pm = pb["mlm_labels"] != IGNORE_INDEX
    pc = continuation_mask(originals(pb), inv, sp["sep"])
    assert (pm[pc] != np.roll(pm, 1, axis=1)[pc]).any()


def corpus_order_pairs(b):
    """(earlier segment, later segment) of each row, in corpus order according to its sop_label."""
    orig = originals(b)
    n = b["attention_mask"].sum(1)
    for row in range(len(n)):
        sep1 = int(np.argmax(orig[row] == orig[row, n[row] - 1]))
        first, second = orig[row, 1:sep1], orig[row, sep1 + 1:n[row] - 1]
        yield (second, first) if b["sop_label"][row] else (first, second)


def occurrences(stream: bytes, seq: np.ndarray):
    needle = seq.astype("<u2").tobytes()
    pos = stream.find(needle)
    while pos >= 0:
        if pos % 2 == 0:
            yield pos // 2
        pos = stream.find(needle, pos + 1)


def test_sop_pairs_against_the_corpus_order(sample, corpus):
    b = sample[0]
    assert b["sop_label"].mean() == pytest.approx(0.5, abs=0.04)
    ids, unit_set, doc_bounds = corpus
    stream = ids.astype("<u2").tobytes()
    same_doc = lambda start, end: not ((doc_bounds > start) & (doc_bounds < end)).any()  # noqa: E731
    checked = collections.Counter()
    for row, (earlier, later) in enumerate(corpus_order_pairs(b)):
        if row % 7:
            continue
        ok = False
        if b["attention_mask"][row].sum() < L:  # not truncated: one stretch of text, cut at a unit boundary
            for start in occurrences(stream, np.concatenate([earlier, later])):  # the corpus repeats passages
                cut, end = start + len(earlier), start + len(earlier) + len(later)
                ok |= same_doc(start, end) and (cut in unit_set or not any(start < u < end for u in unit_set))
        else:  # truncated: each half is a stretch of the document, the earlier one first (a gap between them)
            for start in occurrences(stream, earlier):
                after = start + len(earlier)
                ok |= any(same_doc(start, q + len(later)) for q in occurrences(stream, later) if q >= after)
        assert ok, f"row {row}: segments are not text of one document in the order the label says"
        checked[int(b["sop_label"][row]), bool(b["attention_mask"][row].sum() < L)] += 1
    assert min(checked.values()) > 15 and len(checked) == 4


def test_determinism_epochs_and_seeds(shards, ds):
    again = PretrainingDataset(shards, max_seq_length=L, seed=7)
    idx = list(range(0, int(len(ds) * 0.9), 37))  # another epoch or seed chunks into a slightly different count
    first = {i: ds[i] for i in idx}
    for i in reversed(idx):  # access order does not matter
        assert all(np.array_equal(again[i][k], first[i][k]) for k in first[i])
    again.set_epoch(1)
    e1 = {i: again[i] for i in idx}
    assert sum(np.array_equal(e1[i]["input_ids"], first[i]["input_ids"]) for i in idx) < len(idx) // 10
    again.set_epoch(0)
    assert all(np.array_equal(again[i]["mlm_labels"], first[i]["mlm_labels"]) for i in idx)
    other = PretrainingDataset(shards, max_seq_length=L, seed=8)
    assert sum(np.array_equal(other[i]["input_ids"], first[i]["input_ids"]) for i in idx) < len(idx) // 10


def test_without_sop_the_same_pairs_stay_in_order(shards, ds):
    plain = PretrainingDataset(shards, max_seq_length=L, seed=7, sop=False)
    swapped = 0
    for i in range(0, len(ds), 7):
        a, b = ds[i], plain[i]
        assert b["sop_label"] == 0
        if a["sop_label"] == 0:  # an unswapped pair: same segments, same masks, bit for bit
            assert all(np.array_equal(a[k], b[k]) for k in a)
            continue
        n = int(a["attention_mask"].sum())
        if n == L:  # truncated after the swap: which half loses tokens depends on the order
            continue
        swapped += 1  # a swapped one comes back in corpus order: B | A -> A | B, the same tokens
        assert b["attention_mask"].sum() == n
        real = lambda x: np.where(x["mlm_labels"] >= 0, x["mlm_labels"], x["input_ids"])[:n]  # noqa: E731
        sep_a, sep_b = np.flatnonzero(real(a) == plain.sep_id)[0], np.flatnonzero(real(b) == plain.sep_id)[0]
        first_a, second_a = real(a)[1:sep_a], real(a)[sep_a + 1:n - 1]
        assert np.array_equal(real(b)[1:sep_b], second_a) and np.array_equal(real(b)[sep_b + 1:n - 1], first_a)
    assert swapped > 10


def test_new_segment_boundaries_every_epoch(sample):
    b, n_epoch0 = sample[0], len(sample[1]) // 2
    pairs = list(corpus_order_pairs(b))
    cuts = [{np.concatenate(p).tobytes(): len(p[0]) for p in half} for half in (pairs[:n_epoch0], pairs[n_epoch0:])]
    same_chunk = set(cuts[0]) & set(cuts[1])
    same_cut = sum(cuts[0][t] == cuts[1][t] for t in same_chunk)
    # chunks after a document's first short target shift; the A|B cut of a chunk seen again is drawn anew (among
    # its few unit boundaries, so it often falls on the same one)
    assert len(same_chunk) < 0.6 * n_epoch0 and same_cut < 0.85 * len(same_chunk)


def test_rank_split_is_the_interleaving_of_global_batches(shards, ds):
    ranks = [PretrainingDataset(shards, max_seq_length=L, seed=7, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(ds) // 2
    assert ranks[0].num_global_examples == 2 * len(ranks[0])
    B = 8
    one = iter(DataLoader(ds, batch_size=B, shuffle=False, collate_fn=collate_pretraining))
    two = [iter(DataLoader(r, batch_size=B // 2, shuffle=False, collate_fn=collate_pretraining)) for r in ranks]
    for _ in range(3):
        full, halves = next(one), [next(t) for t in two]
        for key in full:
            interleaved = torch.stack([halves[0][key], halves[1][key]], 1).flatten(0, 1)
            assert torch.equal(full[key], interleaved)
    last = len(ranks[1]) - 1
    assert all(np.array_equal(ranks[1][last][k], ds.example(1 + 2 * last)[k]) for k in ds[0])


@pytest.mark.parametrize("part", ["sentences", "documents"])
def test_a_shard_with_an_empty_sentence_or_document_is_refused(shards, tmp_path, part):
    """create_pretraining_data.py never writes an empty sentence or document: offsets that repeat (lengths of 0)
    mark a damaged shard, refused up front like offsets out of order."""
    import shutil
    out = tmp_path / "shards"
    shutil.copytree(shards, out)
    name = read_meta(str(out))["shards"][0]["name"]
    path = shard_path(str(out), name, part)
    off = np.load(path)
    off[2] = off[1]
    np.save(path, off)
    with pytest.raises(ValueError, match="offsets that do not rise"):
        PretrainingDataset(str(out), max_seq_length=L, seed=7)


def test_chunk_documents_follows_the_rule_document_by_document():
    """With no short targets the chunking draws nothing: every document's chunks match a plain walk over it, in
    rounds over all documents and in the per-document loop that finishes the last long ones alike."""
    rng = np.random.default_rng(0)
    gaps = rng.integers(1, 40, 3000)
    gaps[rng.choice(3000, 300, replace=False)] = rng.integers(126, 250, 300)  # units past the target: two at least
    gaps[rng.choice(3000, 100, replace=False)] = 1  # one-token units: some one-unit documents too short to keep
    bounds = np.cumsum(np.concatenate([[0], gaps]))
    cuts = np.sort(np.concatenate([rng.choice(np.arange(1, 2000), 400, replace=False), [2001]]))
    first, last = np.concatenate([[0], cuts]), np.concatenate([cuts, [3000]])  # the last document: 999 units
    want = []
    for i, u1 in zip(first.tolist(), last.tolist()):
        if u1 - i == 1 and bounds[u1] - bounds[i] >= 2:
            want.append((bounds[i], bounds[u1]))
        while u1 - i >= 2:
            j = i + 2
            while j < u1 and bounds[j] < bounds[i] + 125:
                j += 1
            j = u1 if u1 - j == 1 else j
            want.append((bounds[i], bounds[j]))
            i = j
    want = [(int(a), int(b)) for a, b in want]
    assert any(b - a == 1 for a, b in zip(first, last) if bounds[b] - bounds[a] < 2)  # dropped ones exist
    for scalar_below in (0, 16, 10**9):  # rounds only, the default, the per-document loop only
        starts, ends = chunk_documents(bounds, first, last, 125, 0.0, np.random.default_rng(1), scalar_below)
        assert list(zip(starts.tolist(), ends.tolist())) == want, scalar_below
    # short targets: the same tiling (each kept document covered by abutting chunks), more and shorter chunks
    kept = sorted({int(np.searchsorted(bounds[first], a, "right")) - 1 for a, _ in want})
    for scalar_below in (0, 10**9):
        s2, e2 = chunk_documents(bounds, first, last, 125, 0.5, np.random.default_rng(1), scalar_below)
        doc = np.searchsorted(bounds[first], s2, "right") - 1
        same = doc[1:] == doc[:-1]
        assert len(s2) > len(want) and sorted(set(doc.tolist())) == kept
        assert (s2[1:][same] == e2[:-1][same]).all()
        assert (s2[np.r_[True, ~same]] == bounds[first[kept]]).all()
        assert (e2[np.r_[~same, True]] == bounds[last[kept]]).all()


def test_mask_tokens_synthetic():
    # [CLS] w1(3 pieces) w2(1) [UNK] w3(2) [SEP] w4(2) w5(1) [SEP] [PAD]
    ids = np.array([2, 10, 11, 12, 13, 1, 14, 15, 3, 16, 17, 18, 3, 0])
    word_start = np.array([1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0], bool)
    maskable = ~np.isin(ids, [0, 1, 2, 3, 4])
    words = [[1, 2, 3], [4], [6, 7], [9, 10], [11]]
    for seed in range(200):
        out, labels, spans = mask_tokens(ids, word_start, maskable, np.random.default_rng(seed), masked_lm_prob=0.5,
                                         max_predictions=4, max_ngram=3, whole_word=True, mask_id=4,
                                         random_ids=np.arange(5, 40))
        m = labels != IGNORE_INDEX
        assert 1 <= m.sum() <= 4 and not m[~maskable].any()
        assert all(m[w].all() or not m[w].any() for w in words)
        assert (labels[m] == ids[m]).all() and (out[~m] == ids[~m]).all()
        for a, b, n, _ in spans:  # spans never straddle [UNK] or [SEP]
            assert maskable[a:b].all()
    out, labels, spans = mask_tokens(ids, word_start, maskable, np.random.default_rng(0), masked_lm_prob=0.15,
                                     max_predictions=20, max_ngram=1, whole_word=False, mask_id=4,
                                     random_ids=np.arange(5, 40), num_real_tokens=10)
    assert (labels != IGNORE_INDEX).sum() == 2 and all(b - a == 1 for a, b, _, _ in spans)


def test_a_word_piece_after_an_unmaskable_token_starts_its_own_unit():
    """A continuation piece right after [UNK] (w1 [UNK] ##w2, word_start unset on ##w2) is a unit of its own: a
    whole-word span never reaches across the [UNK], which stays unpredicted however the spans fall."""
    ids = np.array([2, 10, 1, 11, 3])  # [CLS] w1 [UNK] ##w2 [SEP]
    word_start = np.array([1, 1, 1, 0, 1], bool)
    maskable = ~np.isin(ids, [0, 1, 2, 3, 4])
    for seed in range(20):
        _, labels, spans = mask_tokens(ids, word_start, maskable, np.random.default_rng(seed), masked_lm_prob=1.0,
                                       max_predictions=4, max_ngram=3, whole_word=True, mask_id=4,
                                       random_ids=np.arange(5, 40))
        assert (labels != IGNORE_INDEX).tolist() == [False, True, False, True, False]
        assert sorted((a, b) for a, b, _, _ in spans) == [(1, 2), (3, 4)]


def test_random_replacements_draw_from_every_id_given():
    """The 10% random replacements come uniformly from random_ids, its last id included."""
    ids = np.arange(10, 110)
    word_start, maskable = np.ones(100, bool), np.ones(100, bool)
    seen = collections.Counter()
    for seed in range(100):
        out, labels, _ = mask_tokens(ids, word_start, maskable, np.random.default_rng(seed), masked_lm_prob=0.5,
                                     max_predictions=50, max_ngram=1, whole_word=False, mask_id=4,
                                     random_ids=np.arange(5, 8))
        changed = (labels != IGNORE_INDEX) & (out != 4) & (out != ids)
        seen.update(out[changed].tolist())
    assert set(seen) == {5, 6, 7} and min(seen.values()) > 0.2 * sum(seen.values())


def test_short_targets_follow_albert_short_seq_prob():
    """With prob short_seq_prob a chunk's target is uniform in [2, max_tokens] (ALBERT's rule), else max_tokens: one
    long document of one-token units, 2M tokens, so the shares are measured, not guessed."""
    def lengths(short_seq_prob, max_tokens=125, n=2_000_000):
        starts, ends = chunk_documents(np.arange(n + 1), np.array([0]), np.array([n]), max_tokens, short_seq_prob,
                                       np.random.default_rng(0))
        return (ends - starts)[:-1]  # the last chunk takes the document's tail
    chunks = lengths(0.1)
    short = chunks[chunks < 125]
    assert abs(len(short) / len(chunks) - 0.1 * 123 / 124) < 0.01  # a draw of 125 itself is not short
    assert short.min() == 2 and abs(short.mean() - 63) < 4  # uniform on [2, 124]
    assert (lengths(0.0) == 125).all()


def test_chunks_order_and_draws_are_new_every_epoch(ds):
    """Each epoch cuts and orders the chunks anew, and every random choice for example g of epoch e comes from
    default_rng([seed, e, g]) (the module's rule: what makes an epoch's examples independent of the loader)."""
    ds.set_epoch(0)
    first = ds._chunk_start.copy(), ds._order.copy()
    ds.set_epoch(1)
    try:
        assert not np.array_equal(first[0], ds._chunk_start) and not np.array_equal(first[1][:100], ds._order[:100])
        for g in range(40):
            swapped = ds.segments(g, np.random.default_rng([ds.seed, 1, g]))[3]
            assert int(ds.example(g)["sop_label"]) == int(swapped)
    finally:
        ds.set_epoch(0)

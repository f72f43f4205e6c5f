"""Dynamic n-gram whole-word masking of one sequence (ALBERT-style spans, p(n) ~ 1/n; 80/10/10 per span).

    out, labels, spans = mask_tokens(input_ids, word_start, maskable, np.random.default_rng(0), masked_lm_prob=0.15,
                                     max_predictions=20, max_ngram=3, whole_word=True, mask_id=4,
                                     random_ids=np.arange(5, 32000))

Free of dataset state, so it is tested on synthetic ids; pretraining_data.PretrainingDataset calls it per example.
"""
from __future__ import annotations

import bisect
import functools

import numpy as np

IGNORE_INDEX = -100


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

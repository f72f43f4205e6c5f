"""Optional Korean morphological analyser backend (kiwipiepy).

The analyser is an optional dependency: everything else in the project works without it, and asking for
it without the package installed raises MissingAnalyzerError with the install command.

    from morphology import load_analyzer
    kiwi = load_analyzer("kiwi")
    kiwi.morphemes("서울에서 열린")   # [(0, 2, 'NNP'), (2, 4, 'JKB'), (5, 7, 'VV'), (6, 7, 'ETM')]

It also holds the QA answer-boundary post-processing built on it (`trim_answer`, `postprocess_predictions`):

    from morphology import load_analyzer, trim_answer
    trim_answer("세종대왕이다", load_analyzer())   # '세종대왕'
"""
from __future__ import annotations

import functools
import re

import numpy as np

from tokenization import nfc_with_spans, original_offsets

ANALYZERS = ("kiwi",)
INSTALL_HINT = {"kiwi": "pip install kiwipiepy"}


class MissingAnalyzerError(RuntimeError):
    pass


_UNIT_SYMBOL = re.compile(r"[%‰℃℉°\u3380-\u33ff]")


def _unit_symbols_as_nouns(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), "NNB") for m in _UNIT_SYMBOL.finditer(text)]


def _original_morphemes(tokens, spans) -> list[tuple[int, int, str]]:
    """kiwi's tokens of an NFC text as (start, end, tag) in the text it was made from (spans: nfc_with_spans';
    None, as for nearly all text: the same text, no mapping)."""
    if spans is None:
        return [(t.start, t.start + t.len, t.tag) for t in tokens]
    offsets = np.array([(t.start, t.start + t.len) for t in tokens], dtype=np.int64).reshape(-1, 2)
    return [(int(a), int(b), t.tag) for (a, b), t in zip(original_offsets(offsets, spans), tokens)]


class KiwiAnalyzer:
    """Thin wrapper so the rest of the code sees (start, end, tag) spans over the original string."""

    name = "kiwi"

    def __init__(self):
        try:
            from kiwipiepy import Kiwi
        except ImportError as e:
            raise MissingAnalyzerError(
                f"the 'kiwi' analyser needs kiwipiepy: run `{INSTALL_HINT['kiwi']}`") from e
        self._kiwi = Kiwi()

    def morphemes(self, text: str) -> list[tuple[int, int, str]]:
        """Morphemes of `text` as (char_start, char_end, Sejong POS tag), in order.

        Spans index the original string. Contracted forms share characters (열린 = 열리 + ㄴ), so spans
        may overlap; callers that need a partition should use `boundaries`.
        """
        composed, spans = nfc_with_spans(text)  # see morphemes_batch
        # one text: kiwi's plain call (its batch call sets up a pipeline, several times slower for one word)
        return _original_morphemes(self._kiwi.tokenize(composed), spans) if composed.strip() else []

    def morphemes_batch(self, texts, units_as_nouns: bool = False) -> list[list[tuple[int, int, str]]]:
        """`morphemes` for many texts at once (kiwi pipelines a batch, which is several times faster).

        units_as_nouns: tag unit symbols (% ℃ ㎞ ...) as bound nouns (NNB) before analysis.  Kiwi otherwise reads
        the particle after them as something else (50%를 -> 르/NNG + ㄹ/JKO, 50%가 -> 가/VV + 어/EC).
        """
        # kiwi reads composed Hangul only (a decomposed word comes back as one unknown noun, 서울에서 untrimmed):
        # it analyses the NFC text, and the offsets are mapped back to the text given
        composed = [nfc_with_spans(t) for t in texts]
        out: list[list[tuple[int, int, str]]] = [[] for _ in composed]
        todo = [i for i, (t, _) in enumerate(composed) if t.strip()]
        pretokenized = _unit_symbols_as_nouns if units_as_nouns else None
        for i, toks in zip(todo, self._kiwi.tokenize((composed[i][0] for i in todo), pretokenized=pretokenized)):
            out[i] = _original_morphemes(toks, composed[i][1])
        return out

    def boundaries(self, text: str) -> list[int]:
        """Sorted character offsets (excluding 0 and len(text)) where the text can be cut between morphemes.

        A cut must not fall inside any morpheme: contractions share a syllable (열린 = 열리 + ㄴ, spans 0-2 and
        1-2), and cutting at 1 would split the verb stem 열리 in half.
        """
        spans = self.morphemes(text)
        starts = {s for s, _, _ in spans}
        return sorted(c for c in starts if 0 < c < len(text) and not any(s < c < e for s, e, _ in spans))

    def split_sentences(self, text: str) -> list[str]:
        return [s.text for s in self._kiwi.split_into_sents(text)] if text.strip() else []


@functools.lru_cache(maxsize=None)
def load_analyzer(name: str = "kiwi"):
    """Return a shared analyser instance (loading the model takes a few seconds, so it is cached)."""
    if name not in ANALYZERS:
        raise ValueError(f"unknown morphological analyser {name!r}; choose one of {', '.join(ANALYZERS)}")
    return KiwiAnalyzer()


def analyzer_available(name: str = "kiwi") -> bool:
    try:
        load_analyzer(name)
        return True
    except MissingAnalyzerError:
        return False


# ----------------------------------------------------------------------------------------------------------------
# answer-boundary post-processing for extractive QA
#
# A model that never saw morpheme boundaries tends to stop its span at the end of the whitespace word, dragging in
# what Korean glues onto a noun: particles (서울에서), the copula with its endings (세종대왕이다), stray punctuation
# (연산군)을).  The tag rules below were chosen on the KorQuAD 1.0 dev set with bench/bench_morph_korquad.py.

# Morphemes that can be dropped from the end of an answer (kiwi's Sejong tags, '-I'/'-R' irregularity marks removed):
# J*: particles; E*: endings; VCP/VCN: the copula 이다/아니다; XSV: the verb-forming 하/되 of 거부했으며, 위조된
# (annotators mark the noun); Z_CODA: the ㄴ/ㄹ kiwi splits off a contracted particle (한국엔).  Two exceptions
# are decided by the morpheme before (see _droppable).
STRIP_TAG_PREFIXES = ("J", "E")
STRIP_TAGS = frozenset({"VCP", "VCN", "XSV", "Z_CODA"})
# A trimmed answer may not end on these: cutting 먹었다 down to 먹 or 아름다운 down to 아름답 makes a non-answer.
# ETN may end one: it turns a verb into a noun (찾기, 깜빡거림).
BAD_FINAL_PREFIXES = ("V", "E", "J")
BAD_FINAL_TAGS = frozenset({"XSV", "XSA", "XSM", "Z_CODA"})
_VERB_STEMS = frozenset({"VV", "VA", "VX"})
_PREDICATES = frozenset({"VV", "VA", "VX", "VCP", "VCN", "XSV", "XSA"})

_CLOSE_TO_OPEN = {")": "(", "]": "[", "}": "{", "》": "《", "〉": "〈", ">": "<", "」": "「", "』": "『", "】": "【",
                  "〕": "〔", "’": "‘", "”": "“"}
_OPEN_TO_CLOSE = {o: c for c, o in _CLOSE_TO_OPEN.items()}
_SYMMETRIC_QUOTES = frozenset("\"'")
# Punctuation that never starts or ends a KorQuAD answer (no gold answer of the dev set ends in a hyphen or tilde,
# but a leading one can be a minus sign).
_LEAD_PUNCT = frozenset(".,;:!?·…、。")
_TRAIL_PUNCT = _LEAD_PUNCT | frozenset("-~/–—")
# Invisible format characters that str.isspace() does not count (zero-width space/non-joiner/joiner, word joiner,
# BOM); web-scraped contexts carry them, and one left at a span's edge makes an exact match fail invisibly.
_INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff")


def _blank(ch: str) -> bool:
    return ch.isspace() or ch in _INVISIBLE


def _base_tag(tag: str) -> str:
    return tag.split("-", 1)[0]


def _droppable(tag: str, prev: str) -> bool:
    """May a morpheme tagged `tag`, preceded by one tagged `prev` ("" at the start), be trimmed off an answer?"""
    tag, prev = _base_tag(tag), _base_tag(prev)
    if not (tag.startswith(STRIP_TAG_PREFIXES) or tag in STRIP_TAGS):
        return False
    # 찾기, 깜빡임, 공부하기 (하/XSV): a nominalised verb is the answer; 광년임 (이/VCP) is not
    if tag == "ETN" and prev in _VERB_STEMS | {"XSV", "XSA"}:
        return False
    # an ending can only follow a predicate or another ending; glued straight onto a Hangul noun (치찰+음/EF) it is
    # kiwi mis-splitting a name.  Symbols and foreign words are fine: 《...》는 reads the particle as an ending
    if tag.startswith("E") and prev and not (prev in _PREDICATES or prev.startswith(("E", "S", "W"))):
        return False
    return True


def _can_end_answer(tag: str) -> bool:
    tag = _base_tag(tag)
    return tag == "ETN" or not (tag.startswith(BAD_FINAL_PREFIXES) or tag in BAD_FINAL_TAGS)


def _match_brackets(text: str, s: int, e: int) -> tuple[list[int], dict[int, int]]:
    """Offsets of openers left unclosed inside [s, e), and {closer offset: its opener offset}."""
    stacks: dict[str, list[int]] = {}
    opener_of: dict[int, int] = {}
    for i in range(s, e):
        ch = text[i]
        if ch in _OPEN_TO_CLOSE:
            stacks.setdefault(ch, []).append(i)
        elif ch in _CLOSE_TO_OPEN and stacks.get(_CLOSE_TO_OPEN[ch]):
            opener_of[i] = stacks[_CLOSE_TO_OPEN[ch]].pop()
    return sorted(i for st in stacks.values() for i in st), opener_of


def _strip_edges(text: str, s: int, e: int, drop_parenthetical: bool) -> tuple[int, int]:
    """Drop whitespace (zero-width too), edge punctuation and unmatched brackets/quotes; balanced ones (《토지》)
    stay."""
    while s < e:
        unclosed, opener_of = _match_brackets(text, s, e)
        first, last = text[s], text[e - 1]
        # 'Boney M.', 'Jai Ho!': sentence punctuation right after a Latin letter is usually part of a name
        latin_before = e - 2 >= s and text[e - 2].isascii() and text[e - 2].isalpha()
        if _blank(first) or first in _LEAD_PUNCT or first in _CLOSE_TO_OPEN:
            s += 1
        elif unclosed:  # the span ran into a bracket that closes beyond it: 김경숙(당시 -> 김경숙
            if unclosed[0] == s:
                s += 1
            else:
                e = unclosed[0]
        elif _blank(last) or (last in _TRAIL_PUNCT and not (last in ".!?" and latin_before)):
            e -= 1
        elif last in _CLOSE_TO_OPEN and e - 1 not in opener_of:
            e -= 1
        elif last in _SYMMETRIC_QUOTES and text.count(last, s, e) % 2:
            e -= 1
        elif first in _SYMMETRIC_QUOTES and text.count(first, s, e) % 2:
            s += 1
        elif (drop_parenthetical and last == ")" and text[s:opener_of[e - 1]].strip()
              and "(" not in text[s:opener_of[e - 1]]):
            # KorQuAD annotators leave a trailing gloss out of the answer about 5 times in 6: 이유원(李裕元) -> 이유원
            e = opener_of[e - 1]
        else:
            break
    return s, e


def _strip_suffix(morphs: list[tuple[int, int, str]], s: int, e: int) -> int:
    """New end of the span [s, e) after dropping its trailing run of particles/endings, or e if no safe cut exists.

    A cut at c is safe only if a morpheme starts at c and every morpheme kept ends by c, so a syllable shared by two
    morphemes (열린 = 열리 + ㄴ, 했 = 하 + 었) is never split, and the morpheme left at the end must be one that can
    end an answer (a noun, number, foreign word, closing bracket, ...).  The longest safe cut wins.
    """
    # every morpheme overlapping the span, clipped to its start: one begun before s (a name kiwi reads across a space,
    # 메이지 천황, whose span was clipped to the raw span's start) is still the noun the particle follows
    inside = [(max(m[0], s), m[1], m[2]) for m in morphs if m[0] < e and m[1] > s]
    run = len(inside)
    while run > 0 and _droppable(inside[run - 1][2], inside[run - 2][2] if run >= 2 else ""):
        run -= 1
    if run == len(inside) or run == 0:  # nothing to drop, or nothing but particles/endings
        return e
    for i in range(run, len(inside)):
        c = inside[i][0]
        if c <= s:
            continue
        kept = inside[:i]
        if any(m[1] > c for m in kept):  # a kept morpheme shares the syllable at c
            continue
        if not _can_end_answer(max(kept, key=lambda m: (m[1], m[0]))[2]):
            continue
        return c
    return e


def _trim_offsets(text: str, morphs: list[tuple[int, int, str]], drop_parenthetical: bool) -> tuple[int, int]:
    s, e = 0, len(text)
    while True:
        s2, e2 = _strip_edges(text, s, e, drop_parenthetical)
        e2 = _strip_suffix(morphs, s2, e2)
        if (s2, e2) == (s, e):
            break
        s, e = s2, e2
    return s, e


def _context_window(context: str, start: int, end: int, words: int,
                    max_chars: int | None = None) -> tuple[int, int]:
    """Character range of `context` covering [start, end) and whitespace words either side: words + 1 steps out
    each way, the first finishing a word the span cuts into. So a span inside a word gets `words` more words on
    that side, one that begins (or ends) at a word boundary `words + 1`; CONTEXT_WORDS was measured as counted
    here. `max_chars` caps each side, as a text without spaces would otherwise be taken whole."""
    lo = start
    for _ in range(words + 1):
        while lo > 0 and context[lo - 1].isspace():
            lo -= 1
        while lo > 0 and not context[lo - 1].isspace():
            lo -= 1
    hi = end
    for _ in range(words + 1):
        while hi < len(context) and context[hi].isspace():
            hi += 1
        while hi < len(context) and not context[hi].isspace():
            hi += 1
    if max_chars is not None:
        lo, hi = max(lo, start - max_chars), min(hi, end + max_chars)
    return lo, hi


CONTEXT_WORDS = 2  # words of context analysed on each side of a span (see bench/bench_morph_korquad.py)
# Kiwi's time grows faster than linearly in a run without spaces (40,000 characters: 12.6 s for one answer).
# On KorQuAD 1.0 dev the widest side of a CONTEXT_WORDS window is 42 characters, so this cap never binds there.
CONTEXT_CHARS = 48


def trim_answers(items, analyzer, context_words: int = CONTEXT_WORDS, drop_parenthetical: bool = True) -> list[str]:
    """Batch form of `trim_answer`: items are (text, context, start) with context/start None when unknown."""
    items = [(t, c, st) for t, c, st in items]
    windows, shifts = [], []
    for text, context, start in items:
        if context is None or start is None:
            windows.append(text)
            shifts.append(0)
            continue
        if not (0 <= start <= len(context) and context[start:start + len(text)] == text):
            raise ValueError(f"answer {text!r} is not found at offset {start} of its context")
        lo, hi = _context_window(context, start, start + len(text), context_words, CONTEXT_CHARS)
        windows.append(context[lo:hi])
        shifts.append(start - lo)
    out = []
    for (text, _, _), shift, morphs in zip(items, shifts, analyzer.morphemes_batch(windows, units_as_nouns=True)):
        # morphemes re-based onto the span; ones overlapping its start are clipped so offsets stay inside it
        rel = [(max(ms - shift, 0), me - shift, tag) for ms, me, tag in morphs
               if me - shift > 0 and ms - shift < len(text)]
        s, e = _trim_offsets(text, rel, drop_parenthetical)
        trimmed = text[s:e]
        out.append(trimmed if trimmed.strip() else text)
    return out


def trim_answer(text: str, analyzer, context: str | None = None, start: int | None = None) -> str:
    """Drop trailing particles/endings and edge punctuation from a predicted answer span.

    `서울에서` -> `서울`, `세종대왕이다` -> `세종대왕`, `연산군)을` -> `연산군`; balanced `《토지》` and nouns ending in
    particle-like syllables (`한국은행`) are kept.  With `context` and `start` (the span's offset in it) the span is
    analysed together with a few surrounding words, which disambiguates tags.  Never returns an empty string for a
    non-empty input: when nothing sensible is left the raw span comes back.
    """
    return trim_answers([(text, context, start)], analyzer)[0]


def postprocess_predictions(preds: dict[str, str], analyzer, contexts: dict | None = None) -> dict[str, str]:
    """`trim_answer` over {question id: predicted text}; contexts optionally maps ids to (context, start)."""
    contexts = contexts or {}
    ids = list(preds)
    items = [(preds[q], *contexts.get(q, (None, None))) for q in ids]
    return dict(zip(ids, trim_answers(items, analyzer)))

r"""WordPiece tokenisation for Korean BERT vocabularies; `build-vocab` (code in vocab_builder.py) trains one.

    python tokenization.py build-vocab --corpus data/korean_text/boddari/*.txt \
        data/korean_text/unlabeled_comments_5.txt --vocab_size 32000 --output runs/vocab/vocab.txt
    python tokenization.py build-vocab --corpus data/korean_text/unlabeled_comments_5.txt --morph_analyzer kiwi \
        --vocab_size 16000 --output runs/vocab_kiwi/vocab.txt
    python tokenization.py build-vocab --corpus data/korean_text/boddari/wikinews.txt \
        --algorithm sentencepiece --model_type unigram --vocab_size 8000 --output runs/vocab_spm/vocab.txt

`FullTokenizer` (plain Python, the google-research/bert API) and `build_fast_tokenizer` (a tokenizers.Tokenizer,
the hot path: `tok.encode_batch(texts, add_special_tokens=False)`) give identical ids; neither adds [CLS]/[SEP].
Pipeline: drop control characters, whitespace -> space, space out CJK ideographs (Hanja) -> optional lower-casing
-> NFC -> split at whitespace and punctuation -> optional morpheme split -> greedy longest-match-first WordPiece
with "##" continuations (a word that cannot be covered, or is over 100 characters, becomes one [UNK]).

No accent stripping, not even with do_lower_case. BERT's uncased models strip accents by NFD-decomposing and
dropping combining marks; NFD alone turns every Hangul syllable into conjoining jamo, which would miss the NFC
vocab. With NFC after it Hangul would come back whole (jamo are letters, not marks), but every vocab built so far
keeps accented Latin letters (café), whose ids would change: so it stays off, on both paths alike.

Known limitation of the fast path: tokenizers aligns a character composed by NFC with only the first character
it came from, so on decomposed (NFD) input an offset end can stop inside the last syllable's jamo. Starts are
exact, and on NFC input (nearly all real text) so are ends. qa_data tokenises contexts in NFC and maps the
offsets back (nfc_with_spans, original_offsets below); corpus_tasks reads them to tell whether a gap in the text
separates two morphemes (whole-word masking with --morph_analyzer).
"""
from __future__ import annotations

import collections
import functools
import json
import os
import unicodedata

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from fileio import atomic_write, atomic_write_text, read_vocab_lines, run_script

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # the release's order, ids 0-4
SPECIAL_NAMES = ("pad", "unk", "cls", "sep", "mask")
UNK_TOKEN = "[UNK]"
MAX_INPUT_CHARS_PER_WORD = 100

# CJK ideograph blocks, each character becoming its own word. The fast normaliser starts Extension E at U+2B920
# rather than U+2B820; copied so both paths agree (those 256 historic Hanja stay glued to their neighbours).
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
# tokenizers classifies characters with Unicode-9-era tables, `unicodedata` with a newer Unicode. These are the
# code points where the two disagree (found by sweeping every code point through the Rust components; the tests
# repeat the sweep), so the Python path reproduces the fast path exactly: punctuation added after Unicode 9, ...
_FAST_NOT_PUNCT = ((0x61D, 0x61D), (0x9FD, 0x9FD), (0xA76, 0xA76), (0xC77, 0xC77), (0xC84, 0xC84),
                   (0x1B7D, 0x1B7E), (0x2E43, 0x2E4F), (0x2E52, 0x2E5D), (0x10EAD, 0x10EAD), (0x10F55, 0x10F59),
                   (0x10F86, 0x10F89), (0x1144B, 0x1144F), (0x1145A, 0x1145B), (0x1145D, 0x1145D),
                   (0x11660, 0x1166C), (0x116B9, 0x116B9), (0x1183B, 0x1183B), (0x11944, 0x11946),
                   (0x119E2, 0x119E2), (0x11A3F, 0x11A46), (0x11A9A, 0x11A9C), (0x11A9E, 0x11AA2),
                   (0x11C41, 0x11C45), (0x11C70, 0x11C71), (0x11EF7, 0x11EF8), (0x11FFF, 0x11FFF),
                   (0x12FF1, 0x12FF2), (0x16E97, 0x16E9A), (0x16FE2, 0x16FE2), (0x1E95E, 0x1E95F))
_FAST_EXTRA_PUNCT = frozenset({0x166D, 0x111C9})  # ... punctuation in Unicode 9, So / Mn since ...
_FAST_KEPT_FORMAT = frozenset({0x890, 0x891, 0x8E2, 0x110CD, *range(0x13430, 0x13440)})  # ... and format chars


@functools.lru_cache(maxsize=None)
def _clean_char(ch: str) -> str:
    """What the normaliser makes of one character: '' (dropped), ' ', ' ch ' (Hanja) or ch."""
    cp, cat = ord(ch), unicodedata.category(ch)
    if ch in "\t\n\r" or cat in ("Zs", "Zl", "Zp"):
        return " "
    # unassigned code points (Cn) are kept, as the fast normaliser keeps them
    if cp == 0 or cp == 0xFFFD or (cat in ("Cc", "Cf", "Co", "Cs") and cp not in _FAST_KEPT_FORMAT):
        return ""
    if any(lo <= cp <= hi for lo, hi in _CJK_RANGES):
        return f" {ch} "
    return ch


@functools.lru_cache(maxsize=None)
def is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True  # every ASCII non-alphanumeric, as BERT does ($, ^, ` are not Unicode punctuation)
    if cp in _FAST_EXTRA_PUNCT:
        return True
    return unicodedata.category(ch)[0] == "P" and not any(lo <= cp <= hi for lo, hi in _FAST_NOT_PUNCT)


def normalize_text(text: str, do_lower_case: bool = False) -> str:
    """The Python twin of the fast normaliser (BertNormalizer then NFC)."""
    text = "".join(map(_clean_char, text))
    if do_lower_case:
        # character by character like the fast path: str.lower() would turn a word-final capital sigma into ς
        text = text.lower() if "Σ" not in text else "".join(c.lower() for c in text)
    # NFC last, so removing a control character between a jamo and its vowel still yields a composed syllable
    return unicodedata.normalize("NFC", text)


def nfc_with_spans(text: str) -> tuple[str, np.ndarray | None]:
    """(text in NFC, for each of its characters the (start, end) it came from in text); None for text already
    in NFC. Characters that compose (a jamo sequence into a syllable, a letter and its accent) become one span."""
    if unicodedata.is_normalized("NFC", text):
        return text, None
    pieces, spans, start = [], [], 0
    for i in range(1, len(text) + 1):
        # text[i] joins the open piece if it is a combining mark (a later one may still compose with the base,
        # past marks it reorders over) or if composing them differs from composing each alone (Hangul jamo)
        if i < len(text) and (unicodedata.combining(text[i]) or unicodedata.normalize("NFC", text[start:i + 1]) !=
                              unicodedata.normalize("NFC", text[start:i]) + unicodedata.normalize("NFC", text[i])):
            continue
        piece = unicodedata.normalize("NFC", text[start:i])
        pieces.append(piece)
        spans += [(start, i)] * len(piece)
        start = i
    return "".join(pieces), np.asarray(spans, dtype=np.int32).reshape(-1, 2)


def original_offsets(offsets: np.ndarray, spans: np.ndarray | None) -> np.ndarray:
    """[T, 2] character offsets into the NFC text -> into the text it was made from (spans: nfc_with_spans').
    An empty span (a zero-width morpheme; never a token) maps to a point, at the text's end if it starts there."""
    if spans is None or len(offsets) == 0:
        return offsets
    start, end, n = offsets[:, 0], offsets[:, 1], len(spans)
    first = np.where(start < n, spans[np.minimum(start, n - 1), 0], spans[-1, 1])
    last = np.where(end > start, spans[np.clip(end - 1, 0, n - 1), 1], first)  # the span's last character's end
    return np.stack([first, last], axis=1).astype(np.int32)


def split_words(normalized: str) -> list[str]:
    """Whitespace then punctuation split (the BertPreTokenizer) of already normalised text."""
    words = []
    for chunk in normalized.split():
        if chunk.isalnum():  # no punctuation inside: the common case for Korean words
            words.append(chunk)
            continue
        start = 0
        for i, ch in enumerate(chunk):
            if is_punct(ch):
                if start < i:
                    words.append(chunk[start:i])
                words.append(ch)
                start = i + 1
        if start < len(chunk):
            words.append(chunk[start:])
    return words


@functools.lru_cache(maxsize=1 << 20)
def _morph_cuts(analyzer: str, word: str) -> tuple[int, ...]:
    from morphology import load_analyzer
    return (0, *load_analyzer(analyzer).boundaries(word), len(word))


class MorphSplitter:
    """Cuts words again at the morpheme boundaries of an analyser from morphology.py.

    Pieces become separate words (no "##" on the second morpheme); which pieces formed one whitespace word is
    recoverable from the offsets (adjacent pieces with no gap), which is what whole-word masking uses. Each word is
    analysed alone so it is always cut the same way; that lets one process-wide cache, shared by both paths,
    absorb most of the ~0.2 ms an analysis costs. Serves the Python path (`split`) and the fast path
    (`pre_tokenize`: a tokenizers custom pre-tokenizer run after the BertPreTokenizer).
    """

    def __init__(self, name: str = "kiwi"):
        from morphology import load_analyzer
        load_analyzer(name)  # fail here, not inside a tokenizers callback, if it is unknown or not installed
        self.name = name

    def cuts(self, word: str) -> tuple[int, ...]:
        return _morph_cuts(self.name, word)

    def split(self, words: list[str]) -> list[str]:
        return [w[a:b] for w in words for c in (self.cuts(w),) for a, b in zip(c, c[1:])]

    def _split_normalized(self, _index, piece):
        cuts = self.cuts(piece.normalized)
        # slicing a NormalizedString keeps each piece aligned with the original input, so offsets stay right
        return [piece] if len(cuts) == 2 else [piece[a:b] for a, b in zip(cuts, cuts[1:])]

    def pre_tokenize(self, pretok) -> None:
        pretok.split(self._split_normalized)


def fast_pre_tokenizer(morph_analyzer: str | None):
    if not morph_analyzer:
        return pre_tokenizers.BertPreTokenizer()
    # a Sequence accepts the custom component (checked with tokenizers 0.19 and 0.23)
    return pre_tokenizers.Sequence([pre_tokenizers.BertPreTokenizer(),
                                    pre_tokenizers.PreTokenizer.custom(MorphSplitter(morph_analyzer))])


def load_vocab(vocab_file: str) -> collections.OrderedDict:
    """token -> id, id = line number (0-based). Tokens are NFC, read by fileio.read_vocab_lines (whitespace around
    them stripped, as the release's checkpoints were trained with).

    A token listed twice keeps its last id, as in google-research/bert, the release and transformers, whose
    checkpoints were trained with those ids.
    """
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"vocab file not found: {vocab_file}")
    vocab = collections.OrderedDict(
        (unicodedata.normalize("NFC", line), i) for i, line in enumerate(read_vocab_lines(vocab_file)))
    if not vocab:
        raise ValueError(f"vocab file {vocab_file} is empty")
    return vocab


def special_token_ids(vocab, vocab_file: str | None = None) -> dict:
    """{"pad", "unk", "cls", "sep", "mask"} -> id, found by token name (release vocabs order them 0-4)."""
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"vocab {vocab_file or '(given as a dict)'} lacks special token(s): {' '.join(missing)}")
    return {name: vocab[tok] for name, tok in zip(SPECIAL_NAMES, SPECIAL_TOKENS)}


class FullTokenizer:
    """The Python path: same API as google-research/bert's FullTokenizer, same ids as build_fast_tokenizer."""

    def __init__(self, vocab_file: str, do_lower_case: bool = False, morph_analyzer: str | None = None):
        self.vocab = load_vocab(vocab_file)
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        ids = special_token_ids(self.vocab, vocab_file)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[n] for n in SPECIAL_NAMES)
        self.do_lower_case = do_lower_case
        self.morph_analyzer = morph_analyzer
        self._morph = MorphSplitter(morph_analyzer) if morph_analyzer else None
        self._max_len = max(len(t) for t in self.vocab)  # no vocab entry is longer: bounds the greedy search

    def basic_tokenize(self, text: str) -> list[str]:
        words = split_words(normalize_text(text, self.do_lower_case))
        return self._morph.split(words) if self._morph else words

    def wordpiece(self, word: str) -> list[str]:
        if len(word) > MAX_INPUT_CHARS_PER_WORD:
            return [UNK_TOKEN]
        pieces, start = [], 0
        while start < len(word):
            end = min(len(word), start + self._max_len)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            else:  # nothing in the vocab starts here: the whole word is unknown
                return [UNK_TOKEN]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        return [p for w in self.basic_tokenize(text) for p in self.wordpiece(w)]

    def convert_tokens_to_ids(self, tokens) -> list[int]:
        # unknown tokens map to [UNK] (google-research/bert raised KeyError)
        return [self.vocab.get(t, self.unk_id) for t in tokens]

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.inv_vocab[int(i)] for i in ids]


def fast_normalizer(do_lower_case: bool):
    # strip_accents must be given: left as None it follows `lowercase` and would NFD-decompose Hangul
    return normalizers.Sequence([
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                   lowercase=do_lower_case),
        normalizers.NFC()])


def build_fast_tokenizer(vocab_file: str, do_lower_case: bool = False, morph_analyzer: str | None = None):
    """A tokenizers.Tokenizer with the same ids as FullTokenizer and offsets into the original string.

    No post-processor: callers add [CLS]/[SEP]. With morph_analyzer the pre-tokenizer is a Python object, and
    tokenizers can then neither save nor pickle the Tokenizer: multi-process data preparation must call this
    function inside each worker.
    """
    vocab = load_vocab(vocab_file)
    special_token_ids(vocab, vocab_file)
    tok = Tokenizer(models.WordPiece(dict(vocab), unk_token=UNK_TOKEN, continuing_subword_prefix="##",
                                     max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    tok.normalizer = fast_normalizer(do_lower_case)
    tok.pre_tokenizer = fast_pre_tokenizer(morph_analyzer)
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def save_hf_tokenizer(vocab_file: str, out_dir: str, do_lower_case: bool, model_max_length: int):
    """out_dir/tokenizer.json and tokenizer_config.json, for transformers' AutoTokenizer: the fast tokenizer above
    (its NFC step included, which transformers' own BertTokenizer lacks: decomposed Hangul would become [UNK]) with
    [CLS]/[SEP] added as BERT adds them, and inputs cut at the model's positions. Not for morph_analyzer vocabs: a
    Python pre-tokenizer cannot be saved."""
    tok = build_fast_tokenizer(vocab_file, do_lower_case=do_lower_case)  # ValueError: a special token is missing
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    for token in SPECIAL_TOKENS:  # matched whole in the text and never split, as transformers treats them
        tok.add_special_tokens([token])
    # generic fast class: transformers' BertTokenizer would rebuild the pipeline from vocab.txt, without the NFC
    # step; the keys it reads are kept for tools that look for them (accent stripping stays off: it decomposes Hangul)
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "do_lower_case": do_lower_case, "strip_accents": False,
           "tokenize_chinese_chars": True, "model_max_length": model_max_length, "unk_token": UNK_TOKEN,
           "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]",
           "model_input_names": ["input_ids", "token_type_ids", "attention_mask"]}  # the generic class's lack segments
    atomic_write(os.path.join(out_dir, "tokenizer.json"), lambda tmp: tok.save(tmp))
    atomic_write_text(os.path.join(out_dir, "tokenizer_config.json"), json.dumps(cfg, indent=2) + "\n")


def main(argv=None):
    """The build-vocab CLI, whose code lives in vocab_builder.py."""
    import vocab_builder  # imported here: it imports this module
    vocab_builder.main(argv)


if __name__ == "__main__":
    run_script(main)

r"""WordPiece tokenisation for Korean BERT vocabularies, and a vocab builder.

    python tokenization.py build-vocab --corpus data/korean_text/boddari/*.txt \
        data/korean_text/unlabeled_comments_5.txt --vocab_size 32000 --output runs/vocab/vocab.txt
    python tokenization.py build-vocab --corpus data/korean_text/unlabeled_comments_5.txt --morph kiwi \
        --vocab_size 16000 --output runs/vocab_kiwi/vocab.txt
    python tokenization.py build-vocab --corpus data/korean_text/boddari/wikinews.txt \
        --algorithm sentencepiece --model_type unigram --vocab_size 8000 --output runs/vocab_spm/vocab.txt

`FullTokenizer` (plain Python, the google-research/bert API) and `build_fast_tokenizer` (a tokenizers.Tokenizer,
the hot path: `tok.encode_batch(texts, add_special_tokens=False)`) give identical ids; neither adds [CLS]/[SEP].
Pipeline: drop control characters, whitespace -> space, space out CJK ideographs (Hanja) -> optional lower-casing
-> NFC -> split at whitespace and punctuation -> optional morpheme split -> greedy longest-match-first WordPiece
with "##" continuations (a word that cannot be covered, or is over 100 characters, becomes one [UNK]).

No accent stripping, not even with do_lower_case: BERT strips accents by NFD-decomposing and dropping combining
marks, and NFD turns every Hangul syllable into conjoining jamo, so every Korean word would miss the NFC vocab.
Limiting it to Latin letters is possible in Python but not in the fast normaliser, and both paths must agree.

build-vocab trains tokenizers' WordPiece trainer on a starting alphabet it chooses itself (`choose_alphabet`), so
the same corpus and settings give the same vocab.txt, byte for byte, in any process.

Known limitation of the fast path: tokenizers aligns a character composed by NFC with only the first character
it came from, so on decomposed (NFD) input an offset end can stop inside the last syllable's jamo. Starts are
exact, and on NFC input (nearly all real text) so are ends.
"""
from __future__ import annotations

import argparse
import collections
import functools
import io
import itertools
import os
import sys
import tempfile
import unicodedata

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # the release's order, ids 0-4
SPECIAL_NAMES = ("pad", "unk", "cls", "sep", "mask")
UNK_TOKEN = "[UNK]"
MAX_INPUT_CHARS_PER_WORD = 100
SPM_MAX_SENTENCES = 5_000_000  # sentencepiece holds its input in memory; beyond this it samples

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
def _is_punct(ch: str) -> bool:
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


def split_words(normalized: str) -> list[str]:
    """Whitespace then punctuation split (the BertPreTokenizer) of already normalised text."""
    words = []
    for chunk in normalized.split():
        if chunk.isalnum():  # no punctuation inside: the common case for Korean words
            words.append(chunk)
            continue
        start = 0
        for i, ch in enumerate(chunk):
            if _is_punct(ch):
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


def _fast_pre_tokenizer(morph_analyzer: str | None):
    if not morph_analyzer:
        return pre_tokenizers.BertPreTokenizer()
    # a Sequence accepts the custom component (checked with tokenizers 0.19 and 0.23)
    return pre_tokenizers.Sequence([pre_tokenizers.BertPreTokenizer(),
                                    pre_tokenizers.PreTokenizer.custom(MorphSplitter(morph_analyzer))])


def load_vocab(vocab_file: str) -> collections.OrderedDict:
    """token -> id, id = line number (0-based). Tokens are NFC; only the line break is stripped.

    A token listed twice keeps its first id.
    """
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"vocab file not found: {vocab_file}")
    vocab = collections.OrderedDict()
    try:
        with open(vocab_file, encoding="utf-8") as f:  # universal newlines: a CRLF vocab reads the same
            for i, line in enumerate(f):
                vocab.setdefault(unicodedata.normalize("NFC", line.rstrip("\n")), i)
    except UnicodeDecodeError as e:
        raise ValueError(f"vocab file {vocab_file} is not UTF-8 (byte offset {e.start})") from None
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


def _fast_normalizer(do_lower_case: bool):
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
    tok.normalizer = _fast_normalizer(do_lower_case)
    tok.pre_tokenizer = _fast_pre_tokenizer(morph_analyzer)
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


# ----------------------------------------------------------------------------------------------- vocab building

def _check_corpus(files: list[str]) -> None:
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"corpus file not found: {path}")
        if os.path.getsize(path) == 0:
            raise ValueError(f"corpus file {path} is empty")


def _iter_lines(files: list[str], counter: list[int]):
    """Stream the non-blank lines of every file (never a whole file in memory), with a progress bar."""
    from tqdm import tqdm
    with tqdm(total=sum(os.path.getsize(p) for p in files), unit="B", unit_scale=True, mininterval=1.0) as bar:
        for path in files:
            bar.set_description(os.path.basename(path))
            offset = 0
            with open(path, "rb") as f:
                for lineno, raw in enumerate(f, 1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise ValueError(f"corpus file {path} is not UTF-8: invalid byte at line {lineno}, "
                                         f"byte offset {offset + e.start}") from None
                    offset += len(raw)
                    bar.update(len(raw))
                    if line.strip():
                        counter[0] += 1
                        yield line


def _pre_split(lines, do_lower_case: bool, morph: str | None):
    """Words exactly as the fast tokenizer will see them, one list per line."""
    normalizer = _fast_normalizer(do_lower_case)
    pre = _fast_pre_tokenizer(morph)
    for line in lines:
        words = [w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(line))]
        if words:
            yield words


def choose_alphabet(lines, do_lower_case: bool, limit: int) -> tuple[list[str], list[str]]:
    """The trainer's starting pieces, chosen reproducibly: (characters, "##" continuations).

    Characters: the `limit` most frequent in the normalised text, ties broken by code point. Continuations:
    "##c" for each that follows a non-space character somewhere, punctuation excepted (always a word of its
    own). tokenizers' trainer finds these itself, but cuts the alphabet at a count tie in hash-table order and
    numbers continuations in the order it meets them, and merge ties go by number: two builds on the same
    corpus gave different vocabs. A character seen only after punctuation (or split off by --morph) gets a
    continuation it never uses; splitting words exactly here cost 5x the time.
    """
    normalizer = _fast_normalizer(do_lower_case)
    counts, inner = collections.Counter(), set()
    for line in lines:
        text = normalizer.normalize_str(line)
        counts.update(text)
        for word in text.split():
            inner.update(word[1:])
    alphabet = sorted((c for c in counts if not c.isspace()), key=lambda c: (-counts[c], c))[:limit]
    return alphabet, ["##" + c for c in alphabet if c in inner and not _is_punct(c)]


def train_wordpiece(lines, vocab_size: int, min_frequency: int, alphabet: list[str], continuations: list[str],
                    do_lower_case: bool):
    tok = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN, continuing_subword_prefix="##"))
    tok.normalizer = _fast_normalizer(do_lower_case)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # An initial alphabet outranks every counted character, so with the limit at its length the trainer keeps
    # exactly it; continuations given as special tokens get fixed ids, and the trainer uses them as it meets them
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=[*SPECIAL_TOKENS, *continuations], initial_alphabet=alphabet,
                                        limit_alphabet=len(alphabet), continuing_subword_prefix="##",
                                        show_progress=False)
    tok.train_from_iterator(lines, trainer)
    return [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]


def train_sentencepiece(word_lines, vocab_size: int, model_type: str, limit_alphabet: int):
    """Train sentencepiece on pre-split words and rewrite its pieces in WordPiece form.

    "▁x" (word-initial) becomes "x", any other piece "y" becomes "##y". The `limit_alphabet` most frequent
    characters go first in both forms: greedy WordPiece has no fallback, so a character missing in either form
    would turn whole words into [UNK].
    """
    import sentencepiece as spm
    chars = collections.Counter()

    def sentences():
        for words in word_lines:
            for w in words:
                chars.update(w)
            for i in range(0, len(words), 256):  # short sentences: sentencepiece skips over-long ones
                yield " ".join(words[i:i + 256])

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(), model_writer=model, vocab_size=vocab_size, model_type=model_type,
            normalization_rule_name="identity",  # the text is already normalised; its NFKC would change it
            hard_vocab_limit=False, character_coverage=0.9995, input_sentence_size=SPM_MAX_SENTENCES,
            shuffle_input_sentence=True, minloglevel=2)
    except RuntimeError as e:
        raise ValueError(f"sentencepiece training failed: {str(e).strip().splitlines()[-1]}") from None
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    tokens = [t for c, _ in chars.most_common(limit_alphabet) for t in (c, "##" + c)]
    for i in range(sp.get_piece_size()):
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i)):
            p = sp.id_to_piece(i)
            tokens.append(p[1:] if p.startswith("▁") else "##" + p)
    return [t for t in tokens if t not in ("", "##")]


def _write_lines_atomic(path: str, lines: list[str]) -> None:
    out_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".vocab.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(t + "\n" for t in lines)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def build_vocab(corpus: list[str], vocab_size: int, output: str, min_frequency: int = 2,
                do_lower_case: bool = False, morph: str | None = None, algorithm: str = "wordpiece",
                model_type: str = "unigram", limit_alphabet: int | None = None) -> list[str]:
    """Train a vocab on the corpus files and write it (specials first, release order) to `output`."""
    if vocab_size < len(SPECIAL_TOKENS):
        raise ValueError(f"--vocab_size {vocab_size} is smaller than the {len(SPECIAL_TOKENS)} special tokens")
    if os.path.isdir(output):
        raise ValueError(f"--output {output} is a directory; give the vocab.txt path")
    _check_corpus(corpus)
    # by default single characters (in plain and "##" form) fill at most two thirds of the vocab, so the rest is
    # left for longer pieces; at 32k that keeps every character of a typical Korean corpus
    if limit_alphabet is None:
        limit_alphabet = max(1, (vocab_size - len(SPECIAL_TOKENS)) // 3)
    if algorithm == "wordpiece":  # a first pass over the corpus, with its own progress bar
        alphabet, continuations = choose_alphabet(_iter_lines(corpus, [0]), do_lower_case, limit_alphabet)
    counter = [0]
    lines = _iter_lines(corpus, counter)
    first = next(lines, None)  # fail before any training on a corpus with no text
    if first is None:
        raise ValueError(f"corpus {' '.join(corpus)} has no text (only blank lines)")
    lines = itertools.chain([first], lines)
    if algorithm == "sentencepiece":
        learned = train_sentencepiece(_pre_split(lines, do_lower_case, morph), vocab_size, model_type,
                                      limit_alphabet)
    else:
        if morph:  # the trainer re-normalises; harmless, the normaliser is idempotent
            lines = (" ".join(words) for words in _pre_split(lines, do_lower_case, morph))
        learned = train_wordpiece(lines, vocab_size, min_frequency, alphabet, continuations, do_lower_case)
    tokens = list(dict.fromkeys([*SPECIAL_TOKENS, *learned]))
    if len(tokens) > vocab_size and algorithm == "wordpiece":
        raise ValueError(f"--limit_alphabet {limit_alphabet} leaves no room: the alphabet alone needs "
                         f"{len(tokens)} tokens > --vocab_size {vocab_size}")
    tokens = tokens[:vocab_size]
    _write_lines_atomic(output, tokens)
    print(f"wrote {len(tokens)} tokens to {output} ({algorithm}, {counter[0]} corpus lines)")
    if len(tokens) < vocab_size:
        print(f"note: the corpus is too small for {vocab_size} tokens; the vocab has only {len(tokens)}")
    if morph:
        print(f'note: this vocab is for morpheme-pre-split text: the model config must record '
              f'"morph_analyzer": "{morph}"')
    return tokens


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build-vocab", help="train a WordPiece vocab.txt on plain-text files (one text a line)")
    g = p.add_argument_group("data")
    g.add_argument("--corpus", nargs="+", required=True, help="UTF-8 text files")
    g.add_argument("--output", required=True, help="vocab.txt to write (atomically)")
    g.add_argument("--do_lower_case", action="store_true", help="lower-case (never strips accents)")
    g.add_argument("--morph", choices=["kiwi"], default=None, help="pre-split words into morphemes first")
    g = p.add_argument_group("training")
    g.add_argument("--vocab_size", type=int, default=32000, help="lines in the vocab, specials included")
    g.add_argument("--algorithm", choices=["wordpiece", "sentencepiece"], default="wordpiece")
    g.add_argument("--model_type", choices=["unigram", "bpe"], default="unigram", help="sentencepiece model")
    g.add_argument("--min_frequency", type=int, default=2, help="wordpiece: least count of a merged pair")
    g.add_argument("--limit_alphabet", type=int, default=None,
                   help="most frequent single characters kept (default (vocab_size - 5) // 3)")
    args = parser.parse_args(argv)
    try:
        build_vocab(args.corpus, args.vocab_size, args.output, min_frequency=args.min_frequency,
                    do_lower_case=args.do_lower_case, morph=args.morph, algorithm=args.algorithm,
                    model_type=args.model_type, limit_alphabet=args.limit_alphabet)
    except (ValueError, OSError, RuntimeError) as e:  # RuntimeError: e.g. the analyser is not installed
        # train_utils.fail would pull in torch; this module stays importable without it
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

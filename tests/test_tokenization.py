"""Tokenizer tests: Korean behaviour on the bundled corpus, Python vs Rust parity, transformers as peer oracle,
offsets into the original string, and the build-vocab CLI. Vocabs are built on small corpus slices (CPU, seconds).
"""
import os
import pickle
import re
import subprocess
import sys
import unicodedata

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tokenization as T  # noqa: E402
import vocab_builder as V  # noqa: E402

TEXT_DIR = os.path.join(ROOT, "data", "korean_text")
COMMENTS = os.path.join(TEXT_DIR, "unlabeled_comments_5.txt")
JAMO = [(0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF)]  # conjoining jamo: what NFD makes of syllables

EDGE_TEXTS = [
    "大韓民國 憲法 第1條 ①項", "좋아요😀👍🏽 👨‍👩‍👧 ❤️🔥 🥰🫠", "ㅋㅋㅋ ㅠㅠ ㄱ ㅏ ㆍ", "ᄒᆞᆫ글 옛한글",
    unicodedata.normalize("NFD", "한국어 문장입니다. 서울에서 만나요"), "가" * 100, "가" * 101 + " 나",
    "서울\x00에서\x07 \ufffd부산\u200b으로 \x1b[0m끝\ufeff", "서울\u00a0부산\u3000대구\u2003광주\u202f대전",
    "첫줄\r\n둘째줄\r\n", "\t탭\t문자\v수직\f폼피드", "abc\u2028def\u2029ghi\x85jkl",
    "Hello, 세계! naïve café Ελληνικά ΣΟΦΟΣ Москва 東京タワー ｆｕｌｌ", "İstanbul ΑΣ ΣΑΣ", "", "   \n ",
    "(주)삼성전자·LG전자—2024년 ~ 「인용」 『책』 … ‼ ※ ＠ ＃", "\U0002B820\U0002B920 \ue000 \U000E0001x \u0890a",
    "e\u0301cole 한\u0301글 ﬁ ﹏ ⸻ ՚", "x" * 250, "3.14% $100 #태그 @사용자 http://예시.한국/경로?q=1",
]


def _korean_lines(step=20):
    """Every step-th line of every bundled text file, kept byte-exact (CRLF included)."""
    lines = []
    for dirpath, _, files in sorted(os.walk(TEXT_DIR)):
        for name in sorted(files):
            if name.endswith(".txt"):
                with open(os.path.join(dirpath, name), encoding="utf-8", newline="") as f:
                    lines += f.readlines()[::step]
    return lines


def _head(path, start, stop):
    with open(path, encoding="utf-8") as f:
        return f.readlines()[start:stop]


def _write(path, text, mode="w"):
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
        f.write(text)
    return str(path)


def _unk_rate(tok, lines):
    encs = tok.encode_batch(lines, add_special_tokens=False)
    unk = tok.token_to_id("[UNK]")
    return sum(e.ids.count(unk) for e in encs) / sum(len(e.ids) for e in encs)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("tok")


@pytest.fixture(scope="module")
def corpus(work):
    return _write(work / "train.txt", "".join(_head(COMMENTS, 0, 2000)))


@pytest.fixture(scope="module")
def held_out():
    return _head(COMMENTS, 2000, 3000)


@pytest.fixture(scope="module")
def vocab(work, corpus):
    out = str(work / "wp" / "vocab.txt")
    T.main(["build-vocab", "--corpus", corpus, "--vocab_size", "2000", "--output", out])
    return out


@pytest.fixture(scope="module")
def lines():
    return _korean_lines()


@pytest.fixture(scope="module")
def toy_vocab(work):
    """Hand-made vocab with the special tokens scattered (not at ids 0-4)."""
    tokens = ["서울", "[SEP]", "##에서", "에서", "大", "韓", "가", "##가", "[MASK]", "부산", "[PAD]", "##으로",
              "으로", "대구", "[CLS]", "hello", ",", "!", "[UNK]", "세계", "광주", "##울"]
    return _write(work / "toy_vocab.txt", "".join(t + "\n" for t in tokens))


# ------------------------------------------------------------------------------------------ vocab & API basics

def test_built_vocab_layout(vocab):
    with open(vocab, encoding="utf-8") as f:
        tokens = f.read().split("\n")[:-1]
    assert len(tokens) == 2000 and len(set(tokens)) == 2000
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert all(t and t == unicodedata.normalize("NFC", t) and not t.isspace() for t in tokens)
    assert {"이", "##이", "는", "##는"} <= set(tokens)  # frequent syllables in both forms
    assert sum(len(t.removeprefix("##")) > 1 for t in tokens) > 500  # real merges, not just an alphabet


def test_special_ids_by_name_and_conversions(toy_vocab):
    tok = T.FullTokenizer(toy_vocab)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (10, 18, 14, 1, 8)
    assert T.special_token_ids(tok.vocab) == dict(pad=10, unk=18, cls=14, sep=1, mask=8)
    assert tok.tokenize("서울에서 부산으로") == ["서울", "##에서", "부산", "##으로"]
    ids = tok.convert_tokens_to_ids(tok.tokenize("서울에서 부산으로"))
    assert ids == [0, 2, 9, 11] and tok.convert_ids_to_tokens(ids) == ["서울", "##에서", "부산", "##으로"]
    fast = T.build_fast_tokenizer(toy_vocab)
    enc = fast.encode("서울에서 부산으로", add_special_tokens=True)  # no post-processor: still no [CLS]/[SEP]
    assert enc.ids == ids and fast.token_to_id("[MASK]") == 8
    assert fast.decode(ids) == "서울에서 부산으로"


def test_behaviour_on_toy_vocab(toy_vocab):
    py, fast = T.FullTokenizer(toy_vocab), T.build_fast_tokenizer(toy_vocab)
    cases = {
        "大韓民國": ["大", "韓", "[UNK]", "[UNK]"],                  # Hanja: one word per character
        "서울大韓": ["서울", "大", "韓"],
        "가" * 100: ["가"] + ["##가"] * 99,                            # 100 characters is still a word ...
        "가" * 101: ["[UNK]"],                                         # ... 101 is not
        "서울시에서": ["[UNK]"],                                       # one unmatchable piece sinks the word
        "서울\x00에서\u200b \ufffd부산\x07": ["서울", "##에서", "부산"],  # control / format chars dropped
        "서울\u00a0부산\u3000대구\r\n광주\t세계": ["서울", "부산", "대구", "광주", "세계"],
        "hello,세계!": ["hello", ",", "세계", "!"],
        unicodedata.normalize("NFD", "서울에서 부산"): ["서울", "##에서", "부산"],  # recomposed to NFC
        "[MASK]": ["[UNK]", "[UNK]", "[UNK]"],  # like google-research/bert: no special-token matching in text
    }
    for text, want in cases.items():
        assert py.tokenize(text) == want, text
        assert fast.encode(text, add_special_tokens=False).tokens == want, text


# ---------------------------------------------------------------------------------------- Korean behaviour

def test_held_out_unk_rate(vocab, corpus, held_out, work):
    # measured 3.7 % with the default alphabet (665 characters: rare syllables sink whole words), 1.1 % with 1000
    assert _unk_rate(T.build_fast_tokenizer(vocab), held_out) < 0.05
    wide = str(work / "wide" / "vocab.txt")
    V.build_vocab([corpus], 2000, wide, limit_alphabet=1000)
    assert _unk_rate(T.build_fast_tokenizer(wide), held_out) < 0.02


def test_hangul_never_decomposed(vocab, lines):
    for lower in (False, True):  # lower-casing is where BERT would strip accents, i.e. NFD-decompose
        fast = T.build_fast_tokenizer(vocab, do_lower_case=lower)
        encs = fast.encode_batch(lines[:800], add_special_tokens=False)
        for text, enc in zip(lines, encs):  # jamo in a piece only where the input itself has them (ᆢ occurs)
            jamo = {c for t in enc.tokens for c in t if any(lo <= ord(c) <= hi for lo, hi in JAMO)}
            assert jamo <= set(text), text
        nfd = fast.encode_batch([unicodedata.normalize("NFD", x) for x in lines[:800]], add_special_tokens=False)
        assert [e.ids for e in nfd] == [e.ids for e in encs]
        assert T.normalize_text("한국어 문장", lower) == "한국어 문장"
    from tokenizers import normalizers
    # the trap this guards against: BertNormalizer's default ties accent stripping to lower-casing
    assert normalizers.BertNormalizer(lowercase=True).normalize_str("한국어") != "한국어"


# ------------------------------------------------------------------------------------------------- parity

def test_python_and_fast_paths_give_identical_ids(vocab, lines):
    assert len(lines) >= 2000
    for lower, texts in ((False, lines + EDGE_TEXTS), (True, lines[:600] + EDGE_TEXTS)):
        py, fast = T.FullTokenizer(vocab, do_lower_case=lower), T.build_fast_tokenizer(vocab, do_lower_case=lower)
        encs = fast.encode_batch(texts, add_special_tokens=False)
        for text, enc in zip(texts, encs):
            assert py.convert_tokens_to_ids(py.tokenize(text)) == enc.ids, repr(text[:80])


def test_character_tables_match_fast_components():
    """Every assigned code point (plus a sample of unassigned / private ones) is cleaned, spaced, lower-cased and
    split identically by the Python twins and the Rust normaliser / pre-tokenizer."""
    from tokenizers import pre_tokenizers
    old_unicode = unicodedata.unidata_version != "14.0.0"  # the exception tables were derived on Unicode 14
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF
             and (unicodedata.category(chr(c)) not in ("Cn", "Co") or c % 101 == 0)
             and (not old_unicode or unicodedata.ucd_3_2_0.category(chr(c)) != "Cn")]
    pre = pre_tokenizers.BertPreTokenizer()
    for lower in (False, True):
        # only cased letters change; unassigned ones are left out, newer Rust case tables know letters we do not
        cs = [c for c in chars if c.lower() != c] if lower else chars
        norm = T.fast_normalizer(lower)
        for i in range(0, len(cs), 2000):
            text = "".join("a" + c for c in cs[i:i + 2000])
            ours = T.normalize_text(text, lower)
            assert ours == norm.normalize_str(text)
            assert T.split_words(ours) == [w for w, _ in pre.pre_tokenize_str(ours)]


def test_peer_parity_with_transformers(vocab, lines):
    transformers = pytest.importorskip("transformers")
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    # transformers 5: BertTokenizer is the tokenizers-backed class and takes the vocab path as `vocab=`
    # (a `vocab_file=` keyword is silently ignored, leaving a 5-token vocab); the pure-Python original is
    # BertTokenizerLegacy. Both match special tokens inside the text, so texts holding them are left out.
    kw = dict(do_lower_case=False, strip_accents=False, tokenize_chinese_chars=True)
    fast_peer = transformers.BertTokenizer(vocab=vocab, **kw)
    slow_peer = BertTokenizerLegacy(vocab, **kw)
    ours = T.FullTokenizer(vocab)
    assert len(fast_peer.get_vocab()) == len(ours.vocab)
    # documented divergences: legacy also drops unassigned code points and format characters newer than the
    # fast tables (U+0890), spaces out U+2B820-2B91F, and lower-cases whole words (final sigma); the HF fast
    # class has no NFC step
    legacy_ok = [t for t in EDGE_TEXTS if "\U0002B820" not in t and "\u0890" not in t]
    for text in lines[:500] + legacy_ok:
        assert ours.tokenize(text) == slow_peer.tokenize(text), repr(text[:80])
    for text in lines[:500] + [t for t in EDGE_TEXTS if unicodedata.is_normalized("NFC", t)]:
        assert ours.tokenize(text) == fast_peer.tokenize(text), repr(text[:80])


# ------------------------------------------------------------------------------------------------ offsets

def _check_offsets(tok, texts, lower=False):
    for text, enc in zip(texts, tok.encode_batch(texts, add_special_tokens=False)):
        for piece, (s, e) in zip(enc.tokens, enc.offsets):
            span = text[s:e].lower() if lower else text[s:e]
            if piece == "[UNK]":
                assert span and not span.isspace(), (text[:80], piece)
            else:
                assert span == piece.removeprefix("##"), (text[:80], piece, span)


def test_offsets_index_the_original_string(vocab, lines):
    texts = lines[:800] + ["서울\u00a0부산\u3000대구\r\n광주\t\x00세계\u200b끝", "첫줄\r\n둘째줄\r\n",
                           "大韓民國 憲法", "좋아요😀👍🏽 ❤️", "(주)삼성전자·LG전자"]
    _check_offsets(T.build_fast_tokenizer(vocab), texts)
    _check_offsets(T.build_fast_tokenizer(vocab, do_lower_case=True), texts + ["HELLO 세계 Café"], lower=True)


def test_offsets_on_decomposed_input_known_limitation(vocab):
    # tokenizers aligns an NFC-composed character with only its first source character: on NFD input starts
    # are exact and ends may fall inside the last syllable's jamo (see the module docstring)
    nfc = "한국어 문장입니다. 서울에서 만나요"
    nfd = unicodedata.normalize("NFD", nfc)
    fast = T.build_fast_tokenizer(vocab)
    a, b = fast.encode(nfc, add_special_tokens=False), fast.encode(nfd, add_special_tokens=False)
    assert a.ids == b.ids

    def to_nfd(i):
        return len(unicodedata.normalize("NFD", nfc[:i]))
    assert [s for s, _ in b.offsets] == [to_nfd(s) for s, _ in a.offsets]
    assert all(s < e <= to_nfd(e_nfc) for (s, e), (_, e_nfc) in zip(b.offsets, a.offsets))


# ------------------------------------------------------------------------------------- morpheme pre-split

def test_morph_presplit_vocab_parity_and_offsets(work, toy_vocab, capsys):
    pytest.importorskip("kiwipiepy")
    corpus = _write(work / "morph_train.txt", "".join(_head(COMMENTS, 0, 100)))
    out = str(work / "kiwi" / "vocab.txt")
    T.main(["build-vocab", "--corpus", corpus, "--vocab_size", "2000", "--output", out, "--morph_analyzer", "kiwi"])
    assert '"morph_analyzer": "kiwi"' in capsys.readouterr().out
    with open(out, encoding="utf-8") as f:
        tokens = f.read().split("\n")[:-1]
    assert tokens[:5] == list(T.SPECIAL_TOKENS) and len(tokens) <= 2000 and len(set(tokens)) == len(tokens)

    py, fast = T.FullTokenizer(out, morph_analyzer="kiwi"), T.build_fast_tokenizer(out, morph_analyzer="kiwi")
    texts = _head(COMMENTS, 2000, 2060) + ["서울에서 열린 회의\r\n부산으로\u00a0갔다", "大韓民國에서 😀좋아요"]
    for text, enc in zip(texts, fast.encode_batch(texts, add_special_tokens=False)):
        assert py.convert_tokens_to_ids(py.tokenize(text)) == enc.ids, text
    _check_offsets(fast, texts)

    # the second morpheme starts a new word (no "##"); its span touches the first one's, which is how
    # whole-word masking finds the whitespace word again
    enc = T.build_fast_tokenizer(toy_vocab, morph_analyzer="kiwi").encode("서울에서 부산", add_special_tokens=False)
    assert enc.tokens == ["서울", "에서", "부산"] and enc.offsets == [(0, 2), (2, 4), (5, 7)]
    assert T.FullTokenizer(toy_vocab, morph_analyzer="kiwi").tokenize("서울에서 부산") == enc.tokens
    assert T.FullTokenizer(toy_vocab).tokenize("서울에서 부산") == ["서울", "##에서", "부산"]
    with pytest.raises(Exception, match="Custom PreTokenizer cannot be serialized"):
        pickle.dumps(fast)  # documented: build the tokenizer inside each worker process


def test_morph_presplit_in_worker_processes_keeps_every_line_in_order():
    """With a morpheme analyser the vocab builder splits the text in worker processes, a few chunks at a time: the
    words must come back exactly as one process makes them, in order, whatever the worker and chunk counts (the
    vocab depends on them)."""
    pytest.importorskip("kiwipiepy")
    lines = _head(COMMENTS, 0, 60) + ["   \n"] + _head(COMMENTS, 60, 75)  # a line that splits to nothing
    one = list(V._pre_split(iter(lines), False, "kiwi", num_workers=1))
    assert len(one) == 75 and any(w in ("에서", "은", "는", "이", "가") for words in one for w in words)
    for workers, chunk in ((2, 7), (3, 1)):
        assert list(V._pre_split(iter(lines), False, "kiwi", num_workers=workers, chunk_lines=chunk)) == one


# ------------------------------------------------------------------------------------------- sentencepiece

def test_build_vocab_sentencepiece(work, corpus, held_out, capsys):
    out = str(work / "spm" / "vocab.txt")
    # --input_files: create_pretraining_data.py's name for the same flag
    T.main(["build-vocab", "--input_files", corpus, "--vocab_size", "2000", "--output", out,
            "--algorithm", "sentencepiece", "--model_type", "unigram"])
    with open(out, encoding="utf-8") as f:
        tokens = f.read().split("\n")[:-1]
    assert len(tokens) == 2000 and len(set(tokens)) == 2000 and tokens[:5] == list(T.SPECIAL_TOKENS)
    assert all(t not in ("", "##") and "▁" not in t for t in tokens)
    words = [t for t in tokens[5:] if len(t.removeprefix("##")) > 1]
    assert sum(t.startswith("##") for t in words) > 100 and sum(not t.startswith("##") for t in words) > 100
    assert _unk_rate(T.build_fast_tokenizer(out), held_out) < 0.05  # measured 3.4 %
    # an alphabet that fills the vocab is refused, as with WordPiece (every learned piece used to be dropped)
    assert "--limit_alphabet 1500 leaves no room" in _cli_error(capsys, [
        "build-vocab", "--corpus", corpus, "--vocab_size", "2000", "--output", str(work / "spm2" / "v.txt"),
        "--algorithm", "sentencepiece", "--limit_alphabet", "1500"])
    # a vocab smaller than the characters sentencepiece keeps: our flag to change, not sentencepiece's own
    # --character_coverage, which its message suggests and build-vocab does not have
    err = _cli_error(capsys, ["build-vocab", "--corpus", corpus, "--vocab_size", "60", "--output",
                              str(work / "spm7" / "v.txt"), "--algorithm", "sentencepiece"])
    assert re.search(r"--vocab_size 60 is smaller than the \d+ characters sentencepiece must keep from .*: raise "
                     r"--vocab_size$", err) and "character_coverage" not in err
    # a corpus of invisible characters only: the corpus's message, not sentencepiece's internal one
    invisible = _write(work / "spm_invisible.txt", "\u200b\n\x01\x02\n\u200b\u200b\n")
    assert "spm_invisible.txt has no text" in _cli_error(capsys, [
        "build-vocab", "--corpus", invisible, "--vocab_size", "100", "--output", str(work / "spm4" / "v.txt"),
        "--algorithm", "sentencepiece"])
    # --max_sentences caps what sentencepiece holds: a sample of 150 sentences learns another vocab
    sampled = str(work / "spm5" / "v.txt")
    T.main(["build-vocab", "--corpus", corpus, "--vocab_size", "2000", "--output", sampled,
            "--algorithm", "sentencepiece", "--max_sentences", "150"])
    assert open(sampled, encoding="utf-8").read().split("\n")[:-1] != tokens
    assert "--max_sentences 100: over 100" in _cli_error(capsys, [
        "build-vocab", "--corpus", corpus, "--output", str(work / "spm6" / "v.txt"), "--max_sentences", "100"])
    # a corpus error met while sentencepiece reads is the corpus's one line, not a frame of its stack
    bad = _write(work / "spm_bad.txt", open(corpus, "rb").read() + "caf\xe9\n".encode("latin-1"), "wb")
    assert re.search(r"spm_bad.txt is not UTF-8: invalid byte at line \d+", _cli_error(capsys, [
        "build-vocab", "--corpus", bad, "--vocab_size", "2000", "--output", str(work / "spm3" / "v.txt"),
        "--algorithm", "sentencepiece"]))


def test_build_vocab_flags_reach_the_trainers(work, corpus):
    """--min_frequency is the WordPiece trainer's least pair count (a high one learns fewer merges, as build_vocab
    called with it does); --do_lower_case lower-cases what sentencepiece learns from, as the tokenizer will."""
    def tokens(path):
        with open(path, encoding="utf-8") as f:
            return f.read().split("\n")[:-1]
    cli = str(work / "minfreq_cli" / "vocab.txt")
    T.main(["build-vocab", "--corpus", corpus, "--vocab_size", "2000", "--output", cli, "--min_frequency", "40"])
    direct = V.build_vocab([corpus], 2000, str(work / "minfreq_direct" / "vocab.txt"), min_frequency=40)
    assert tokens(cli) == direct and len(direct) < 2000  # the default (2) fills all 2000 (test_built_vocab_layout)
    mixed = _write(work / "mixed_case.txt", "".join(_head(COMMENTS, 0, 300)) + "Seoul Busan Daegu SEOUL\n" * 40)
    for algorithm in ("sentencepiece", "wordpiece"):
        out = str(work / f"lower_{algorithm}" / "vocab.txt")
        T.main(["build-vocab", "--corpus", mixed, "--vocab_size", "1000", "--output", out, "--do_lower_case",
                "--algorithm", algorithm])
        learned = tokens(out)[len(T.SPECIAL_TOKENS):]
        assert "seoul" in {t.removeprefix("##") for t in learned} or "s" in learned, algorithm
        assert not [t for t in learned if t != t.lower()], algorithm


def test_sentencepiece_alphabet_that_exactly_fills_the_vocab_is_refused(work, capsys):
    """The alphabet (each character plain and "##") plus the specials filling --vocab_size exactly leaves no room
    for a single learned piece: refused, as one token fewer is; one more slot trains."""
    import random
    rng = random.Random(0)
    syllables = "가나다라마바사아자차카타"
    text = "".join(" ".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(12)) + "\n"
                   for _ in range(400))
    small = _write(work / "twelve_syllables.txt", text)
    need = len(T.SPECIAL_TOKENS) + 2 * len(syllables)
    for size in (need - 1, need):
        assert f"--limit_alphabet 12 leaves no room: the alphabet alone needs {need} tokens" in _cli_error(capsys, [
            "build-vocab", "--corpus", small, "--vocab_size", str(size), "--output",
            str(work / f"fill{size}" / "v.txt"), "--algorithm", "sentencepiece", "--limit_alphabet", "12"])
    out = str(work / "fill_plus_one" / "v.txt")
    T.main(["build-vocab", "--corpus", small, "--vocab_size", str(need + 1), "--output", out,
            "--algorithm", "sentencepiece", "--limit_alphabet", "12"])
    with open(out, encoding="utf-8") as f:
        assert len(f.read().split("\n")[:-1]) == need + 1


def test_vocab_build_is_reproducible_across_processes(work, corpus):
    # tokenizers' trainer on its own broke count ties in hash order, which differs per process: two builds of
    # this very vocab differed (in ids, and in some 30-50 tokens at 3000)
    built = []
    for i in range(2):
        out = work / f"repro{i}" / "vocab.txt"
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "tokenization.py"), "build-vocab", "--corpus",
                               corpus, "--vocab_size", "2000", "--output", str(out)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        built.append(out.read_bytes())
    assert built[0] == built[1]


def trainer_alphabet(lines, lower: bool) -> set[str]:
    """The tokenizers WordPiece trainer's starting pieces on lines: no limit (so no tie to break) and no room for
    merges, under our normaliser."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = T.fast_normalizer(lower), pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=1, special_tokens=["[UNK]"],
                                                             show_progress=False))
    return set(tok.get_vocab()) - {"[UNK]"}


def test_alphabet_matches_the_trainers_own_choice(corpus):
    with open(corpus, encoding="utf-8") as f:
        lines = f.readlines()
    chars, continuations = V.choose_alphabet(lines, False, limit=10**6)
    theirs = trainer_alphabet(lines, False)
    assert set(chars) == {t for t in theirs if not t.startswith("##")} and len(chars) > 1000
    # exactly the characters found inside a word, plus a few seen only right after punctuation ("1.5")
    assert {t for t in theirs if t.startswith("##")} <= set(continuations)
    extra = {t[2:] for t in set(continuations) - theirs}
    assert len(extra) < 0.05 * len(continuations)
    inner = "".join(w[1:] for line in lines for w in T.fast_normalizer(False).normalize_str(line).split()
                    if not any(T.is_punct(c) for c in w))
    assert not extra & set(inner)


def test_lower_cased_alphabet_matches_the_trainers_own_choice(corpus):
    """With --do_lower_case the alphabet is chosen from the lower-cased text, as the trainer under the same
    normaliser counts it: no capital (which the tokenizer never meets) takes a slot of the vocab."""
    with open(corpus, encoding="utf-8") as f:
        lines = f.readlines()
    assert any(c.isupper() for line in lines for c in line)
    chars, continuations = V.choose_alphabet(lines, True, limit=10**6)
    theirs = trainer_alphabet(lines, True)
    assert set(chars) == {t for t in theirs if not t.startswith("##")}
    assert not any(c.isupper() for c in chars) and {t for t in theirs if t.startswith("##")} <= set(continuations)


def test_alphabet_ties_and_limit():
    chars, continuations = V.choose_alphabet(["ba ca, xy.z\n", "d\td"], False, limit=5)
    # counts: a 2, d 2, then b c x y z , . once each: ties go by code point, so ',' and '.' come first
    assert chars == ["a", "d", ",", ".", "b"]
    assert continuations == ["##a"]  # b starts a word; punctuation is never continued


# ---------------------------------------------------------------------------------------------- bad input

def _cli_error(capsys, argv):
    with pytest.raises(SystemExit) as e:
        T.main(argv)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # earlier lines can only be the progress bar
    assert e.value.code == 2 and last.startswith("error: ") and "Traceback" not in err
    return last


def test_build_vocab_bad_input(work, capsys):
    os.makedirs(work / "keep", exist_ok=True)
    out = _write(work / "keep" / "vocab.txt", "old\n")
    good = _write(work / "good.txt", "서울에서 만나요\n")
    missing = str(work / "nope.txt")
    # the output is checked before the corpus is read: an existing vocab is replaced only with --overwrite (shards
    # and checkpoints are tied to its bytes), and a path that cannot be written fails now, not after training
    assert "already exists; pass --overwrite" in _cli_error(capsys, ["build-vocab", "--corpus", good, "--output", out])
    assert "is a directory" in _cli_error(capsys, ["build-vocab", "--corpus", good, "--output", str(work / "keep")])
    assert f"cannot be made, {good} is a file" in _cli_error(capsys, ["build-vocab", "--corpus", good, "--output",
                                                                      good + "/vocab.txt"])
    assert missing in _cli_error(capsys, ["build-vocab", "--corpus", good, missing, "--vocab_size", "50",
                                          "--output", out, "--overwrite"])
    # a folder given as the corpus is named as one (it was "corpus file not found")
    assert f"corpus {work / 'keep'} is a directory: name its text files" in _cli_error(capsys, [
        "build-vocab", "--corpus", str(work / "keep"), "--output", out, "--overwrite"])
    empty = _write(work / "empty.txt", "")
    assert "empty.txt is empty" in _cli_error(capsys, ["build-vocab", "--corpus", empty, "--output", out,
                                                      "--overwrite"])
    empty2 = _write(work / "empty2.txt", "")
    assert "empty.txt, " in _cli_error(capsys, ["build-vocab", "--corpus", empty, empty2, "--output", out,
                                               "--overwrite"])
    # one empty file beside text is warned about and trained without, as create_pretraining_data does
    V.main(["build-vocab", "--corpus", empty, good, "--vocab_size", "50", "--output",
                        str(work / "with_empty.txt")])
    assert "warning: corpus file " + empty + " is empty" in capsys.readouterr().err
    assert (work / "with_empty.txt").read_text(encoding="utf-8").startswith("[PAD]\n")
    blank = _write(work / "blank.txt", "\n  \n\r\n")
    assert "blank.txt has no text" in _cli_error(capsys, ["build-vocab", "--corpus", blank, "--output", out,
                                                         "--overwrite"])
    bad = _write(work / "latin1.txt", "첫줄\n".encode() + "caf\xe9\n".encode("latin-1"), "wb")
    err = _cli_error(capsys, ["build-vocab", "--corpus", bad, "--output", out, "--overwrite"])
    assert "latin1.txt" in err and "line 2" in err and "byte offset 10" in err
    assert "--vocab_size 3" in _cli_error(capsys, ["build-vocab", "--corpus", good, "--vocab_size", "3",
                                                   "--output", out, "--overwrite"])
    # a file saved "empty" by a Windows editor (a byte-order mark), or holding only invisible characters: no text
    # (they wrote a vocab of the five special tokens and exited 0)
    for name, raw in (("bom.txt", b"\xef\xbb\xbf\n\n"), ("invisible.txt", "\u200b\n\x07\n".encode())):
        assert f"{name} has no text" in _cli_error(capsys, ["build-vocab", "--corpus", _write(work / name, raw, "wb"),
                                                            "--output", out, "--overwrite"])
    for flag, value in (("--limit_alphabet", "0"), ("--limit_alphabet", "-1"), ("--min_frequency", "-3")):
        assert f"{flag} {value}: at least" in _cli_error(capsys, ["build-vocab", "--corpus", good, flag, value,
                                                                  "--output", out, "--overwrite"])
    # sentencepiece is a test requirement only: without it, one line saying what to install
    import importlib.util
    real_find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: None if name == "sentencepiece" else real_find_spec(name, *a)
    try:
        assert "pip install sentencepiece" in _cli_error(capsys, ["build-vocab", "--corpus", good, "--algorithm",
                                                                  "sentencepiece", "--output", out, "--overwrite"])
    finally:
        importlib.util.find_spec = real_find_spec
    with open(out, encoding="utf-8") as f:
        assert f.read() == "old\n"  # failed runs leave an existing output alone

    T.main(["build-vocab", "--corpus", good, "--vocab_size", "500", "--output", out, "--overwrite"])
    assert "too small for 500 tokens" in capsys.readouterr().out
    with open(out, encoding="utf-8") as f:
        tokens = f.read().split("\n")[:-1]
    assert 5 < len(tokens) < 500 and tokens[:5] == list(T.SPECIAL_TOKENS)
    assert not [n for n in os.listdir(work / "keep") if n != "vocab.txt"]  # no temp files left behind


def test_bad_vocab_files(work):
    no_specials = _write(work / "no_specials.txt", "[PAD]\n[UNK]\n서울\n")
    for build in (T.FullTokenizer, T.build_fast_tokenizer):
        with pytest.raises(ValueError, match=r"no_specials\.txt.*\[CLS\] \[SEP\] \[MASK\]"):
            build(no_specials)
        with pytest.raises(ValueError, match=r"empty_vocab\.txt is empty"):
            build(_write(work / "empty_vocab.txt", ""))
        with pytest.raises(FileNotFoundError, match="missing_vocab.txt"):
            build(str(work / "missing_vocab.txt"))
    with pytest.raises(ValueError, match=r"\(given as a dict\) lacks special token\(s\): \[MASK\]"):
        T.special_token_ids({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3})


def test_vocab_file_is_readable_by_others_and_synced(work, monkeypatch):
    """vocab.txt gets the mode any file the user writes gets (not mkstemp's 0600), and reaches the disk before
    the rename makes it the vocab."""
    corpus = _write(work / "tiny_corpus.txt", "서울에서 만나요\n부산으로 가요\n")
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_ino)), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda src, dst: (events.append(("replace", os.stat(src).st_ino)),
                                                         real_replace(src, dst)))
    for umask, mode in ((0o022, 0o644), (0o077, 0o600)):
        out = work / f"umask{umask:o}" / "vocab.txt"
        old = os.umask(umask)
        try:
            V.build_vocab([corpus], 50, str(out))
        finally:
            os.umask(old)
        assert os.stat(out).st_mode & 0o777 == mode
    inode = os.stat(out).st_ino
    assert [e for e in events if e[1] == inode] == [("fsync", inode), ("replace", inode)]


def test_build_vocab_reads_cr_line_ends_in_bounded_pieces(work, corpus, monkeypatch):
    """A CR-only or CRLF corpus gives the vocab an LF one does, and a file without LF line ends is read in pieces
    of at most MAX_LINE_BYTES (it used to be read whole: one 'line' the size of the file)."""
    with open(corpus, encoding="utf-8") as f:
        text = f.read()
    built = {}
    for name, end in (("lf", "\n"), ("cr", "\r"), ("crlf", "\r\n")):
        src = _write(work / f"ends_{name}.txt", text.replace("\n", end), mode="w")
        out = str(work / f"ends_{name}_vocab.txt")
        T.main(["build-vocab", "--corpus", src, "--vocab_size", "1500", "--output", out])
        with open(out, "rb") as f:
            built[name] = f.read()
    assert built["cr"] == built["lf"] == built["crlf"]
    monkeypatch.setattr(V, "MAX_LINE_BYTES", 4096)
    counter = [0]
    pieces = list(V._iter_lines([str(work / "ends_cr.txt")], counter))
    assert counter[0] == len(pieces) == sum(1 for line in text.split("\n") if line.strip())
    assert max(len(p.encode()) for p in pieces) <= 4096


def test_a_token_listed_twice_keeps_its_last_id_as_transformers_does(work):
    """A release-style vocab may repeat a token: google-research/bert and transformers give it the id of its last
    line, and a checkpoint trained with them learned that row. Both of our paths agree with transformers."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "서울", "##에서", "부산", "서울", "##으로"]
    path = _write(work / "dup_vocab.txt", "".join(t + "\n" for t in tokens))
    text = "서울에서 부산으로"
    want = transformers.BertTokenizer(vocab=path, do_lower_case=False).encode(text, add_special_tokens=False)
    assert want == BertTokenizerLegacy(path, do_lower_case=False).encode(text, add_special_tokens=False)
    assert want == [8, 6, 7, 9]
    assert T.FullTokenizer(path).convert_tokens_to_ids(T.FullTokenizer(path).tokenize(text)) == want
    assert T.build_fast_tokenizer(path).encode(text, add_special_tokens=False).ids == want


def test_a_vocab_saved_with_a_byte_order_mark_reads_as_without(work, vocab, lines):
    """A vocab.txt saved by a Windows editor (byte-order mark, CRLF) holds the same tokens: the same ids on both
    paths (it used to fail as lacking [PAD], the mark read into the first line's token)."""
    from fileio import read_vocab_lines
    from models.checkpoint import _pad_id
    with open(vocab, encoding="utf-8") as f:
        text = f.read()
    marked = _write(work / "bom_vocab.txt", "\ufeff" + text.replace("\n", "\r\n"))
    assert T.load_vocab(marked) == T.load_vocab(vocab) and T.load_vocab(marked)["[PAD]"] == 0
    assert read_vocab_lines(marked) == read_vocab_lines(vocab)
    assert _pad_id(marked) == _pad_id(vocab) == 0
    sample = lines[:200]
    assert [e.ids for e in T.build_fast_tokenizer(marked).encode_batch(sample, add_special_tokens=False)] == \
        [e.ids for e in T.build_fast_tokenizer(vocab).encode_batch(sample, add_special_tokens=False)]
    py = T.FullTokenizer(marked)
    assert [py.convert_tokens_to_ids(py.tokenize(t)) for t in sample[:50]] == \
        [T.FullTokenizer(vocab).convert_tokens_to_ids(T.FullTokenizer(vocab).tokenize(t)) for t in sample[:50]]


def test_build_vocab_runs_without_torch(work):
    """The vocab builder is importable and runnable without torch (a machine that only prepares data)."""
    corpus = _write(work / "no_torch.txt", "서울에서 만나요\n부산으로 가요\n")
    code = ("import runpy, sys; sys.argv = ['tokenization.py', 'build-vocab', '--corpus', sys.argv[1], '--vocab_size', "
            "'60', '--output', sys.argv[2]]; runpy.run_path('tokenization.py', run_name='__main__'); "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, corpus, str(work / "no_torch" / "vocab.txt")], cwd=ROOT,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "False", r.stdout + r.stderr


def test_vocab_lines_are_read_as_nfc_by_both_paths(tmp_path):
    """A vocab saved decomposed (NFD, as some tools write Hangul) still gives the composed text its ids."""
    p = tmp_path / "v.txt"
    p.write_text("".join(t + "\n" for t in T.SPECIAL_TOKENS) + unicodedata.normalize("NFD", "서울") + "\n",
                 encoding="utf-8")
    python = T.FullTokenizer(str(p))
    assert python.convert_tokens_to_ids(python.tokenize("서울")) == [5]
    assert T.build_fast_tokenizer(str(p)).encode("서울", add_special_tokens=False).ids == [5]


def test_vocab_lines_are_stripped_as_the_release_strips_them(tmp_path):
    """The release's loader strips each vocab line (str.strip, as google-research/bert): a token written with a
    trailing space or tab keeps its id on both paths instead of becoming unreachable."""
    p = tmp_path / "v.txt"
    p.write_text("".join(t + "\n" for t in T.SPECIAL_TOKENS) + "서울 \n##시\t\n", encoding="utf-8")
    python = T.FullTokenizer(str(p))
    assert python.convert_tokens_to_ids(python.tokenize("서울시")) == [5, 6]
    assert T.build_fast_tokenizer(str(p)).encode("서울시", add_special_tokens=False).ids == [5, 6]
    # every reader of a vocab reads it so: a checkpoint's padding id, and the vocab compared with a checkpoint's
    from fileio import read_vocab_lines
    from models.checkpoint import _pad_id
    assert read_vocab_lines(str(p))[5:] == ["서울", "##시"]
    padded = tmp_path / "pad.txt"
    padded.write_text("[UNK]\n[PAD] \n[CLS]\n", encoding="utf-8")
    assert _pad_id(str(padded)) == 1


def test_an_empty_span_at_the_end_maps_to_the_original_end():
    """Offsets into NFC text map back to the original: an empty span at the end sits after the last decomposed
    character (4 characters in, not at the start of the last syllable's jamo)."""
    _, spans = T.nfc_with_spans("가" + unicodedata.normalize("NFD", "각"))  # 1 + 3 characters -> NFC 2
    assert T.original_offsets(np.array([[2, 2]]), spans).tolist() == [[4, 4]]


def test_hf_tokenizer_export_lower_cases_when_the_model_does(tmp_path):
    """transformers as the oracle: an uncased model's exported tokenizer lower-cases, as ours does."""
    transformers = pytest.importorskip("transformers")
    p = tmp_path / "v.txt"
    p.write_text("".join(t + "\n" for t in T.SPECIAL_TOKENS) + "hello\n", encoding="utf-8")
    T.save_hf_tokenizer(str(p), str(tmp_path), do_lower_case=True, model_max_length=32)
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert tok("HELLO", add_special_tokens=False)["input_ids"] == [5]


def test_lower_casing_keeps_a_final_capital_sigma_as_the_fast_path_does():
    """str.lower() turns a word-final Σ into ς; the Rust normaliser lower-cases character by character (σ). The
    Python twin must give the fast path's string, or a vocab with σ-final Greek words gets other ids per path."""
    norm = T.fast_normalizer(True)
    for text in ("ΣΟΦΟΣ", "ΑΣ ΣΑΣ", "Σ", "ὈΔΥΣΣΕΎΣ."):
        assert T.normalize_text(text, True) == norm.normalize_str(text), text


def test_hf_tokenizer_export_matches_transformers_bert_tokenizer(tmp_path, vocab, lines):
    """transformers' own BertTokenizer on the same vocab as the oracle for the exported tokenizer.json: [CLS]/[SEP]
    and segment ids for single texts and pairs, and special tokens written in the text matched whole."""
    transformers = pytest.importorskip("transformers")
    T.save_hf_tokenizer(vocab, str(tmp_path), do_lower_case=False, model_max_length=512)
    ours = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    peer = transformers.BertTokenizer(vocab=vocab, do_lower_case=False, strip_accents=False,
                                      tokenize_chinese_chars=True)
    texts = [t for t in lines[:50] if unicodedata.is_normalized("NFC", t)]
    texts += ["서울 [MASK] 부산", "[CLS] 문장 [SEP] 둘째 [PAD]", "앞[MASK]뒤 [UNK]"]
    for a, b in zip(texts, texts[1:] + texts[:1]):
        for args in ((a,), (a, b)):
            got, want = ours(*args), peer(*args)
            assert got["input_ids"] == want["input_ids"], args
            assert got["token_type_ids"] == want["token_type_ids"], args

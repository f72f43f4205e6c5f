r"""Vocabulary training for tokenization.py: a WordPiece (or sentencepiece-trained) vocab.txt from plain text.

    python tokenization.py build-vocab --corpus data/korean_text/boddari/*.txt \
        data/korean_text/unlabeled_comments_5.txt --vocab_size 32000 --output runs/vocab/vocab.txt
    python tokenization.py build-vocab --corpus data/korean_text/unlabeled_comments_5.txt --morph_analyzer kiwi \
        --vocab_size 16000 --output runs/vocab_kiwi/vocab.txt
    python tokenization.py build-vocab --corpus data/korean_text/boddari/wikinews.txt \
        --algorithm sentencepiece --model_type unigram --vocab_size 8000 --output runs/vocab_spm/vocab.txt
    python vocab_builder.py build-vocab ...   # the same command

The corpus is streamed (never a whole file in memory) and normalised and split exactly as the tokenizer will
see it. WordPiece training is tokenizers' trainer on a starting alphabet chosen here (`choose_alphabet`), so the
same corpus and settings give the same vocab.txt, byte for byte, in any process. The vocab is written with the
special tokens first, in the release's order.
"""
from __future__ import annotations

import argparse
import collections
import functools
import importlib.util
import io
import itertools
import os
import re
import sys

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from fileio import MAX_LINE_BYTES, atomic_write, check_makeable, read_lines, run_script
from tokenization import SPECIAL_TOKENS, UNK_TOKEN, fast_normalizer, fast_pre_tokenizer, is_punct

# sentencepiece holds the sentences it trains on in memory (about 2.5 KB each, measured): beyond this many it samples
SPM_MAX_SENTENCES = 1_000_000


def _check_corpus(files: list[str]) -> None:
    """Every file must exist; an empty file is warned about where others have bytes (as create_pretraining_data
    does), and refused when it is the whole corpus."""
    for path in files:
        if os.path.isdir(path):
            raise ValueError(f"corpus {path} is a directory: name its text files (e.g. {path.rstrip('/')}/*.txt)")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"corpus file not found: {path}")
    empty = [p for p in files if os.path.getsize(p) == 0]
    if len(empty) == len(files):
        raise ValueError(f"corpus file {empty[0]} is empty" if len(empty) == 1
                         else f"corpus files {', '.join(empty)} are all empty")
    for path in empty:
        print(f"warning: corpus file {path} is empty", file=sys.stderr, flush=True)


def _iter_lines(files: list[str], counter: list[int]):
    """Stream the non-blank lines of every file (never a whole file in memory), with a progress bar."""
    from tqdm import tqdm
    with tqdm(total=sum(os.path.getsize(p) for p in files), unit="B", unit_scale=True, mininterval=1.0) as bar:
        for path in files:
            bar.set_description(os.path.basename(path))
            offset = 0
            with open(path, "rb") as f:
                # in pieces of at most MAX_LINE_BYTES, cut at a CR or a space: a file without LF line ends (CR-only,
                # or one huge line) is not read whole
                for lineno, col, raw, _ in read_lines(f, MAX_LINE_BYTES):
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise ValueError(f"corpus file {path} is not UTF-8: invalid byte at line {lineno}, "
                                         f"byte offset {offset + e.start}") from None
                    offset += len(raw)
                    bar.update(len(raw))
                    if lineno == 1 and col == 0:  # a byte-order mark is no text
                        text = text.removeprefix("\ufeff")
                    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):  # CR ends lines too
                        if line.strip():
                            counter[0] += 1
                            yield line


def _split_lines(lines: list[str], do_lower_case: bool, morph: str | None) -> list[list[str]]:
    """Words exactly as the fast tokenizer will see them, one list per line (blank results dropped)."""
    normalizer = fast_normalizer(do_lower_case)
    pre = fast_pre_tokenizer(morph)  # cached per process: a morpheme analyser loads once
    words = ([w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(line))] for line in lines)
    return [w for w in words if w]


def _pre_split(lines, do_lower_case: bool, morph: str | None, num_workers: int = 1, chunk_lines: int = 2000):
    """_split_lines over a line stream, in order. A morpheme analyser runs in Python, one line at a time (about
    0.14 MB/s for kiwi), so with morph the chunks go to num_workers processes, a bounded number at a time (memory
    holds 4 x num_workers chunks, never the corpus); the words, and so the vocab, are the same for any count."""
    chunks = iter(lambda: list(itertools.islice(lines, chunk_lines)), [])
    if not morph or num_workers <= 1:
        for chunk in chunks:
            yield from _split_lines(chunk, do_lower_case, morph)
        return
    import multiprocessing
    split = functools.partial(_split_lines, do_lower_case=do_lower_case, morph=morph)
    with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
        while batch := list(itertools.islice(chunks, 4 * num_workers)):
            for words in pool.map(split, batch):
                yield from words


def choose_alphabet(lines, do_lower_case: bool, limit: int) -> tuple[list[str], list[str]]:
    """The trainer's starting pieces, chosen reproducibly: (characters, "##" continuations).

    Characters: the `limit` most frequent in the normalised text, ties broken by code point. Continuations:
    "##c" for each that follows a non-space character somewhere, punctuation excepted (always a word of its
    own). tokenizers' trainer finds these itself, but cuts the alphabet at a count tie in hash-table order and
    numbers continuations in the order it meets them, and merge ties go by number: two builds on the same
    corpus gave different vocabs. A character seen only after punctuation (or split off by --morph) gets a
    continuation it never uses; splitting words exactly here cost 5x the time.
    """
    normalizer = fast_normalizer(do_lower_case)
    counts, inner = collections.Counter(), set()
    for line in lines:
        text = normalizer.normalize_str(line)
        counts.update(text)
        for word in text.split():
            inner.update(word[1:])
    alphabet = sorted((c for c in counts if not c.isspace()), key=lambda c: (-counts[c], c))[:limit]
    return alphabet, ["##" + c for c in alphabet if c in inner and not is_punct(c)]


def train_wordpiece(lines, vocab_size: int, min_frequency: int, alphabet: list[str], continuations: list[str],
                    do_lower_case: bool):
    tok = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN, continuing_subword_prefix="##"))
    tok.normalizer = fast_normalizer(do_lower_case)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # An initial alphabet outranks every counted character, so with the limit at its length the trainer keeps
    # exactly it; continuations given as special tokens get fixed ids, and the trainer uses them as it meets them
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=[*SPECIAL_TOKENS, *continuations], initial_alphabet=alphabet,
                                        limit_alphabet=len(alphabet), continuing_subword_prefix="##",
                                        show_progress=False)
    tok.train_from_iterator(lines, trainer)
    return [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]


def train_sentencepiece(word_lines, vocab_size: int, model_type: str, limit_alphabet: int, corpus_name: str = "corpus",
                        max_sentences: int = SPM_MAX_SENTENCES):
    """Train sentencepiece on pre-split words and rewrite its pieces in WordPiece form.

    "▁x" (word-initial) becomes "x", any other piece "y" becomes "##y". The `limit_alphabet` most frequent
    characters go first in both forms: greedy WordPiece has no fallback, so a character missing in either form
    would turn whole words into [UNK].
    """
    import sentencepiece as spm
    chars, failure = collections.Counter(), []

    def sentences():
        try:
            for words in word_lines:
                for w in words:
                    chars.update(w)
                for i in range(0, len(words), 256):  # short sentences: sentencepiece skips over-long ones
                    yield " ".join(words[i:i + 256])
        except Exception as e:  # sentencepiece re-raises it as a RuntimeError whose last line is a stack frame
            failure.append(e)
            raise

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(), model_writer=model, vocab_size=vocab_size, model_type=model_type,
            normalization_rule_name="identity",  # the text is already normalised; its NFKC would change it
            hard_vocab_limit=False, character_coverage=0.9995, input_sentence_size=max_sentences,
            shuffle_input_sentence=True, minloglevel=2)
    except RuntimeError as e:
        if failure:
            raise failure[0] from None
        if not chars:  # every line was invisible characters: no sentence reached sentencepiece
            raise ValueError(f"corpus {corpus_name} has no text (only blank or invisible characters)") from None
        first = str(e).strip().splitlines()[0]
        small = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", first)
        if small:  # its own advice names a sentencepiece option that build-vocab does not have
            raise ValueError(f"--vocab_size {small.group(1)} is smaller than the {small.group(2)} characters "
                             f"sentencepiece must keep from {corpus_name}: raise --vocab_size") from None
        raise ValueError(f"sentencepiece training failed: {first}") from None
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    tokens = [t for c, _ in chars.most_common(limit_alphabet) for t in (c, "##" + c)]
    if len(SPECIAL_TOKENS) + len(tokens) >= vocab_size:
        raise ValueError(f"--limit_alphabet {limit_alphabet} leaves no room: the alphabet alone needs "
                         f"{len(SPECIAL_TOKENS) + len(tokens)} tokens >= --vocab_size {vocab_size}")
    for i in range(sp.get_piece_size()):
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i)):
            p = sp.id_to_piece(i)
            tokens.append(p[1:] if p.startswith("▁") else "##" + p)
    return [t for t in tokens if t not in ("", "##")]


def build_vocab(corpus: list[str], vocab_size: int, output: str, min_frequency: int = 2,
                do_lower_case: bool = False, morph: str | None = None, algorithm: str = "wordpiece",
                model_type: str = "unigram", limit_alphabet: int | None = None, num_workers: int = 1,
                max_sentences: int = SPM_MAX_SENTENCES) -> list[str]:
    """Train a vocab on the corpus files and write it (specials first, release order) to `output`.
    num_workers: processes that pre-split the text with the morpheme analyser (morph only); max_sentences: the most
    sentences sentencepiece holds (a sample beyond)."""
    if vocab_size < len(SPECIAL_TOKENS):
        raise ValueError(f"--vocab_size {vocab_size} is smaller than the {len(SPECIAL_TOKENS)} special tokens")
    if algorithm == "sentencepiece" and importlib.util.find_spec("sentencepiece") is None:  # a test requirement only
        raise ValueError("--algorithm sentencepiece needs the sentencepiece package: pip install sentencepiece")
    if os.path.isdir(output):
        raise ValueError(f"--output {output} is a directory; give the vocab.txt path")
    _check_corpus(corpus)
    # by default single characters (in plain and "##" form) fill at most two thirds of the vocab, so the rest is
    # left for longer pieces; at 32k that keeps every character of a typical Korean corpus
    if limit_alphabet is None:
        limit_alphabet = max(1, (vocab_size - len(SPECIAL_TOKENS)) // 3)
    if algorithm == "wordpiece":  # a first pass over the corpus, with its own progress bar
        alphabet, continuations = choose_alphabet(_iter_lines(corpus, [0]), do_lower_case, limit_alphabet)
        if not alphabet:
            raise ValueError(f"corpus {' '.join(corpus)} has no text (only blank or invisible characters)")
    counter = [0]
    lines = _iter_lines(corpus, counter)
    first = next(lines, None)  # fail before any training on a corpus with no text
    if first is None:
        raise ValueError(f"corpus {' '.join(corpus)} has no text (only blank lines)")
    lines = itertools.chain([first], lines)
    if algorithm == "sentencepiece":
        learned = train_sentencepiece(_pre_split(lines, do_lower_case, morph, num_workers), vocab_size, model_type,
                                      limit_alphabet, " ".join(corpus), max_sentences)
    else:
        if morph:  # the trainer re-normalises; harmless, the normaliser is idempotent
            lines = (" ".join(words) for words in _pre_split(lines, do_lower_case, morph, num_workers))
        learned = train_wordpiece(lines, vocab_size, min_frequency, alphabet, continuations, do_lower_case)
    tokens = list(dict.fromkeys([*SPECIAL_TOKENS, *learned]))
    if len(tokens) > vocab_size and algorithm == "wordpiece":
        raise ValueError(f"--limit_alphabet {limit_alphabet} leaves no room: the alphabet alone needs "
                         f"{len(tokens)} tokens > --vocab_size {vocab_size}")
    tokens = tokens[:vocab_size]
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)

    def fill(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(t + "\n" for t in tokens)

    atomic_write(output, fill)
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
    p = sub.add_parser("build-vocab", help="train a WordPiece vocab.txt on plain-text files (one text a line)",
                       description="\n\n".join(__doc__.split("\n\n")[:2]),  # the summary and commands
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--corpus", "--input_files", dest="corpus", nargs="+", required=True,
                   help="UTF-8 text files (--input_files: create_pretraining_data.py's spelling)")
    g.add_argument("--output", required=True, help="vocab.txt to write (atomically)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output (shards and checkpoints made with it no longer match it)")
    g.add_argument("--do_lower_case", action="store_true", help="lower-case (never strips accents)")
    # --morph_analyzer as in create_pretraining_data.py and the model config; --morph is the older spelling
    g.add_argument("--morph_analyzer", "--morph", dest="morph", choices=["kiwi"], default=None,
                   help="pre-split words into morphemes first")
    g.add_argument("--num_workers", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else 1, help="with --morph_analyzer: processes that pre-split the text (default: the usable CPUs)")
    g = p.add_argument_group("training")
    g.add_argument("--vocab_size", type=int, default=32000, help="lines in the vocab, specials included")
    g.add_argument("--algorithm", choices=["wordpiece", "sentencepiece"], default="wordpiece")
    g.add_argument("--model_type", choices=["unigram", "bpe"], default="unigram", help="sentencepiece model")
    g.add_argument("--max_sentences", type=int, default=SPM_MAX_SENTENCES,
                   help="sentencepiece: train on at most this many sentences, sampled beyond (it holds them in "
                        "memory, about 2.5 KB each: the default takes about 2.5 GB)")
    g.add_argument("--min_frequency", type=int, default=2, help="wordpiece: least count of a merged pair")
    g.add_argument("--limit_alphabet", type=int, default=None,
                   help="most frequent single characters kept (default (vocab_size - 5) // 3)")
    args = parser.parse_args(argv)
    try:
        for flag, ok, need in (("num_workers", args.num_workers >= 1, "at least 1"),
                               ("limit_alphabet", args.limit_alphabet is None or args.limit_alphabet >= 1,
                                "at least 1"),
                               ("min_frequency", args.min_frequency >= 0, "at least 0"),
                               ("max_sentences", args.max_sentences > 100, "over 100 (sentencepiece's floor)")):
            if not ok:
                raise ValueError(f"--{flag} {getattr(args, flag)}: {need}")
        # before the corpus is read: training takes minutes, and a vocab replaced by mistake orphans its shards
        if os.path.isdir(args.output):
            raise ValueError(f"--output {args.output}: is a directory; name the vocab file to write")
        if os.path.exists(args.output) and not args.overwrite:
            raise ValueError(f"--output {args.output} already exists; pass --overwrite to replace it (shards and "
                             "checkpoints made with it are tied to its exact contents)")
        check_makeable(args.output, "--output")
        build_vocab(args.corpus, args.vocab_size, args.output, min_frequency=args.min_frequency,
                    do_lower_case=args.do_lower_case, morph=args.morph, algorithm=args.algorithm,
                    model_type=args.model_type, limit_alphabet=args.limit_alphabet, num_workers=args.num_workers,
                    max_sentences=args.max_sentences)
    except (ValueError, OSError, RuntimeError) as e:  # RuntimeError: e.g. the analyser is not installed
        # train_utils.fail would pull in torch; this module stays importable without it
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run_script(main)

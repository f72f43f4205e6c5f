"""Tokenise a Korean plain-text corpus into compact shards for run_pretraining.py (masks are made at load time).

    python create_pretraining_data.py --input_files data/korean_text/boddari/*.txt \
        --vocab_file runs/vocab/vocab.txt --output_dir runs/shards
    python create_pretraining_data.py --input_files corpus.txt --vocab_file vocab.txt --output_dir shards \
        --sentence_splitter kiwi --num_workers 8
    python create_pretraining_data.py --input_files corpus.txt --vocab_file vocab_kiwi.txt --morph_analyzer kiwi \
        --output_dir shards_kiwi --overwrite

Input: UTF-8 text, one sentence or paragraph per line, a blank line between documents (each file also starts a new
document). Paragraph lines are split into sentences (a punctuation regex by default; kiwipiepy's splitter with
--sentence_splitter kiwi).

Output directory (np.load(..., mmap_mode="r") works on every array):
  shard_NNNNN.ids.npy         uint16 token ids (uint32 when the vocab has more than 65536 entries), [num_tokens]
  shard_NNNNN.word_start.npy  np.packbits(bitorder="little") of "this piece starts a word" (not a ## piece; with
                              --morph_analyzer also not glued to the previous piece in the text), [ceil(num_tokens/8)]
  shard_NNNNN.sentences.npy   int64 [num_sentences + 1]: sentence s is ids[sentences[s]:sentences[s+1]]
  shard_NNNNN.documents.npy   int64 [num_documents + 1]: document d is sentences documents[d]..documents[d+1]-1
  vocab.txt                   copy of --vocab_file
  meta.json                   settings, counts, shard list and the run summary; written last
Everything is written into OUTPUT_DIR.tmp-* and renamed at the end, so a directory with meta.json is complete.
A shard is closed at the first sentence end past --shard_size_tokens; a document still open there goes on as a
new document in the next shard (counted in the summary). The output is identical for any --num_workers.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import itertools
import multiprocessing as mp
import os
import re
import shutil
import sys
import tempfile
import time
import unicodedata

import numpy as np
from tqdm import tqdm

from pretraining_data import FORMAT, FORMAT_VERSION, shard_path, vocab_sha256
from tokenization import build_fast_tokenizer, load_vocab, special_token_ids
from train_utils import atomic_write_json, fail, warn

MIN_SPLIT_CHARS = 20  # shorter lines are kept whole: two Korean sentences rarely fit, and kiwi is the slow part
_SENT_END = re.compile(r"(?<![0-9])[.!?。…]+[\"'”’」』)\]]*\s+")  # no split after digits: "2010. 11. 12.", "1. 총칙"


def add_data_args(parser):
    g = parser.add_argument_group("data")
    g.add_argument("--input_files", nargs="+", required=True, help="UTF-8 text files, blank line between documents")
    g.add_argument("--output_dir", required=True)
    g.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    g.add_argument("--vocab_file", required=True, help="WordPiece vocab.txt (tokenization.py build-vocab)")
    g.add_argument("--do_lower_case", action="store_true", help="must match how the vocab was built")
    g.add_argument("--morph_analyzer", choices=["kiwi"], default=None,
                   help="pre-split words into morphemes (must match how the vocab was built)")
    # regex by default: kiwi splits Korean sentences better but runs at ~0.03 MB/s and ~0.7 GB per worker.
    g.add_argument("--sentence_splitter", choices=["kiwi", "regex", "none"], default="regex",
                   help="how paragraph lines are cut into sentences (kiwi: kiwipiepy's splitter, slow but "
                        "better on paragraph text; falls back to regex when not installed)")
    g.add_argument("--shard_size_tokens", type=int, default=1 << 25,
                   help="tokens per shard (peak memory: about 6 bytes per token of one shard)")
    g.add_argument("--num_workers", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1, help="tokeniser processes (default: the usable CPUs)")
    g.add_argument("--task_chars", type=int, default=1 << 20, help="characters of text per worker task")
    return g


# ----------------------------------------------------------------------------------------------------------------
# sentence splitting and tokenisation (runs in the worker processes)

def split_regex(line: str) -> list[str]:
    out, last = [], 0
    for m in _SENT_END.finditer(line):
        out.append(line[last:m.end()].strip())
        last = m.end()
    out.append(line[last:].strip())
    return [s for s in out if s]


def cut_at(line: str, pieces: list[str]) -> list[str]:
    """Cut `line` where the pieces start, so the sentences always partition the line exactly.

    kiwi's sentences can overlap (it sometimes repeats a trailing syllable as an extra sentence): a piece that is
    not found from the end of the previous one is ignored rather than duplicating text.
    """
    cuts, cur = [0], 0
    for piece in pieces:
        at = line.find(piece, cur)
        if at < 0 or not piece:
            continue
        if at > cuts[-1]:
            cuts.append(at)
        cur = at + len(piece)
    return [s for s in (line[a:b].strip() for a, b in zip(cuts, cuts[1:] + [len(line)])) if s]


def make_splitter(name: str):
    if name == "none":
        return lambda line: [line]
    if name == "regex":
        return lambda line: split_regex(line) if len(line) >= MIN_SPLIT_CHARS else [line]
    from morphology import load_analyzer
    kiwi = load_analyzer("kiwi")
    return lambda line: cut_at(line, kiwi.split_sentences(line)) if len(line) >= MIN_SPLIT_CHARS else [line]


_W = {}  # per-process tokenizer state: a tokenizer with a Python pre-tokenizer cannot be pickled, so build it here


def init_worker(cfg: dict):
    if cfg["pooled"]:  # one process per core already; the tokenizer's own thread pool would oversubscribe
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _W.clear()
    _W.update(cfg, tok=build_fast_tokenizer(cfg["vocab_file"], do_lower_case=cfg["do_lower_case"],
                                            morph_analyzer=cfg["morph_analyzer"]),
              split=make_splitter(cfg["sentence_splitter"]))


def process_task(lines: list) -> dict:
    """Sentence-split and tokenise a list of lines (None = document break) into flat arrays."""
    sents, breaks = [], []
    for line in lines:
        if line is None:
            breaks.append(len(sents))
            continue
        if not unicodedata.is_normalized("NFC", line):
            line = unicodedata.normalize("NFC", line)
        sents.extend(_W["split"](line))
    encs = _W["tok"].encode_batch(sents, add_special_tokens=False) if sents else []
    lens = np.fromiter((len(e.ids) for e in encs), np.int64, count=len(encs))
    n = int(lens.sum())
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), np.int64, count=n)
    word_start = ~_W["is_continuation"][ids]
    first = np.cumsum(lens) - lens  # first token of each sentence
    if _W["morph_analyzer"] and n:
        # morphemes of one eojeol come out as separate words; only a gap in the text really starts a new word
        off = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(e.offsets for e in encs)),
                          np.int64, count=2 * n).reshape(n, 2)
        word_start[1:] &= off[1:, 0] > off[:-1, 1]
    word_start[first[lens > 0]] = True
    kept_before = np.concatenate([[0], np.cumsum(lens > 0)])  # sentences that tokenised to nothing are dropped
    return {"ids": ids.astype(_W["dtype"]), "word_start": word_start, "sent_lens": lens[lens > 0],
            "breaks": kept_before[np.asarray(breaks, np.int64)], "sentences_in": len(sents),
            "unk": int((ids == _W["unk_id"]).sum())}


def run_tasks(tasks, cfg: dict, num_workers: int):
    """Results in task order (deterministic for any worker count); at most 2 tasks per worker in flight so
    memory does not grow with the corpus (Pool.imap would read the whole input ahead)."""
    if num_workers == 1:
        init_worker(dict(cfg, pooled=False))
        yield from map(process_task, tasks)
        return
    with mp.get_context().Pool(num_workers, initializer=init_worker, initargs=(dict(cfg, pooled=True),)) as pool:
        pending = collections.deque()
        for task in tasks:
            pending.append(pool.apply_async(process_task, (task,)))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ----------------------------------------------------------------------------------------------------------------
# reading (main process)

def read_tasks(paths: list[str], task_chars: int, progress):
    """Lines of all files in tasks of ~task_chars characters; None marks a document break."""
    task, size, at_break = [], 0, False
    for path in paths:
        if not at_break:
            task.append(None)
            at_break = True
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                progress(len(raw))
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                     f"{e.start + 1})") from None
                line = line.lstrip("\ufeff").strip() if lineno == 1 else line.strip()
                if not line:
                    if not at_break:
                        task.append(None)
                        at_break = True
                    continue
                task.append(line)
                at_break = False
                size += len(line)
                if size >= task_chars:
                    yield task
                    task, size = [], 0
    if task:
        yield task


class ShardWriter:
    """Accumulates tokens of at most one shard, then writes its four arrays."""

    def __init__(self, out_dir: str, dtype, shard_size_tokens: int):
        self.out_dir, self.dtype, self.limit = out_dir, dtype, shard_size_tokens
        self.shards, self.single_sentence_docs, self.cut_docs = [], 0, 0
        self._continues = False  # the open document was cut by the last flush
        self._reset()

    def _reset(self):
        self.id_parts, self.ws_parts, self.sent_lens, self.doc_sents, self.tokens, self.open = [], [], [], [], 0, 0

    def end_document(self):
        if self.open:
            self.doc_sents.append(self.open)
            self.single_sentence_docs += self.open == 1
        self.open, self._continues = 0, False

    def add(self, res: dict):
        ids, ws, breaks = res["ids"], res["word_start"], res["breaks"].tolist()
        bi, tok, taken = 0, 0, 0
        for s, n in enumerate(res["sent_lens"].tolist()):
            while bi < len(breaks) and breaks[bi] == s:
                self.end_document()
                bi += 1
            if self._continues:
                self.cut_docs += 1
                self._continues = False
            self.sent_lens.append(n)
            self.open += 1
            self.tokens += n
            tok += n
            if self.tokens >= self.limit:
                self.id_parts.append(ids[taken:tok])
                self.ws_parts.append(ws[taken:tok])
                taken = tok
                self.flush()
        for _ in range(bi, len(breaks)):
            self.end_document()
        if tok > taken:
            self.id_parts.append(ids[taken:tok])
            self.ws_parts.append(ws[taken:tok])

    def flush(self):
        cut = self.open > 0
        self.end_document()
        self._continues = cut
        if not self.sent_lens:
            return
        name = f"shard_{len(self.shards):05d}"
        arrays = {"ids": np.concatenate(self.id_parts).astype(self.dtype, copy=False),
                  "word_start": np.packbits(np.concatenate(self.ws_parts), bitorder="little"),
                  "sentences": np.concatenate([[0], np.cumsum(self.sent_lens)]).astype(np.int64),
                  "documents": np.concatenate([[0], np.cumsum(self.doc_sents)]).astype(np.int64)}
        for part, arr in arrays.items():
            np.save(shard_path(self.out_dir, name, part), arr)
        self.shards.append({"name": name, "num_tokens": int(self.tokens), "num_sentences": len(self.sent_lens),
                            "num_documents": len(self.doc_sents)})
        self._reset()


# ----------------------------------------------------------------------------------------------------------------

def check_args(args):
    for path in args.input_files:
        if not os.path.isfile(path):
            fail(f"--input_files {path}: no such file")
    if not os.path.isfile(args.vocab_file):
        fail(f"--vocab_file {args.vocab_file}: no such file")
    for flag in ("shard_size_tokens", "num_workers", "task_chars"):
        if getattr(args, flag) < 1:
            fail(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    out = args.output_dir
    if os.path.exists(out) and not args.overwrite:
        if os.path.isfile(os.path.join(out, "meta.json")):
            fail(f"--output_dir {out} already holds prepared shards; pass --overwrite to replace them")
        if not os.path.isdir(out) or os.listdir(out):
            fail(f"--output_dir {out} exists and is not an empty directory; pass --overwrite or choose another")
    if args.morph_analyzer and importlib.util.find_spec("kiwipiepy") is None:
        fail("--morph_analyzer kiwi needs kiwipiepy: run `pip install kiwipiepy`")


def prepare(args, tmp_dir: str) -> dict:
    """Write all shards and meta.json into tmp_dir; return meta."""
    t0 = time.time()
    vocab = load_vocab(args.vocab_file)
    specials = special_token_ids(vocab, args.vocab_file)  # ValueError naming the file and the missing tokens
    splitter = args.sentence_splitter
    # find_spec, not load_analyzer: loading the model here would copy it into every forked worker for nothing
    if splitter == "kiwi" and importlib.util.find_spec("kiwipiepy") is None:
        print("note: kiwipiepy is not installed; splitting sentences with a punctuation regex "
              "(pip install kiwipiepy for Korean sentence splitting)", file=sys.stderr)
        splitter = "regex"
    vocab_size = max(vocab.values()) + 1  # = lines in the file (a duplicated token keeps its first id)
    dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
    is_cont = np.zeros(vocab_size, bool)
    is_cont[[i for t, i in vocab.items() if t.startswith("##") and len(t) > 2]] = True
    cfg = dict(vocab_file=args.vocab_file, do_lower_case=args.do_lower_case, morph_analyzer=args.morph_analyzer,
               sentence_splitter=splitter, is_continuation=is_cont, dtype=dtype, unk_id=specials["unk"])
    empty_files = [p for p in args.input_files if os.path.getsize(p) == 0]
    total_bytes = sum(os.path.getsize(p) for p in args.input_files)
    writer = ShardWriter(tmp_dir, dtype, args.shard_size_tokens)
    sentences_in = unk = 0
    # disable=None: no bar when stderr is not a terminal, so logs and error output stay one line per event
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenising", mininterval=1.0, disable=None) as bar:
        tasks = read_tasks(args.input_files, args.task_chars, bar.update)
        for res in run_tasks(tasks, cfg, args.num_workers):
            writer.add(res)
            sentences_in += res["sentences_in"]
            unk += res["unk"]
    writer.flush()
    n_tok = sum(s["num_tokens"] for s in writer.shards)
    if n_tok == 0:
        raise ValueError(f"no tokens in {', '.join(args.input_files)}: the corpus is empty")
    for path in empty_files:
        warn(f"{path} is empty")
    seconds = time.time() - t0
    summary = {"documents": sum(s["num_documents"] for s in writer.shards),
               "sentences": sum(s["num_sentences"] for s in writer.shards), "tokens": n_tok,
               "unk_tokens": unk, "unk_rate": unk / n_tok, "empty_sentences_dropped": sentences_in - sum(
                   s["num_sentences"] for s in writer.shards),
               "single_sentence_documents": writer.single_sentence_docs,
               "documents_cut_at_shard_end": writer.cut_docs, "input_bytes": total_bytes,
               "seconds": round(seconds, 2), "mb_per_s": round(total_bytes / 1e6 / max(seconds, 1e-9), 3),
               "num_workers": args.num_workers}
    shutil.copyfile(args.vocab_file, os.path.join(tmp_dir, "vocab.txt"))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "vocab_size": vocab_size,
            "vocab_sha256": vocab_sha256(args.vocab_file),
            "do_lower_case": args.do_lower_case, "morph_analyzer": args.morph_analyzer,
            "sentence_splitter": splitter, "dtype": np.dtype(dtype).name, "special_token_ids": specials,
            "input_files": list(args.input_files), "num_documents": summary["documents"],
            "num_sentences": summary["sentences"], "num_tokens": n_tok, "shards": writer.shards,
            "summary": summary}
    atomic_write_json(os.path.join(tmp_dir, "meta.json"), meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(os.path.join(tmp_dir, "meta.json"), 0o666 & ~umask)  # both temp helpers create owner-only modes
    os.chmod(tmp_dir, 0o777 & ~umask)
    return meta


def publish(tmp_dir: str, out: str):
    """Move the finished tmp dir into place; an old output is removed only after the new one is there."""
    old = None
    if os.path.isdir(out) and not os.listdir(out):
        os.rmdir(out)
    elif os.path.lexists(out):
        old = tempfile.mkdtemp(prefix=os.path.basename(out) + ".old-", dir=os.path.dirname(out))
        os.replace(out, os.path.join(old, "data"))
    os.replace(tmp_dir, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def print_summary(meta: dict, out: str):
    s = meta["summary"]
    print(f"wrote {len(meta['shards'])} shard(s) to {out}: {s['documents']:,} documents, {s['sentences']:,} sentences, "
          f"{s['tokens']:,} tokens ({meta['dtype']}); UNK rate {100 * s['unk_rate']:.3f}%; "
          f"{s['input_bytes'] / 1e6:.1f} MB in {s['seconds']:.1f} s = {s['mb_per_s']:.2f} MB/s")
    if s["single_sentence_documents"]:
        warn(f"{s['single_sentence_documents']:,} documents have a single sentence; their SOP pairs are split "
             "inside the sentence at load time")
    if s["documents_cut_at_shard_end"]:
        print(f"note: {s['documents_cut_at_shard_end']} documents were cut at a shard end", file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    args = parser.parse_args(argv)
    check_args(args)
    out = os.path.abspath(args.output_dir)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=os.path.basename(out) + ".tmp-", dir=os.path.dirname(out))
    try:
        meta = prepare(args, tmp_dir)
        publish(tmp_dir, out)
    except (ValueError, FileNotFoundError, OSError) as e:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        fail(str(e))
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    print_summary(meta, args.output_dir)
    return meta


if __name__ == "__main__":
    main()

r"""Tokenise a Korean plain-text corpus into compact shards for run_pretraining.py (masks are made at load time).

    python create_pretraining_data.py --input_files data/korean_text/boddari/*.txt \
        --vocab_file runs/vocab/vocab.txt --output_dir runs/shards
    python create_pretraining_data.py --input_files corpus.txt --vocab_file vocab.txt --output_dir shards \
        --sentence_splitter kiwi --num_workers 8
    python create_pretraining_data.py --input_files corpus.txt --vocab_file vocab_kiwi.txt --morph_analyzer kiwi \
        --output_dir shards_kiwi --overwrite

Input: UTF-8 text, one sentence or paragraph per line, a blank line between documents (each file also starts a new
document). Paragraph lines are split into sentences (a punctuation regex by default; kiwipiepy's splitter with
--sentence_splitter kiwi). A line longer than MAX_LINE_BYTES (256 KiB, e.g. a file with CR-only line ends) is cut
after the last CR, else ASCII whitespace, in the second half of the cap (else before the character the cap falls in),
and the pieces go on as lines of the same document: memory does not grow with the longest line (cuts counted in the
summary).

Output directory (np.load(..., mmap_mode="r") works on every array):
  shard_NNNNN.ids.npy         uint16 token ids (uint32 when the vocab has more than 65536 entries), [num_tokens]
  shard_NNNNN.word_start.npy  np.packbits(bitorder="little") of "this piece starts a word" (not a ## piece; with
                              --morph_analyzer also not glued to the previous piece in the text), [ceil(num_tokens/8)]
  shard_NNNNN.sentences.npy   int64 [num_sentences + 1]: sentence s is ids[sentences[s]:sentences[s+1]]
  shard_NNNNN.documents.npy   int64 [num_documents + 1]: document d is sentences documents[d]..documents[d+1]-1
  shard_NNNNN.sources.npy     int32 [num_documents]: the index in meta.json's input_files of document d's file
                              (run_pretraining.py --source_weights; shards written before it existed lack it)
  vocab.txt                   copy of --vocab_file
  meta.json                   settings, counts, shard list and the run summary; written last
Everything is written into OUTPUT_DIR.tmp-HOST-PID-* and renamed at the end, so a directory with meta.json is complete;
an error, Ctrl-C (exit 130) or SIGTERM (exit 143) removes it, and one left by a killed run (its PID gone on this HOST)
is removed at the next start. --overwrite replaces only a directory holding this script's output (meta.json, vocab.txt
and shard files, nothing else): any other non-empty directory is refused, with or without it.
A shard is closed at the first sentence end at or past --shard_size_tokens; a document still open there goes on as a
new document in the next shard (counted in the summary). The output is identical for any --num_workers.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import numpy as np
from tqdm import tqdm

import corpus_tasks
from corpus_tasks import WorkerDied, read_tasks, run_tasks
from fileio import atomic_write_json, umask
from pretraining_data import FORMAT, FORMAT_VERSION, shard_path, vocab_sha256
from tokenization import load_vocab, special_token_ids
from train_utils import fail, usable_cpus, warn

_OUR_FILE = re.compile(r"shard_\d{5,}\.(ids|word_start|sentences|documents|sources)\.npy|meta\.json|vocab\.txt")


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
    g.add_argument("--num_workers", type=int, default=usable_cpus(),
                   help="tokeniser processes (default: the usable CPUs)")
    g.add_argument("--task_chars", type=int, default=1 << 20, help="characters of text per worker task")
    return g


class ShardWriter:
    """Accumulates tokens of at most one shard, then writes its five arrays."""

    def __init__(self, out_dir: str, dtype, shard_size_tokens: int):
        self.out_dir, self.dtype, self.limit = out_dir, dtype, shard_size_tokens
        self.shards, self.single_sentence_docs, self.cut_docs = [], 0, 0
        self._continues = False  # the open document was cut by the last flush
        self.open_source = -1  # input file of the open document
        self._reset()

    def _reset(self):
        self.id_parts, self.ws_parts, self.sent_lens, self.doc_sents, self.tokens, self.open = [], [], [], [], 0, 0
        self.doc_sources = []

    def end_document(self):
        if self.open:
            self.doc_sents.append(self.open)
            self.doc_sources.append(self.open_source)
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
            if not self.open:  # a task never spans two files, so a document's first sentence names its file
                self.open_source = res["source"]
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
                  "documents": np.concatenate([[0], np.cumsum(self.doc_sents)]).astype(np.int64),
                  "sources": np.asarray(self.doc_sources, np.int32)}
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
    problem = output_problem(args.output_dir, args.overwrite)
    if problem:
        fail(f"--output_dir {problem}")
    if args.morph_analyzer and importlib.util.find_spec("kiwipiepy") is None:
        fail("--morph_analyzer kiwi needs kiwipiepy: run `pip install kiwipiepy`")


def output_problem(out: str, overwrite: bool) -> str | None:
    """Why `out` must not be replaced by new shards, or None (it is missing, an empty directory, or this script's
    output and overwrite is set). Anything else is refused even with --overwrite: a mistyped --output_dir (say,
    a checkpoints folder) must not be wiped."""
    if not os.path.lexists(out) or os.path.isdir(out) and not os.path.islink(out) and not os.listdir(out):
        return None
    if not os.path.isdir(out):
        return f"{out} exists and is not a directory; choose another --output_dir"
    foreign = None
    with os.scandir(out) as it:
        for e in it:
            if not (_OUR_FILE.fullmatch(e.name) and e.is_file(follow_symlinks=False)):
                foreign = e.name
                break
    try:
        with open(os.path.join(out, "meta.json"), encoding="utf-8") as f:
            ours = json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if foreign is not None or not ours:
        what = f"it holds {foreign}" if foreign is not None else "no meta.json of this script there"
        return (f"{out} is not an empty directory or shards written by this script ({what}); it is not replaced "
                "even with --overwrite: choose another --output_dir")
    if not overwrite:
        return f"{out} already holds prepared shards; pass --overwrite to replace them"
    return None


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
    vocab_size = max(vocab.values()) + 1  # = lines in the file (the last line's token keeps its id)
    dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
    is_cont = np.zeros(vocab_size, bool)
    is_cont[[i for t, i in vocab.items() if t.startswith("##") and len(t) > 2]] = True
    cfg = dict(vocab_file=args.vocab_file, do_lower_case=args.do_lower_case, morph_analyzer=args.morph_analyzer,
               sentence_splitter=splitter, is_continuation=is_cont, dtype=dtype, unk_id=specials["unk"])
    empty_files = [p for p in args.input_files if os.path.getsize(p) == 0]
    total_bytes = sum(os.path.getsize(p) for p in args.input_files)
    writer = ShardWriter(tmp_dir, dtype, args.shard_size_tokens)
    sentences_in = unk = 0
    counts = {}
    # disable=None: no bar when stderr is not a terminal, so logs and error output stay one line per event
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenising", mininterval=1.0, disable=None) as bar:
        tasks = read_tasks(args.input_files, args.task_chars, bar.update, counts)
        # closing(): on an error here the workers stop now, not once the traceback holding this frame is freed
        with contextlib.closing(run_tasks(tasks, cfg, args.num_workers)) as results:
            for res in results:
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
               "documents_cut_at_shard_end": writer.cut_docs, "long_line_cuts": counts["long_line_cuts"],
               "input_bytes": total_bytes,
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
    mask = umask()
    os.chmod(os.path.join(tmp_dir, "meta.json"), 0o666 & ~mask)  # as np.save made the shards, not 0644
    os.chmod(tmp_dir, 0o777 & ~mask)  # mkdtemp's private 0700 would outlive the rename
    return meta


def publish(tmp_dir: str, out: str, overwrite: bool):
    """Move the finished tmp dir into place; an old output is removed only after the new one is there."""
    problem = output_problem(out, overwrite)  # again: the directory may have changed during the run
    if problem:
        raise ValueError(problem)
    old = None
    if os.path.isdir(out) and not os.path.islink(out) and not os.listdir(out):
        os.rmdir(out)
    elif os.path.lexists(out):
        old = tempfile.mkdtemp(prefix=os.path.basename(out) + ".old-", dir=os.path.dirname(out))
        os.replace(out, os.path.join(old, "data"))
    try:
        os.replace(tmp_dir, out)
    except BaseException:
        if old:
            os.replace(os.path.join(old, "data"), out)
            os.rmdir(old)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def tmp_prefix(out: str) -> str:
    """OUTPUT_DIR.tmp-HOST-PID-: who wrote a temp dir, so a later run can tell a dead run's from a live one's."""
    return f"{os.path.basename(out)}.tmp-{socket.gethostname()}-{os.getpid()}-"


def remove_stale_tmp_dirs(out: str):
    """Remove OUTPUT_DIR.tmp-HOST-PID-* dirs of runs on this host whose process is gone (killed by SIGKILL or the
    machine going down: nothing of theirs could clean up). Others' (another host; a live PID) are left alone."""
    base, parent = os.path.basename(out), os.path.dirname(out)
    pattern = re.compile(re.escape(base) + r"\.tmp-(.+)-(\d+)-[a-z0-9_]{8}")  # tempfile.mkdtemp's 8 characters
    for name in sorted(os.listdir(parent)):
        m = pattern.fullmatch(name)
        path = os.path.join(parent, name)
        if not m or m[1] != socket.gethostname() or not os.path.isdir(path) or os.path.islink(path):
            continue
        try:
            os.kill(int(m[2]), 0)
            continue
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):  # another user's live process; a PID past the OS's range
            continue
        shutil.rmtree(path, ignore_errors=True)
        print(f"note: removed {path}, left by an interrupted run", file=sys.stderr)


def remove_tmp(tmp_dir: str | None):
    if tmp_dir:  # None: stopped before mkdtemp returned
        shutil.rmtree(tmp_dir, ignore_errors=True)


class Terminated(BaseException):
    """SIGTERM as an exception, so the temp dir is removed on the way out (the default action leaves it)."""


def on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise Terminated


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
    if s["long_line_cuts"]:
        warn(f"{s['long_line_cuts']} cuts in lines longer than {corpus_tasks.MAX_LINE_BYTES} bytes; a sentence may "
             "be split at a cut")


def main(argv=None):
    parser = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    args = parser.parse_args(argv)
    check_args(args)
    out = os.path.abspath(args.output_dir)
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
    except OSError as e:
        fail(f"--output_dir {args.output_dir}: cannot create its parent ({e.strerror})")
    remove_stale_tmp_dirs(out)
    # signal.signal works only in the main thread; main() called from another thread keeps the default action
    catch = threading.current_thread() is threading.main_thread()
    old_sigterm = signal.signal(signal.SIGTERM, on_sigterm) if catch else None
    tmp_dir = None
    try:
        tmp_dir = tempfile.mkdtemp(prefix=tmp_prefix(out), dir=os.path.dirname(out))
        meta = prepare(args, tmp_dir)
        if catch:  # the work is done: a SIGTERM now must not stop publish() between its two renames
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        publish(tmp_dir, out, args.overwrite)
    except (ValueError, OSError, WorkerDied) as e:
        remove_tmp(tmp_dir)
        fail(str(e))
    except (Terminated, KeyboardInterrupt) as e:
        remove_tmp(tmp_dir)
        sig = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        fail(f"stopped by {sig.name}; partial output removed, {args.output_dir} untouched", 128 + sig)
    except BaseException:
        remove_tmp(tmp_dir)
        raise
    finally:
        if catch:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if old_sigterm is None else old_sigterm)
    print_summary(meta, args.output_dir)
    return meta


if __name__ == "__main__":
    main()

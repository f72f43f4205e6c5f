"""The corpus side of create_pretraining_data.py: text read in bounded tasks, split into sentences and tokenised in
worker processes, results back in task order.

    for result in run_tasks(read_tasks(paths, task_chars=1 << 20, progress=lambda n: None), cfg, num_workers=4):
        ...  # {"ids", "word_start", "sent_lens", "breaks", "source", "sentences_in", "unk"} per task

A task is (file index, lines) and never spans two files, so every result knows which input file its sentences came
from ("source"; create_pretraining_data.py records it per document for run_pretraining.py --source_weights).
Memory is bounded: a task holds about task_chars characters (a line longer than MAX_LINE_BYTES comes in pieces),
and at most two tasks per worker are in flight. cfg: vocab_file, do_lower_case, morph_analyzer, sentence_splitter,
dtype, unk_id, is_continuation (a bool array over the vocab).
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import re
import signal
import traceback
import unicodedata
from multiprocessing.connection import wait as wait_any
from multiprocessing.pool import RemoteTraceback

import numpy as np

from fileio import MAX_LINE_BYTES, read_lines
from tokenization import build_fast_tokenizer

MIN_SPLIT_CHARS = 20  # shorter lines are kept whole: two Korean sentences rarely fit, and kiwi is the slow part
_SENT_END = re.compile(r"(?<![0-9])[.!?。…]+[\"'”’」』)\]]*\s+")  # no split after digits: "2010. 11. 12.", "1. 총칙"
CR_LF = re.compile(r"\r*\n")  # one line end: LF, CRLF, or the CRCRLF of CRLF text written through a text mode
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


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


def process_task(task: tuple[int, list]) -> dict:
    """Sentence-split and tokenise a task, (file index, lines with None = document break), into flat arrays."""
    source, lines = task
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
            "breaks": kept_before[np.asarray(breaks, np.int64)], "source": source, "sentences_in": len(sents),
            "unk": int((ids == _W["unk_id"]).sum())}


class WorkerDied(RuntimeError):
    """A worker process ended without its result: killed (the out-of-memory killer) or crashed."""


def worker_main(conn, cfg: dict, inherited: list):
    """A tokeniser process: a task in, ("ok", result) or ("error", exception, traceback) out, until EOF."""
    # The parent's SIGTERM handler came along with fork, and a worker that turned SIGTERM into an exception would
    # outlive terminate(). Ctrl-C is the parent's to handle (it stops the workers); left on, every worker would
    # print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by run_tasks across the fork
    for c in inherited:  # the parent's ends, copied by fork: the parent's death must be an EOF here too
        c.close()
    try:
        init_worker(cfg)
        broken = None
    except Exception as e:  # reported with the first task, like an error in it
        broken = e
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if broken:
                raise broken
            msg = ("ok", process_task(task))
        except Exception as e:
            msg = ("error", e, traceback.format_exc())
        try:
            conn.send(msg)  # pickled whole before the first byte goes out
        except OSError:  # the parent is gone
            return
        except Exception:
            if msg[0] != "error":
                raise
            conn.send(("error", RuntimeError(f"{type(msg[1]).__name__}: {msg[1]}"), msg[2]))  # it does not pickle


def run_tasks(tasks, cfg: dict, num_workers: int):
    """Results in task order (deterministic for any worker count); at most 2 tasks per worker in flight or
    waiting, so memory does not grow with the corpus.

    One pipe per worker, not multiprocessing.Pool or ProcessPoolExecutor: Pool silently replaces a worker killed by
    e.g. the out-of-memory killer and waits forever for its task, and both hang for good when a worker dies while
    sending a result (the parent holds a write end of the shared result pipe, so the rest never comes and EOF
    never does). Here only the worker holds the write end of its pipe: its death is an EOF, and WorkerDied.
    """
    if num_workers == 1:
        init_worker(dict(cfg, pooled=False))
        yield from map(process_task, tasks)
        return
    ctx = mp.get_context()
    workers, ends = [], []
    try:
        for _ in range(num_workers):
            here, there = ctx.Pipe()
            ends.append(here)
            p = ctx.Process(target=worker_main, daemon=True, args=(
                there, dict(cfg, pooled=True), list(ends) if ctx.get_start_method() == "fork" else []))
            # Blocked across the fork: a worker that took a SIGTERM or Ctrl-C before worker_main installs its own
            # handlers would run the parent's, raise in its copy of the parent's stack and carry on as a second
            # parent (seen when an error right after start terminated the workers). Blocked, the signal waits
            # for the worker's handlers.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                p.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            there.close()  # before the next fork, so no other process holds this worker's end
            workers.append((p, here))
        idle, busy, done = list(range(num_workers)), {}, {}  # busy: worker -> task number; done: number -> result
        tasks, submitted, yielded, more = iter(tasks), 0, 0, True
        while True:
            while more and idle and submitted - yielded < 2 * num_workers:
                task = next(tasks, None)
                if task is None:
                    more = False
                    break
                w = idle.pop()
                try:
                    workers[w][1].send(task)
                except OSError:  # broken pipe: it is dead; wait_any reports how
                    pass
                busy[w] = submitted
                submitted += 1
            while yielded in done:
                yield done.pop(yielded)
                yielded += 1
            if not busy:
                if more:
                    continue
                return
            ready = wait_any([workers[w][1] for w in busy] + [workers[w][0].sentinel for w in busy])
            for w in list(busy):
                p, conn = workers[w]
                if conn not in ready and p.sentinel not in ready:
                    continue
                try:
                    msg = conn.recv()  # a worker that died mid-message: EOF, not a hang
                except (EOFError, OSError):
                    raise WorkerDied(f"a tokeniser worker process died{death(p)}: try fewer --num_workers or a "
                                     "smaller --task_chars") from None
                if msg[0] == "error":
                    raise msg[1] from RemoteTraceback(msg[2])  # the worker's traceback, shown with the parent's
                done[busy.pop(w)] = msg[1]
                idle.append(w)
    finally:
        # also on an error, Ctrl-C, SIGTERM or the consumer giving up (GeneratorExit): a busy worker must not go on
        # with a task nobody will read, minutes with kiwi
        for p, conn in workers:
            conn.close()
            p.terminate()
        for p, _ in workers:
            p.join()


def death(p) -> str:
    """' (killed by SIGKILL ...)': how a worker ended."""
    p.join(timeout=5)
    c = p.exitcode
    if c is None or c == 0:
        return ""
    if c < 0 and -c in signal.valid_signals():
        oom = "; SIGKILL is usually the out-of-memory killer" if -c == signal.SIGKILL else ""
        return f" (killed by {signal.Signals(-c).name}{oom})"
    return f" (exit status {c})"


# ----------------------------------------------------------------------------------------------------------------
# reading (main process)

def read_tasks(paths: list[str], task_chars: int, progress, counts: dict | None = None):
    """(file index, lines) tasks of ~task_chars characters, none spanning two files; None marks a document break
    (each file starts with one, unless the file before ended with a blank line).

    Lines longer than MAX_LINE_BYTES come in pieces (read_lines), so a task holds at most task_chars + MAX_LINE_BYTES
    characters; counts["long_line_cuts"] counts the cuts.
    """
    counts = {} if counts is None else counts
    counts.setdefault("long_line_cuts", 0)
    task, size, at_break = [], 0, False
    for k, path in enumerate(paths):
        if not at_break:
            task.append(None)
            at_break = True
        with open(path, "rb") as f:
            has_text = False  # in the line so far: only a line that is blank as a whole ends a document
            after_cr = False  # the piece before ended in a CR: a LF starting this one ends no second line
            for lineno, col, raw, line_end in read_lines(f, MAX_LINE_BYTES):
                progress(len(raw))
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                     f"{col + e.start + 1})") from None
                # a piece cut just after a CR ends at a line end (CR-only files): no line was cut there
                counts["long_line_cuts"] += not (line_end or text.endswith("\r"))
                if lineno == 1 and col == 0:
                    text = text.lstrip("\ufeff")
                lead = CR_LF.match(text) if after_cr else None
                if lead:  # this piece's first CRs and LF finish the line end that the last piece's CR began
                    text = text[lead.end():]
                    if not text:
                        after_cr = False
                        continue
                after_cr = text.endswith("\r")
                # A CR alone ends a line too (CR-only files), so their blank lines end documents as LF's do. CRs
                # before a LF are one line end with it: CRLF, and the CRCRLF of CRLF text written in text mode.
                parts = CR_LF.sub("\n", text).split("\r")
                if after_cr:
                    parts.pop()  # what follows the last CR is not a line of its own
                for i, part in enumerate(parts):
                    ends = line_end or after_cr or i < len(parts) - 1
                    line = part.strip()
                    if not line:
                        if ends and not has_text and not at_break:
                            task.append(None)
                            at_break = True
                        has_text = has_text and not ends
                        continue
                    task.append(line)
                    at_break = False
                    has_text = not ends
                    size += len(line)
                if size >= task_chars:
                    yield k, task
                    task, size = [], 0
        if task:
            yield k, task
            task, size = [], 0

"""File helpers without torch, for the modules that must stay torch-free (qa_data, vocab_builder) and everyone else:
atomic writes, a bounded line reader, a vocab.txt's lines, a run's JSONL log and its plots, and checkpoint
directories.

    atomic_write("runs/x/vocab.txt", lambda tmp: shutil.copyfile(src, tmp))
    atomic_write_json("runs/x/eval_results.json", {"f1": 88.1})
    digest = file_sha256("runs/vocab/vocab.txt")
    for lineno, col, raw, ends_line in read_lines(open("corpus.txt", "rb"), MAX_LINE_BYTES): ...
    logger = JsonlLogger("runs/x/log.jsonl"); logger.log({"step": 1, "loss": 9.2})
    publish_checkpoint_dir("runs/x/checkpoints", "step-100", lambda tmp: save(model, tmp), keep_last=2)

atomic_write fills a temp file beside the target, gives it the mode a plain open() would (0644 less the umask, not
mkstemp's private 0600: checkpoints, vocabs and caches are meant to be shared), puts it on disk and only then renames
it over the target: a crash leaves the old file or the new one, never a truncated one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile


def run_script(main):
    """A script's entry point: main(), with Ctrl-C ending it in one line and exit status 130 instead of a traceback.
    Every file is written atomically (atomic_write), so what was written before is whole. For
    `if __name__ == "__main__"` only: tests call main() themselves. Here, not in train_utils: build-vocab needs no
    torch."""
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C): files written so far are complete; run the same command to start again",
              file=sys.stderr, flush=True)
        sys.exit(130)


def umask() -> int:
    """The process's umask (setting it is the only way to read it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write_fn):
    """write_fn(tmp_path) fills a temp file beside `path`; it replaces `path` only once complete and on disk.
    The folder is made if missing."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=f".{os.path.basename(path)}.tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o644 & ~umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # before the rename, or a crash can leave a complete-looking name over an empty file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_makeable(path: str, flag: str):
    """ValueError naming `flag` when `path` (a file or a folder) cannot be made or written: a file, or a folder not
    writable, where its nearest existing folder should be. Makes nothing."""
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent == os.path.abspath(path) and not os.path.isdir(parent):
        return  # an existing file: whether it may be replaced is the caller's to say
    if not os.path.isdir(parent):
        raise ValueError(f"{flag} {path}: cannot be made, {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: cannot be written, {parent} is not writable")


def atomic_write_text(path: str, text: str):
    """`text`, UTF-8, at `path` through atomic_write."""
    def fill(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, fill)


def atomic_write_json(path: str, obj):
    """`obj` as indented UTF-8 JSON at `path` through atomic_write."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def file_sha256(path: str) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_vocab_lines(vocab_file: str) -> list[str]:
    """A vocab.txt's tokens, one a line, with whitespace around them stripped as the release's loader (and
    google-research/bert's) strips it: a line "서울 " is the token "서울". Universal newlines (a CRLF vocab reads the
    same) and -sig (so does one saved with a byte-order mark). ValueError naming the file when it is not UTF-8
    (e.g. saved as CP949)."""
    try:
        with open(vocab_file, encoding="utf-8-sig") as f:
            return [line.strip() for line in f]
    except UnicodeDecodeError as e:
        raise ValueError(f"vocab file {vocab_file} is not UTF-8 (byte offset {e.start})") from None


# Longer lines are read in pieces (read_lines). A line is tokenised as one unit (~30 bytes of worker memory per
# input byte in corpus preparation), so a file without line ends (CR-only, or one huge line) would need memory in
# proportion to the file. Real paragraphs are far shorter than this.
MAX_LINE_BYTES = 1 << 18


def read_lines(f, max_bytes: int):
    """(line number, byte offset in the line, bytes, ends the line) for the lines of a binary file.

    A line longer than max_bytes comes in pieces of at most max_bytes: cut after the last CR (a file with CR-only
    line ends), else ASCII whitespace, in the second half of the piece (a character boundary in UTF-8, and where the
    tokenizer splits words anyway), else before a character that the cap would split, so every piece decodes alone.
    """
    lineno, col, carry = 1, 0, b""
    while True:
        raw = f.readline(max_bytes - len(carry))
        if carry:
            raw = carry + raw
        if not raw:
            return
        if raw.endswith(b"\n") or len(raw) < max_bytes:  # readline stops short only at a line end or EOF
            yield lineno, col, raw, True
            lineno, col, carry = lineno + 1, 0, b""
            continue
        cut = raw.rfind(b"\r", max_bytes // 2) + 1  # a CR-only line end first
        if cut == 0:
            cut = max(raw.rfind(c, max_bytes // 2) for c in b" \t\x0b\x0c") + 1
        if cut == 0:
            cut = len(raw)
            for k in range(1, 4):  # a lead byte among the last three whose character does not fit
                b = raw[-k]
                if b < 0x80 or b >= 0xC0:
                    if b >= 0xC0 and (2 if b < 0xE0 else 3 if b < 0xF0 else 4) > k:
                        cut -= k
                    break
        yield lineno, col, raw[:cut], False
        col, carry = col + cut, raw[cut:]


# ----------------------------------------------------------------------------------------------------------------
# a run's log: one JSON object per line, and plots of it

class JsonlLogger:
    """Appends one JSON object per line; flushed each time so a crash keeps everything logged so far."""

    def __init__(self, path: str, append: bool = False):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._f = open(path, "a" if append else "w", encoding="utf-8")

    def log(self, row: dict):
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self):
        self._f.close()


def read_jsonl(path: str, allow_cut_end: bool = False) -> list[dict]:
    """The rows of a JSONL log. allow_cut_end: a last line without its line end that does not parse (the write a
    kill interrupted) is dropped instead of raising."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    if allow_cut_end and lines and not lines[-1].endswith("\n"):
        try:
            json.loads(lines[-1])
        except ValueError:
            lines.pop()
    return [json.loads(line) for line in lines if line.strip()]


def plot_jsonl(jsonl_path: str, keys, png_path: str, title: str = "", x_key: str = "step"):
    """Plot the given keys of a JSONL log against x_key; rows lacking a key are skipped for that curve."""
    import matplotlib  # here: it takes a second to import, and only the end of a run plots
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(jsonl_path)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key in keys:
        pts = [(r[x_key], r[key]) for r in rows if key in r and x_key in r and r[key] is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=key)
    ax.set_xlabel(x_key)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# checkpoint directories: ROOT/step-N/ plus a ROOT/latest pointer naming the newest complete one

def resolve_checkpoint_dir(path: str) -> str:
    """A run's output dir or its checkpoints/ dir -> the checkpoint its `latest` names; anything else as given."""
    for root in (os.path.join(path, "checkpoints"), path):
        pointer = os.path.join(root, "latest")
        if os.path.isfile(pointer):
            with open(pointer, encoding="utf-8") as f:
                return os.path.join(root, f.read().strip())
    return path


def publish_checkpoint_dir(root: str, name: str, write_fn, keep_last: int) -> str:
    """write_fn(tmp_dir) fills ROOT/NAME.tmp; it is renamed to ROOT/NAME, then ROOT/latest is replaced, then all
    but the newest keep_last step-N dirs up to this one are deleted. A crash at any point leaves `latest` naming a
    complete checkpoint. Returns ROOT/NAME."""
    tmp, final = os.path.join(root, name + ".tmp"), os.path.join(root, name)
    if os.path.isdir(tmp):  # left by a crash mid-write
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    write_fn(tmp)
    if os.path.isdir(final):  # same name from a stretch that crashed before `latest` reached it
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(os.path.join(root, "latest"), name + "\n")
    # step dirs past this one belong to an abandoned stretch (a rewind); they are replaced when reached again
    current = int(name[5:]) if name.startswith("step-") and name[5:].isdigit() else None
    if current is not None:
        steps = sorted(int(d[5:]) for d in os.listdir(root) if d.startswith("step-") and d[5:].isdigit())
        for old in [s for s in steps if s <= current][:-keep_last]:  # ends with `current`: never removed
            shutil.rmtree(os.path.join(root, f"step-{old}"), ignore_errors=True)
    return final

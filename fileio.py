"""File helpers without torch, for the modules that must stay torch-free (qa_data, vocab_builder) and everyone else.

    atomic_write("runs/x/vocab.txt", lambda tmp: shutil.copyfile(src, tmp))
    digest = file_sha256("runs/vocab/vocab.txt")
    for lineno, col, raw, ends_line in read_lines(open("corpus.txt", "rb"), MAX_LINE_BYTES): ...

atomic_write fills a temp file beside the target, gives it the mode a plain open() would (0644 less the umask, not
mkstemp's private 0600: checkpoints, vocabs and caches are meant to be shared), puts it on disk and only then renames
it over the target: a crash leaves the old file or the new one, never a truncated one.
"""
from __future__ import annotations

import hashlib
import os
import tempfile


def umask() -> int:
    """The process's umask (setting it is the only way to read it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write_fn):
    """write_fn(tmp_path) fills a temp file beside `path`; it replaces `path` only once complete and on disk."""
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


def atomic_write_text(path: str, text: str):
    """`text`, UTF-8, at `path` through atomic_write."""
    def fill(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, fill)


def file_sha256(path: str) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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

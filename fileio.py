"""File helpers without torch, for the modules that must stay torch-free (qa_data, vocab_builder) and everyone else.

    atomic_write("runs/x/vocab.txt", lambda tmp: shutil.copyfile(src, tmp))
    digest = file_sha256("runs/vocab/vocab.txt")

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


def file_sha256(path: str) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

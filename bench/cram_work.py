"""What a bench/cram.py work dir holds, and when a finished stage in it may be reused.

A work dir (bench/_work/cram/run by default) keeps the shards the run pretrains on, each stage's outputs and two
records: shards_archive.json (which archive the shards were unpacked from) and stage_settings.json (the settings
each finished stage ran with). A later run reuses what is there only where both still hold; anything else is
refused with one line asking for a new --work_dir, so a results file always describes what produced it.

    from cram_work import prepare_shards, check_reuse    # bench/ on sys.path, as for bench/cram.py
"""
from __future__ import annotations

if __name__ == "__main__":  # a module of bench/cram.py (its imports need bench/ and the root on sys.path)
    raise SystemExit("bench/cram_work.py is a module of bench/cram.py, not a script: run python bench/cram.py --help")

import json
import os
import shutil
import tarfile
import time

from fileio import atomic_write_json, file_sha256
from stages import run_stage
from train_utils import fail

# settings newer than some recorded stages, at the value those stages ran with
ADDED_SETTINGS = {"korsts": {"layer_lr_decay": 1.0, "pair_orders": "one", "head_init_seed": None}}


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def prepare_shards(work, logs, stages, py, input_dir=None, archive=None, smoke_text=None, smoke_vocab_size=None):
    """The shards to pretrain on: input_dir as it is; else (smoke_text given) a vocab and shards made here from
    that one text file; else the packed archive, unpacked into work/shards once and recorded as their source."""
    shards = input_dir or os.path.join(work, "shards")
    if smoke_text and not input_dir:
        vocab = os.path.join(work, "vocab.txt")
        run_stage("vocab", [py, "tokenization.py", "build-vocab", "--corpus", smoke_text, "--vocab_size",
                            str(smoke_vocab_size), "--output", vocab], vocab, stages, logs)
        run_stage("shards", [py, "create_pretraining_data.py", "--input_files", smoke_text, "--vocab_file", vocab,
                             "--output_dir", shards, "--num_workers", "1"],
                  os.path.join(shards, "meta.json"), stages, logs)
    elif not input_dir:
        # the shards belong to the archive they came from: another one (e.g. cram_prepare.sh MORPH=kiwi's) must not
        # find them unpacked and be taken for it
        record = os.path.join(work, "shards_archive.json")
        if not os.path.isfile(archive):
            fail(f"--archive {archive}: not found; run bash bench/cram_prepare.sh first (or pass --input_dir)")
        digest = file_sha256(archive)
        if os.path.isfile(os.path.join(shards, "meta.json")):
            try:
                before = load_json(record)
            except (OSError, ValueError):
                before = {}  # none (shards unpacked before archives were recorded) or unreadable: not known
            if before.get("sha256") != digest:
                fail(f"{shards} was unpacked from another archive ({before.get('archive', 'not recorded')}); "
                     f"pass a new --work_dir for --archive {archive}")
        else:
            t0 = time.time()
            unpack_shards(archive, work)
            stages["unpack"] = {"seconds": round(time.time() - t0, 1)}
        atomic_write_json(record, {"archive": os.path.abspath(archive), "sha256": digest})
    if not os.path.isfile(os.path.join(shards, "vocab.txt")):
        fail(f"{shards}: no vocab.txt (not a directory written by create_pretraining_data.py)")
    return shards


def unpack_shards(archive, work):
    """archive (shards/... as bench/cram_prepare.sh packs it) -> work/shards, complete or not at all."""
    if not os.path.isfile(archive):
        fail(f"--archive {archive}: not found; run bash bench/cram_prepare.sh first (or pass --input_dir)")
    tmp = os.path.join(work, "shards.unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, links out of tmp, device files
    except (tarfile.TarError, OSError) as e:
        fail(f"--archive {archive}: cannot unpack ({e})")
    if not os.path.isfile(os.path.join(tmp, "shards", "meta.json")):
        shutil.rmtree(tmp)
        fail(f"--archive {archive}: no shards/meta.json inside (not packed by bench/cram_prepare.sh)")
    os.replace(os.path.join(tmp, "shards"), os.path.join(work, "shards"))
    shutil.rmtree(tmp)


def check_reuse(work, done, settings) -> set[str]:
    """A finished stage (its `done` file exists) is reused only with the settings it ran with: the results must
    describe what produced them. Checked for every stage before anything runs; then the settings are recorded.
    Returns the stages whose recorded settings were other than now, or not recorded: what an unfinished one of
    them left is another run's, not to be continued."""
    path = os.path.join(work, "stage_settings.json")
    recorded = load_json(path) if os.path.isfile(path) else {}
    stale = set()
    for name, now in settings.items():
        then = {**ADDED_SETTINGS.get(name, {}), **recorded.get(name, {})}
        if name not in recorded or then != now:
            stale.add(name)
        if os.path.exists(done[name]) and name in recorded and then != now:
            made = done[name] if os.path.isdir(done[name]) else os.path.dirname(done[name])  # a marker file's dir
            fail(f"{made} was made with other settings (see '{name}' in {path}); "
                 f"pass a new --work_dir")
    atomic_write_json(path, {**recorded, **settings})
    return stale

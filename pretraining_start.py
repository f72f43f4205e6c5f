"""Where a pretraining run starts, and the checks that its inputs agree.

run_pretraining.py calls these before it writes anything: a resumed run must continue the very run that saved
the checkpoint, and an initialised one must feed the model the vocabulary and word splitting it was trained
with. Every function takes explicit arguments and raises ValueError with the one-line message for the user.

    check_args(args)  # flags alone
    ckpt_dir, source = resolve_start(output_dir, resume="auto", init_checkpoint=None)
    config = model_config(config_file, ckpt_dir, source, shard_meta, input_dir, max_seq_length)
    state, changed = load_train_state(ckpt_dir, vars(args), ("optimizer", "scheduler"), shards_fingerprint(meta))
"""
from __future__ import annotations

import dataclasses
import os

import torch

from fileio import resolve_checkpoint_dir
from models.config import arch_differences, check_max_seq_length, require_pair_segments
from models.modeling import BertConfig, checkpoint_config, checkpoint_vocab
from pretraining_data import vocab_sha256
from train_utils import check_output_dir_path, check_training_args

RESUME = "--resume"
INIT = "--init_checkpoint"
# arguments a resumed run may change without changing what it computes: where it reads and writes (the config,
# vocab and shards are checked themselves), how often it logs and saves, how it is fed and compiled (accumulation
# and --compile give the same steps). Any other argument changed on resume is allowed (the new value applies from
# the resumed step on), with a warning that names it, since the continuation is then not the uninterrupted run;
# a flag added later is warned about without being listed anywhere.
RESUME_FREE = ("checkpoint", "compile", "compile_mode", "config_file", "do_lower_case", "gradient_accumulation_steps",
               "input_dir", "keep_last", "local_rank", "log_steps", "no_cuda", "num_workers", "output_dir", "resume",
               "save_steps", "vocab_file")


def check_args(args):
    """The flags that need no file: a bad one raises ValueError naming it, before the run opens anything."""
    for flag in ("train_batch_size", "gradient_accumulation_steps", "max_steps", "save_steps", "log_steps",
                 "keep_last"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    for flag, ok, need in (("seed", args.seed >= 0, ">= 0"),
                           ("short_seq_prob", 0 <= args.short_seq_prob <= 1, "in [0, 1]"),
                           ("masked_lm_prob", 0 < args.masked_lm_prob < 1, "in (0, 1)"),
                           ("max_predictions_per_seq", args.max_predictions_per_seq >= 1, ">= 1"),
                           ("max_ngram", args.max_ngram >= 1, ">= 1"),
                           ("max_time_minutes", args.max_time_minutes is None
                            or 0 < args.max_time_minutes < float("inf"), "a positive number")):
        if not ok:
            raise ValueError(f"--{flag} must be {need}, got {getattr(args, flag)}")
    if not args.output_dir:
        raise ValueError("--output_dir is required")
    check_output_dir_path(args.output_dir)
    check_training_args(args)  # the optimisation, loader and compile flags
    if args.schedule_by_time and not args.max_time_minutes:
        raise ValueError("--schedule_by_time needs --max_time_minutes (the budget the schedule is stretched over)")
    if not os.path.isfile(os.path.join(args.input_dir, "meta.json")):
        raise ValueError(f"--input_dir {args.input_dir}: no meta.json there; prepare shards with "
                         "create_pretraining_data.py")


def resolve_start(output_dir: str, resume: str | None, init_checkpoint: str | None) -> tuple[str | None, str | None]:
    """(checkpoint dir, RESUME or INIT), or (None, None) for a fresh start.

    resume: None, "auto" (output_dir's latest checkpoint if there is one) or a checkpoint / run directory. A
    resumed run wins over init_checkpoint, which is where a resumed phase 2 got its phase-1 weights from.
    """
    if resume:
        path = output_dir if resume == "auto" else resume
        if resume != "auto" and not os.path.exists(path):
            raise ValueError(f"--resume {path}: no such checkpoint or run directory")
        cand = resolve_checkpoint_dir(path)
        own = os.path.realpath(os.path.join(output_dir, "checkpoints"))
        if (resume != "auto" and os.path.isfile(os.path.join(own, "latest"))
                and os.path.dirname(os.path.realpath(cand)) != own):
            raise ValueError(f"--resume {path}: --output_dir {output_dir} already holds checkpoints of another run; "
                             "choose another --output_dir")
        if os.path.isfile(os.path.join(cand, "train_state.pt")):
            return cand, RESUME
        if resume != "auto" or cand != path:  # auto: only "no checkpoint yet" means a fresh start
            raise ValueError(f"--resume {path}: no train_state.pt in {cand} (not a checkpoint of run_pretraining.py)")
    elif os.path.isfile(os.path.join(output_dir, "checkpoints", "latest")):
        raise ValueError(f"--output_dir {output_dir} already holds checkpoints: pass --resume auto to continue it, "
                         "or choose another directory")
    if init_checkpoint:
        if not os.path.exists(init_checkpoint):
            raise ValueError(f"--init_checkpoint {init_checkpoint}: no such file or directory")
        return resolve_checkpoint_dir(init_checkpoint), INIT
    return None, None


def check_vocab(vocab_file: str | None, ckpt_dir: str | None, source: str | None, shard_meta: dict,
                input_dir: str, shard_vocab_file: str) -> None:
    """The vocab given on the command line and the checkpoint's own (beside it, for a weights file) must both be the
    shards' vocab."""
    stored = checkpoint_vocab(ckpt_dir) if ckpt_dir else None
    if vocab_file and not os.path.isfile(vocab_file):
        raise ValueError(f"--vocab_file {vocab_file}: no such file")
    for label, vocab in (("--vocab_file", vocab_file), (source, stored)):
        if vocab and vocab_sha256(vocab) != shard_meta["vocab_sha256"]:
            raise ValueError(f"{label}: {vocab} is not the vocabulary the shards in {input_dir} were built with "
                             f"({shard_vocab_file})")


def model_config(config_file: str | None, ckpt_dir: str | None, source: str | None, shard_meta: dict,
                 input_dir: str, max_seq_length: int) -> BertConfig:
    """config_file, else the checkpoint's config, carrying the shards' tokenizer settings; checked against both."""
    try:
        config = BertConfig.from_json_file(config_file) if config_file else None
        stored = checkpoint_config(ckpt_dir) if ckpt_dir else None
    except (ValueError, OSError) as e:
        raise ValueError(str(e)) from None
    if config is None and stored is None:
        raise ValueError("no model config: pass --config_file"
                         + (f" ({ckpt_dir} carries no config.json)" if ckpt_dir else ""))
    config = config or dataclasses.replace(stored)  # a copy: `stored` is what the resumed run really used
    # A model whose vocab was built on morpheme-split text must never see plain-split shards (or the reverse):
    # a config that names an analyser must agree with the shards; one that names none takes the shards' setting.
    shard_morph = shard_meta.get("morph_analyzer")
    if config.morph_analyzer is not None and config.morph_analyzer != shard_morph:
        raise ValueError(f"--input_dir {input_dir} was prepared with morph_analyzer={shard_morph!r} but the model "
                         f"config says {config.morph_analyzer!r}; prepare the shards with the same --morph_analyzer "
                         "as the vocab")
    config.do_lower_case = bool(shard_meta.get("do_lower_case", False))
    config.morph_analyzer = shard_morph
    if source != RESUME and config_file and stored is not None:  # --init_checkpoint with a config of its own
        differ = arch_differences(config, stored)
        if differ:
            raise ValueError(f"--config_file {config_file} disagrees with the config stored with {ckpt_dir} on "
                             f"{', '.join(differ)}: its weights would compute another function")
    if source == RESUME and stored is not None:
        a, b = config.to_dict(), stored.to_dict()
        diff = [k for k in a if a[k] != b.get(k)]
        if diff:
            theirs = f"--config_file {config_file}" if config_file else f"the shards in {input_dir}"
            raise ValueError(f"--resume {ckpt_dir}: its config differs from {theirs} "
                             f"in {diff[0]} ({b.get(diff[0])!r} vs {a[diff[0]]!r})")
    require_pair_segments(config, f"the config ({config_file or ckpt_dir})")
    if config.vocab_size != shard_meta["vocab_size"]:
        raise ValueError(f"vocab size mismatch: the config ({config_file or ckpt_dir}) says vocab_size="
                         f"{config.vocab_size} but {os.path.join(input_dir, 'meta.json')} has "
                         f"{shard_meta['vocab_size']}")
    check_max_seq_length(max_seq_length, config)
    return config


def load_train_state(ckpt_dir: str, run_args: dict, must_match: tuple[str, ...],
                     shards_fingerprint: str | None = None) -> tuple[dict, list[str]]:
    """The saved train_state.pt, and what differs from the saved run: the arguments outside RESUME_FREE, in
    run_args' order (a key missing on one side reads as None), and the shards (pretraining_data.shards_fingerprint)
    when the state recorded them. A `must_match` setting that differs is an error."""
    try:
        state = torch.load(os.path.join(ckpt_dir, "train_state.pt"), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file: say which, not a traceback from the unpickler
        raise ValueError(f"--resume {ckpt_dir}: train_state.pt is unreadable ({type(e).__name__}: {str(e)[:200]})")
    for key in must_match:
        if state["args"][key] != run_args[key]:
            raise ValueError(f"--{key} {run_args[key]} differs from {state['args'][key]} used by the run in "
                             f"{ckpt_dir}")
    keys = list(run_args) + [k for k in state["args"] if k not in run_args]  # in the flags' order
    changed = [k for k in keys
               if k not in RESUME_FREE and k not in must_match and state["args"].get(k) != run_args.get(k)]
    if shards_fingerprint and state.get("shards_fingerprint") not in (None, shards_fingerprint):
        changed.append("shards (the data position now points at other examples)")
    return state, changed

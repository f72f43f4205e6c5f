"""The model flags the training and evaluation scripts share (--checkpoint, --config_file, --vocab_file,
--do_lower_case) and what they resolve to: a config and vocab (the checkpoint's own where it carries them, each flag
checked against them), and a model built and loaded from the checkpoint.

    config, vocab_file = resolve_config_and_vocab(args)
    model, config, vocab_file = load_model_for_task(args, BertForSequenceClassification, num_labels=3)

These read args as the scripts parsed them and fail() with a one-line error naming the flag.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import tempfile

from fileio import read_vocab_lines
from models.checkpoint import (checkpoint_casing, checkpoint_config, checkpoint_folder, checkpoint_vocab,
                               load_checkpoint, write_tokenizer_vocab)
from models.config import BertConfig, arch_differences, read_json_object, require_pair_segments
from train_utils import add_bool_flag, fail


def add_model_args(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("model")
    g.add_argument("--checkpoint", default=None,
                   help="weights to start from: our checkpoint dir/.safetensors, a release .bin, or a HF directory")
    g.add_argument("--config_file", default=None,
                   help="model config JSON (release or Hugging Face keys); optional when the checkpoint carries one")
    g.add_argument("--vocab_file", default=None,
                   help="WordPiece vocab.txt; optional when the checkpoint carries one")
    add_bool_flag(g, "--do_lower_case", help="lower-case input (the Korean release models are cased); default: "
                                             "the casing the checkpoint or config states, else cased. A value "
                                             "that contradicts a stated casing is refused")
    return g


_TOKENIZER_VOCABS: dict[str, str] = {}  # checkpoint dir -> the vocab.txt made from its tokenizer.json


def resolve_config_and_vocab(args):
    """Config and vocab for a run: the checkpoint's own when it carries them, else the flags.

    Explicit flags win over what the checkpoint carries, so the release's command lines (which always pass
    --config_file and --vocab_file) behave as before.
    """
    ckpt = getattr(args, "checkpoint", None)
    if ckpt and not os.path.exists(ckpt):
        fail(f"--checkpoint {ckpt}: no such file or directory")
    config = None
    if args.config_file:
        if not os.path.isfile(args.config_file):
            fail(f"--config_file {args.config_file}: no such file")
        try:
            config = BertConfig.from_json_file(args.config_file)
        except (ValueError, OSError, json.JSONDecodeError) as e:
            fail(f"--config_file {args.config_file}: {e}")
    elif ckpt:
        try:
            config = checkpoint_config(ckpt)
        except (ValueError, OSError) as e:
            fail(f"--checkpoint {ckpt}: {e}")
    if config is None:
        fail("no model config: pass --config_file (the checkpoint does not carry a config.json)")
    try:
        require_pair_segments(config, f"--config_file {args.config_file}" if args.config_file
                              else f"--checkpoint {ckpt}")
    except ValueError as e:
        fail(str(e))
    own = None  # the checkpoint's own config, to hold a --config_file given beside it to
    if args.config_file and ckpt:
        with contextlib.suppress(ValueError, OSError):  # unreadable: nothing to compare, the flag's config serves
            own = checkpoint_config(ckpt)
    if own is not None:
        differ = arch_differences(own, config)
        if differ:  # heads or eps differ without any shape error: the weights would compute another function
            fail(f"--config_file {args.config_file} disagrees with the config stored with --checkpoint {ckpt} on "
                 f"{', '.join(differ)}; fix the config or drop --config_file (the checkpoint carries its own)")
        # a model pretrained on morpheme-split text must be fed morpheme-split text, whichever config is passed
        if own.morph_analyzer != config.morph_analyzer:
            fail(f"--config_file {args.config_file} says morph_analyzer={config.morph_analyzer!r}, but --checkpoint "
                 f"{ckpt} was trained on text split with morph_analyzer={own.morph_analyzer!r}; fix the config or "
                 "drop --config_file (the checkpoint carries its own)")
        # casing likewise, either way, where both say: a config without the key (the release's) leaves it to the
        # checkpoint, and a checkpoint config without it (the release's, or transformers') reads as cased and is not
        # compared
        if own.do_lower_case and not config.do_lower_case:
            if "do_lower_case" in read_json_object(args.config_file):
                fail(f"--config_file {args.config_file} says do_lower_case=false, but --checkpoint {ckpt} was "
                     "trained on lower-cased text; fix the config or drop --config_file (the checkpoint carries "
                     "its own)")
            config.do_lower_case = True
        elif config.do_lower_case and not own.do_lower_case:
            stated = None  # a checkpoint silent about casing (the release's) reads as cased: the config decides
            with contextlib.suppress(ValueError, OSError):
                stated = checkpoint_casing(ckpt)
            if stated is False:
                fail(f"--config_file {args.config_file} says do_lower_case=true, but --checkpoint {ckpt} was "
                     "trained on cased text; fix the config or drop --config_file (the checkpoint carries its own)")
    own_vocab = checkpoint_vocab(ckpt) if ckpt else None
    vocab_file = args.vocab_file or own_vocab
    if vocab_file is None and ckpt and os.path.isfile(os.path.join(checkpoint_folder(ckpt), "tokenizer.json")):
        # a transformers 5 directory has only tokenizer.json: its vocab, as a vocab.txt for this process (once,
        # however many seeds call this)
        if ckpt not in _TOKENIZER_VOCABS:
            tmp_dir = tempfile.mkdtemp(prefix="vocab-")
            atexit.register(shutil.rmtree, tmp_dir, ignore_errors=True)
            try:
                _TOKENIZER_VOCABS[ckpt] = write_tokenizer_vocab(ckpt, tmp_dir)
            except (ValueError, OSError) as e:
                fail(f"--checkpoint {ckpt}: {e}")
        vocab_file = _TOKENIZER_VOCABS[ckpt]
    if vocab_file is None:
        fail("no vocabulary: pass --vocab_file (the checkpoint carries neither a vocab.txt nor a tokenizer.json)")
    if not os.path.isfile(vocab_file):
        fail(f"--vocab_file {vocab_file}: no such file")
    try:
        tokens = read_vocab_lines(vocab_file)
    except ValueError as e:
        fail(str(e))
    n_vocab = len(tokens)
    if n_vocab != config.vocab_size:
        src = args.config_file or ckpt
        fail(f"vocab size mismatch: {vocab_file} has {n_vocab} tokens but the config ({src}) says "
             f"vocab_size={config.vocab_size}")
    if args.vocab_file and own_vocab:
        # a same-size vocab in another order would give every token another id, with no error anywhere
        try:
            theirs, ours = tokens, read_vocab_lines(own_vocab)
        except ValueError as e:
            fail(f"--checkpoint {ckpt}: {e}")
        if theirs != ours:
            at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            fail(f"--vocab_file {args.vocab_file} differs from the vocab.txt that --checkpoint {ckpt} carries (from "
                 f"line {at + 1}); drop --vocab_file (the checkpoint carries its own)")
    flag = getattr(args, "do_lower_case", None)
    if flag is not None and flag != config.do_lower_case:
        # lower-casing a cased model's input (or not lower-casing an uncased one's) gives other ids for every word
        # with a capital, silently: the flag may only say what the checkpoint and config leave unsaid
        stated = []  # a source that cannot be read states nothing (each is checked where it is read)
        if ckpt:
            with contextlib.suppress(ValueError, OSError):
                stated.append((f"--checkpoint {ckpt}", checkpoint_casing(ckpt)))
        if args.config_file:
            with contextlib.suppress(ValueError, OSError):
                stated.append((f"--config_file {args.config_file}",
                               read_json_object(args.config_file).get("do_lower_case")))
        for source, value in stated:
            if isinstance(value, bool) and value != flag:
                fail(f"--do_lower_case={flag} contradicts {source}, which says do_lower_case={value}; drop "
                     "--do_lower_case (the model's own casing is used)")
        config.do_lower_case = flag
    return config, vocab_file


def load_model_for_task(args, model_cls, **model_kwargs):
    """(model, config, vocab_file) for a script: resolve config/vocab, build model_cls, load --checkpoint.

    Loads with strict=False so a task head that the checkpoint lacks (fine-tuning from a pretrained encoder)
    starts from a fresh initialisation; a missing encoder weight is still an error.
    """
    config, vocab_file = resolve_config_and_vocab(args)
    model = model_cls(config, **model_kwargs)
    if getattr(args, "checkpoint", None):
        try:
            load_checkpoint(model, args.checkpoint, strict=False)
        except (ValueError, OSError, RuntimeError) as e:
            fail(f"--checkpoint {args.checkpoint}: {e}")
    return model, config, vocab_file

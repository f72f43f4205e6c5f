r"""Convert a BERT checkpoint between our format, the original release's .bin layout and Hugging Face's.

    python convert_checkpoint.py --input runs/small/checkpoints/step-N --output runs/small_hf --to hf
    python convert_checkpoint.py --input release/bert_small.bin --config_file models/configs/small.json \
        --vocab_file release/vocab.txt --output runs/small_ours --to ours
    python convert_checkpoint.py --input runs/small_hf --output runs/small_release.bin --to release

The input may be anything load_checkpoint reads; which model it holds (encoder only, pretraining heads, QA or
classifier) is read off config.json's `architectures` when it has one, else off its weight names. A masked-LM-only
checkpoint (Hugging Face's BertForMaskedLM, the usual HF BERT) becomes our BertForPreTraining with a fresh pooler
and SOP head, and says so. The config comes from the input when it carries one, else from --config_file; the vocab
from --vocab_file, else the input's vocab.txt, else its tokenizer.json (transformers 5 saves no vocab.txt).
--to hf writes a save_pretrained-style directory that transformers' matching class
(BertForPreTraining, BertForQuestionAnswering, ...) loads with from_pretrained (with no tokenizer files for a
morph_analyzer model: transformers' tokenizer cannot pre-split morphemes); --to release writes one torch.save'd
state dict with the release's key names (a QA file gets the pooler the release's QA model loads but never uses);
--to ours writes our checkpoint directory. For a file-size limit, --max_shard_mb splits the weights into shards
with a model.safetensors.index.json (transformers' layout, which every script here reads) and --dtype float16
halves them:

    python convert_checkpoint.py --input runs/small/checkpoints/step-N --output runs/small_fp16 --to ours \
        --max_shard_mb 16 --dtype float16
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile

import torch

from fileio import atomic_write, check_makeable, read_vocab_lines, run_script
from models.checkpoint import checkpoint_folder, checkpoint_label_names, index_folder, write_tokenizer_vocab
from models.config import arch_differences, read_json_object
from models.modeling import (BertConfig, BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                             BertModel, canonical_state_dict, checkpoint_config, checkpoint_vocab, load_checkpoint,
                             read_state_dict, save_checkpoint, to_release_state_dict)
from tokenization import save_hf_tokenizer
from train_utils import atomic_torch_save, check_output_dir_path, fail

# Hugging Face class -> the kind of model here that holds its weights
ARCHITECTURES = {"BertModel": "encoder", "BertForPreTraining": "pretraining", "BertForMaskedLM": "masked_lm",
                 "BertForQuestionAnswering": "qa", "BertForSequenceClassification": "classifier"}
UNSUPPORTED = {"BertForTokenClassification": "token classification", "BertForMultipleChoice": "multiple choice",
               "BertForNextSentencePrediction": "next-sentence prediction", "BertLMHeadModel": "causal LM"}
# what BertForPreTraining has and a masked-LM checkpoint lacks
MLM_FRESH = ("bert.pooler.dense.weight", "bert.pooler.dense.bias", "cls.seq_relationship.weight",
             "cls.seq_relationship.bias")
POOLER = ("bert.pooler.dense.weight", "bert.pooler.dense.bias")
DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}  # None: as the model holds them


def stored_architectures(path: str) -> list[str] | None:
    path = index_folder(path)  # a shard index stands for its folder
    cfg = os.path.join(path, "config.json")
    if not (os.path.isdir(path) and os.path.isfile(cfg)):
        return None
    names = read_json_object(cfg).get("architectures")
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def model_kind(sd: dict, architectures: list | None, source: str) -> str:
    """encoder, pretraining, masked_lm, qa or classifier: config.json's word when it names a class we know,
    else what the weight names (canonical) say."""
    if architectures and len(set(architectures)) == 1:
        name = architectures[0]
        if name in UNSUPPORTED:
            raise ValueError(f"{source}: architectures={name} ({UNSUPPORTED[name]}) is not supported; the models "
                             "here are " + ", ".join(ARCHITECTURES))
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    heads = [p for p in ("cls.", "qa_outputs.", "classifier.") if any(k.startswith(p) for k in sd)]
    if len(heads) > 1:
        raise ValueError(f"{source}: holds several task heads ({', '.join(heads)}); cannot tell which model it is")
    if heads == ["cls."]:
        lm_only = (any(k.startswith("cls.predictions.") for k in sd)
                   and not any(k.startswith("cls.seq_relationship.") for k in sd))
        return "masked_lm" if lm_only else "pretraining"
    if heads == ["qa_outputs."]:
        return "qa"
    if heads == ["classifier."]:
        if not any(k.startswith("bert.pooler.") for k in sd):
            # Hugging Face's sequence classifier always has a pooler; its token classifier never does
            raise ValueError(f"{source}: a classifier head without a pooler, as in BertForTokenClassification: "
                             "token classification is not supported")
        return "classifier"
    return "encoder"


def model_for_weights(sd: dict, config: BertConfig, kind: str):
    """An empty model of the class that holds weights of this kind (sd: canonical names)."""
    if kind in ("pretraining", "masked_lm"):
        return BertForPreTraining(config)
    if kind == "qa":
        return BertForQuestionAnswering(config)
    if kind == "classifier":
        n = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else None
        return BertForSequenceClassification(config, num_labels=n)
    return BertModel(config)


# the files the fine-tuning scripts write beside a checkpoint's weights, with a key each always holds
SIDECARS = {"task.json": "task_name", "qa_train.json": "max_seq_length"}  # run_classifier.py's, run_qa.py's


def fine_tuning_sidecars(input_path: str) -> dict[str, str]:
    """SIDECARS the input has, name -> path. A file of that name that is not one (a KorQuAD file called
    qa_train.json beside a release .bin) is left behind with a warning: it would pass for the model's own."""
    folder, found = checkpoint_folder(input_path), {}
    for name, key in SIDECARS.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            ours = key in read_json_object(path)
        except (ValueError, OSError):
            ours = False
        if ours:
            found[name] = path
        else:
            print(f"warning: {path} is not a {name} the fine-tuning scripts write (no {key!r}); not copied",
                  file=sys.stderr, flush=True)
    return found


def release_qa_pooler(sd: dict, config: BertConfig) -> tuple[dict, str]:
    """Pooler weights for a release QA file: the release's QuestionAnswering model has a pooler (it never uses the
    pooled output) and its eval script loads strictly. The input's own when it has them, else zeros."""
    H = config.hidden_size
    if all(k in sd for k in POOLER) and sd[POOLER[0]].shape == (H, H) and sd[POOLER[1]].shape == (H,):
        return {k: sd[k] for k in POOLER}, "the input's pooler carried over"
    # zeros rather than random numbers: plainly a placeholder, and the same bytes every run
    return ({POOLER[0]: torch.zeros(H, H), POOLER[1]: torch.zeros(H)},
            "with a zero pooler (bert.pooler.dense.*), unused by the release's QA model but needed by its strict load")


def resolve_config(input_path: str, config_file: str | None) -> BertConfig:
    config = checkpoint_config(input_path)
    if config_file:
        flag_config = BertConfig.from_json_file(config_file)
        if config is None:
            return flag_config
        differ = arch_differences(config, flag_config)
        if differ:
            raise ValueError(f"--config_file {config_file} disagrees with the config stored in {input_path} on "
                             f"{', '.join(differ)}")
    if config is None:
        raise ValueError(f"--input {input_path} carries no config: pass --config_file")
    return config


def resolve_vocab(args, config: BertConfig, tmp_dir: str) -> str | None:
    """A vocab.txt path for the output: --vocab_file, the input's vocab.txt, or one made from its tokenizer.json."""
    vocab = args.vocab_file or checkpoint_vocab(args.input)
    if vocab is None and args.to != "release":
        vocab = write_tokenizer_vocab(args.input, tmp_dir)
    if vocab:
        if not os.path.isfile(vocab):
            raise FileNotFoundError(f"--vocab_file {vocab}: no such file")
        n_vocab = len(read_vocab_lines(vocab))
        if n_vocab != config.vocab_size:
            raise ValueError(f"{vocab} has {n_vocab} tokens but the config says vocab_size={config.vocab_size}")
    return vocab


def convert(args):
    if not os.path.exists(args.input):
        raise FileNotFoundError(f"--input {args.input}: no such file or directory")
    if os.path.exists(args.output) and not (os.path.isdir(args.output) and not os.listdir(args.output)):
        raise ValueError(f"--output {args.output} already exists; choose a new path (nothing gets overwritten)")
    if args.to == "release":  # a file
        check_makeable(args.output, "--output")
    else:
        check_output_dir_path(args.output, "--output")
    config = resolve_config(args.input, args.config_file)
    with tempfile.TemporaryDirectory() as tmp_dir:
        vocab = resolve_vocab(args, config, tmp_dir)
        sd = canonical_state_dict(read_state_dict(args.input))
        kind = model_kind(sd, stored_architectures(args.input), args.input)
        model = model_for_weights(sd, config, kind)
        # what a checkpoint of that kind may lack, started fresh and named: a masked LM has no pooler or SOP head,
        # and an encoder saved from one (BertForMaskedLM(...).bert.save_pretrained) no pooler
        fresh = [k for k in {"masked_lm": MLM_FRESH, "encoder": POOLER}.get(kind, ()) if k not in sd]
        load_checkpoint(model, args.input, strict=True, fresh_ok=fresh, sd=sd)
        notes = []
        if fresh:
            notes.append(f"from a {kind.replace('_', '-')} checkpoint without them: {', '.join(fresh)} freshly "
                         "initialised")
        if args.to == "release":
            # the release shipped weights only; its vocab and config travel as separate files
            out = to_release_state_dict(model.state_dict())
            if isinstance(model, BertForQuestionAnswering):
                pooler, note = release_qa_pooler(sd, config)
                out.update(pooler)
                notes.append(note)
            atomic_torch_save(out, args.output)
        else:
            sidecars = fine_tuning_sidecars(args.input)
            task = read_json_object(sidecars["task.json"]) if "task.json" in sidecars else {}
            # which head row is which label: run_classifier's task.json, else the input's own id2label names
            labels = (task.get("labels") or checkpoint_label_names(args.input)) if kind == "classifier" else None
            save_checkpoint(model, args.output, vocab_file=vocab, layout="hf" if args.to == "hf" else "ours",
                            max_shard_bytes=round(args.max_shard_mb * 2**20) if args.max_shard_mb else None,
                            dtype=DTYPES[args.dtype], labels=labels)
            if args.to == "hf" and vocab and not config.morph_analyzer:  # a morpheme model: save_checkpoint warned
                try:
                    save_hf_tokenizer(vocab, args.output, config.do_lower_case, config.max_position_embeddings)
                except ValueError as e:  # a vocab without BERT's special tokens: weights and vocab.txt still serve
                    notes.append(f"no tokenizer files ({e})")
            # how the model was fine-tuned (inputs' length, pair orders, task) travels with it: the evaluation
            # scripts read it, and would score a converted model another way without it
            for name, path in sidecars.items():
                atomic_write(os.path.join(args.output, name), lambda tmp, src=path: shutil.copyfile(src, tmp))
            if sidecars:
                notes.append(f"with {', '.join(sidecars)}")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote {type(model).__name__} ({n_params / 1e6:.1f}M parameters) in {args.to} layout to {args.output}"
          + "".join(f"; {n}" for n in notes))
    if vocab is None and args.to != "release":  # after the fact: a failed conversion keeps its error on one line
        print(f"warning: {args.input} carries no vocab.txt or tokenizer.json and no --vocab_file was given: "
              f"{args.output} has no vocab", file=sys.stderr, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", "--checkpoint", dest="input", required=True,
                        help="our checkpoint dir/.safetensors, a release .bin, or a Hugging Face directory "
                             "(--checkpoint: the other scripts' spelling)")
    parser.add_argument("--output", required=True, help="new directory (hf, ours) or .bin file (release)")
    parser.add_argument("--to", required=True, choices=["hf", "release", "ours"])
    parser.add_argument("--config_file", default=None, help="model config JSON when the input carries none")
    parser.add_argument("--vocab_file", default=None, help="vocab.txt to ship with the output (hf, ours)")
    parser.add_argument("--max_shard_mb", type=float, default=None,
                        help="hf, ours: split weights larger than this many MiB into shards with an index, as "
                             "transformers does (e.g. for a file-size limit)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="hf, ours: the floating-point type the weights are stored in (float16: half the size)")
    args = parser.parse_args(argv)
    if args.to == "release" and (args.max_shard_mb or args.dtype != "float32"):
        fail("--to release writes one float32 .bin, as the release's scripts load it: no --max_shard_mb or --dtype")
    if args.max_shard_mb is not None and not 0 < args.max_shard_mb < math.inf:
        fail(f"--max_shard_mb must be > 0, got {args.max_shard_mb}")
    try:
        convert(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(str(e))


if __name__ == "__main__":
    run_script(main)

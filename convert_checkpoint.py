r"""Convert a BERT checkpoint between our format, the original release's .bin layout and Hugging Face's.

    python convert_checkpoint.py --input runs/pretrain/checkpoint --output runs/small_hf --to hf
    python convert_checkpoint.py --input release/bert_small.bin --config_file models/configs/small.json \
        --vocab_file release/vocab.txt --output runs/small_ours --to ours
    python convert_checkpoint.py --input runs/small_hf --output runs/small_release.bin --to release

The input may be anything load_checkpoint reads; which model it holds (encoder only, pretraining heads, QA or
classifier) is read off its weight names. The config comes from the input when it carries one, else from
--config_file. --to hf writes a save_pretrained-style directory that transformers' matching class
(BertForPreTraining, BertForQuestionAnswering, ...) loads with from_pretrained; --to release writes one torch.save'd
state dict with the release's key names; --to ours writes our checkpoint directory.
"""
from __future__ import annotations

import argparse
import os

from models.modeling import (BertConfig, BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                             BertModel, canonical_state_dict, checkpoint_config, checkpoint_vocab, load_checkpoint,
                             read_state_dict, save_checkpoint, to_release_state_dict)
from train_utils import atomic_torch_save, fail

# fields that decide tensor shapes or numerics; the tokenizer fields may legitimately differ between two sources
ARCH_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size", "layer_norm_eps")


def model_for_weights(sd: dict, config: BertConfig, source: str):
    """An empty model of the class whose weights `sd` (canonical names) holds."""
    heads = [p for p in ("cls.", "qa_outputs.", "classifier.") if any(k.startswith(p) for k in sd)]
    if len(heads) > 1:
        raise ValueError(f"{source}: holds several task heads ({', '.join(heads)}); cannot tell which model it is")
    if heads == ["cls."]:
        return BertForPreTraining(config)
    if heads == ["qa_outputs."]:
        return BertForQuestionAnswering(config)
    if heads == ["classifier."]:
        n = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else None
        return BertForSequenceClassification(config, num_labels=n)
    return BertModel(config)


def resolve_config(input_path: str, config_file: str | None) -> BertConfig:
    config = checkpoint_config(input_path)
    if config_file:
        flag_config = BertConfig.from_json_file(config_file)
        if config is None:
            return flag_config
        differ = [f for f in ARCH_FIELDS if getattr(config, f) != getattr(flag_config, f)]
        if differ:
            raise ValueError(f"--config_file {config_file} disagrees with the config stored in {input_path} on "
                             f"{', '.join(differ)}")
    if config is None:
        raise ValueError(f"--input {input_path} carries no config: pass --config_file")
    return config


def convert(args):
    if not os.path.exists(args.input):
        raise FileNotFoundError(f"--input {args.input}: no such file or directory")
    if os.path.exists(args.output) and not (os.path.isdir(args.output) and not os.listdir(args.output)):
        raise ValueError(f"--output {args.output} already exists; choose a new path (nothing gets overwritten)")
    config = resolve_config(args.input, args.config_file)
    vocab = args.vocab_file or checkpoint_vocab(args.input)
    if vocab:
        if not os.path.isfile(vocab):
            raise FileNotFoundError(f"--vocab_file {vocab}: no such file")
        with open(vocab, encoding="utf-8") as f:
            n_vocab = sum(1 for _ in f)
        if n_vocab != config.vocab_size:
            raise ValueError(f"{vocab} has {n_vocab} tokens but the config says vocab_size={config.vocab_size}")
    model = model_for_weights(canonical_state_dict(read_state_dict(args.input)), config, args.input)
    load_checkpoint(model, args.input, strict=True)
    if args.to == "release":
        # the release shipped weights only; its vocab and config travel as separate files
        atomic_torch_save(to_release_state_dict(model.state_dict()), args.output)
    else:
        save_checkpoint(model, args.output, vocab_file=vocab, layout="hf" if args.to == "hf" else "ours")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote {type(model).__name__} ({n_params / 1e6:.1f}M parameters) in {args.to} layout to {args.output}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True,
                        help="our checkpoint dir/.safetensors, a release .bin, or a Hugging Face directory")
    parser.add_argument("--output", required=True, help="new directory (hf, ours) or .bin file (release)")
    parser.add_argument("--to", required=True, choices=["hf", "release", "ours"])
    parser.add_argument("--config_file", default=None, help="model config JSON when the input carries none")
    parser.add_argument("--vocab_file", default=None, help="vocab.txt to ship with the output (hf, ours)")
    args = parser.parse_args(argv)
    try:
        convert(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        fail(str(e))


if __name__ == "__main__":
    main()

"""BertConfig: the architecture, read from the release's config keys or Hugging Face's, validated."""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass

from fileio import atomic_write_text


# ----------------------------------------------------------------------------------------------------------------
# config

_RELEASE_KEYS = {"act_fn": ("hidden_act",), "ff_dim": ("intermediate_size",), "num_heads": ("num_attention_heads",),
                 "dropout_prob": ("hidden_dropout_prob", "attention_probs_dropout_prob")}
# Hugging Face keys whose value must keep the model the one implemented here.
_HF_CHECKED = {"model_type": ("bert",), "position_embedding_type": ("absolute",), "is_decoder": (False,),
               "add_cross_attention": (False,), "is_encoder_decoder": (False,),
               "problem_type": (None, "regression", "single_label_classification")}
# our heads: num_labels == 1 is regression (MSE), more is single-label classification (cross-entropy)
_PROBLEM_TYPES = {"regression": lambda n: n == 1, "single_label_classification": lambda n: n > 1}
# Hugging Face bookkeeping that does not change the network (label names, generation/tokenizer hints, dtype, ...).
_HF_IGNORED = frozenset({
    "architectures", "transformers_version", "_name_or_path", "pad_token_id", "bos_token_id", "eos_token_id",
    "sep_token_id", "decoder_start_token_id", "use_cache", "classifier_dropout", "torch_dtype", "dtype", "label2id",
    "gradient_checkpointing", "chunk_size_feed_forward", "tie_word_embeddings", "output_attentions",
    "output_hidden_states", "return_dict", "output_past", "torchscript", "pruned_heads", "finetuning_task",
    "tokenizer_class", "task_specific_params", "prefix", "directionality", "pooler_fc_size",
    "pooler_num_attention_heads", "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type"})
# More of the same that real Hugging Face configs carry (older transformers wrote every generation default;
# some hubs add tokenizer hints). Only tolerated in configs with model_type "bert": in ours an unknown key is a typo.
_HF_HARMLESS = frozenset({
    "_attn_implementation_autoset", "_attn_implementation", "attn_implementation", "_commit_hash", "use_bfloat16",
    "xla_device", "model_max_length", "tf_legacy_loss", "tie_encoder_decoder", "cross_attention_hidden_size",
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty",
    "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
    "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "use_return_dict"})
# the config fields that may differ between a checkpoint's config and one given beside it: dropout and the
# initialiser act only in training, the task sets the head's size, and the tokenizer fields are compared where they
# are read. Every other field decides tensor shapes or what the model computes, a field added later included.
NON_ARCH_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "num_labels",
                   "do_lower_case", "morph_analyzer")


def arch_differences(a, b) -> list[str]:
    """The fields outside NON_ARCH_FIELDS on which configs a and b differ (none: the same weights compute the same
    function)."""
    return [f.name for f in dataclasses.fields(a)
            if f.name not in NON_ARCH_FIELDS and getattr(a, f.name) != getattr(b, f.name, f.default)]


def require_pair_segments(config, source: str):
    """ValueError unless the model has the two segment types every input here uses (SOP pairs, question and
    context, sentence pairs: ids 0 and 1); with one, segment id 1 fails deep inside the embedding lookup."""
    if config.type_vocab_size < 2:
        raise ValueError(f"{source}: type_vocab_size={config.type_vocab_size}, but the pair inputs of pretraining, "
                         "KorQuAD and KorNLI/KorSTS use segment ids 0 and 1 (type_vocab_size >= 2)")


def check_max_seq_length(length: int, config, source: str = "--max_seq_length"):
    """ValueError when inputs of `length` positions would index past the model's position embeddings."""
    if length > config.max_position_embeddings:
        raise ValueError(f"{source} {length} exceeds the model's max_position_embeddings "
                         f"{config.max_position_embeddings}")


# the fields transformers' BertConfig holds (num_labels as id2label), and our tokenizer settings, which ride along as
# extra keys that transformers keeps and our importer reads back
_HF_EXPORTED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                "type_vocab_size", "initializer_range", "layer_norm_eps", "num_labels", "do_lower_case",
                "morph_analyzer")

_GELU_NAMES = ("gelu", "gelu_python")  # both are the exact erf form; gelu_new/gelu_fast are tanh approximations


def read_json_object(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 (byte offset {e.start})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return d


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


@dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    num_labels: int = 2
    do_lower_case: bool = False
    morph_analyzer: str | None = None  # "kiwi": the vocab was built on morpheme-pre-split text

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "num_labels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
            setattr(self, name, float(value))
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
            setattr(self, name, float(value))
        # a string such as "false" would be truthy for one tokenizer path and parsed by another
        if not isinstance(self.do_lower_case, bool):
            raise ValueError(f"do_lower_case must be true or false, got {self.do_lower_case!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if str(self.hidden_act).lower() not in _GELU_NAMES:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported: only exact (erf) 'gelu' is implemented")
        self.hidden_act = "gelu"
        if self.morph_analyzer not in (None, "kiwi"):
            raise ValueError(f"morph_analyzer must be null or 'kiwi', got {self.morph_analyzer!r}")

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "BertConfig":
        """Our keys, the original release's (act_fn, ff_dim, num_heads, dropout_prob) or Hugging Face's."""
        fields = {f.name for f in dataclasses.fields(cls)}
        hf = d.get("model_type") == "bert"
        kw, unknown = {}, []
        for key, value in d.items():
            if key in fields:
                names = (key,)
            elif key in _RELEASE_KEYS:
                names = _RELEASE_KEYS[key]
            elif key == "id2label":
                if not isinstance(value, dict):
                    raise ValueError(f"{source}: id2label must be a JSON object, got {value!r}")
                names, value = ("num_labels",), len(value)
            elif key in _HF_CHECKED:
                if value not in _HF_CHECKED[key]:
                    raise ValueError(f"{source}: {key}={value!r} is not supported (expected one of "
                                     f"{list(_HF_CHECKED[key])})")
                continue
            else:
                if key not in _HF_IGNORED and not (hf and key in _HF_HARMLESS):
                    unknown.append(key)
                continue
            for name in names:
                if name in kw and kw[name] != value:
                    raise ValueError(f"{source}: {key}={value!r} conflicts with {name}={kw[name]!r}")
                kw[name] = value
        if unknown and hf:
            print(f"warning: {source}: ignoring unknown config key(s) {', '.join(sorted(unknown))}",
                  file=sys.stderr, flush=True)
        elif unknown:
            raise ValueError(f"{source}: unknown config key(s) {', '.join(sorted(unknown))}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in kw]
        if missing:
            raise ValueError(f"{source}: missing config key(s) {', '.join(missing)}")
        try:
            config = cls(**kw)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{source}: {e}") from None
        problem_type = d.get("problem_type")
        if problem_type is not None and not _PROBLEM_TYPES[problem_type](config.num_labels):
            raise ValueError(f"{source}: problem_type={problem_type!r} with num_labels={config.num_labels} is not "
                             "supported: our classifier does regression with 1 label and single-label "
                             "classification with more")
        return config

    @classmethod
    def from_json_file(cls, path: str) -> "BertConfig":
        return cls.from_dict(read_json_object(path), source=path)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json_file(self, path: str):
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def to_hf_dict(self, architectures: list[str] | None = None, pad_token_id: int = 0,
                   labels: list[str] | None = None) -> dict:
        """A transformers.BertConfig dict; our tokenizer fields ride along as extra keys that HF keeps. labels: the
        classifier's label names, row by row (default transformers' LABEL_0, LABEL_1, ...). ValueError for a field
        transformers' BertConfig cannot hold (one added for a new variant) away from its default: transformers would
        load the weights into a model that computes something else, without a word."""
        unsaid = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                  if f.name not in _HF_EXPORTED and getattr(self, f.name) != f.default]
        if unsaid:
            raise ValueError(f"transformers' BertConfig cannot represent {', '.join(unsaid)}: a Hugging Face BERT "
                             "would load these weights as another model")
        d = self.to_dict()
        num_labels = d.pop("num_labels")
        if labels is None or len(labels) != num_labels:
            labels = [f"LABEL_{i}" for i in range(num_labels)]
        d.update(model_type="bert", position_embedding_type="absolute", pad_token_id=pad_token_id,
                 tie_word_embeddings=True, id2label={str(i): name for i, name in enumerate(labels)},
                 label2id={name: i for i, name in enumerate(labels)})
        if architectures:
            d["architectures"] = list(architectures)
        return d

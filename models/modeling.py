"""BERT encoder, task heads, and checkpoint I/O for our format, the original release's and Hugging Face's.

    from models.modeling import BertConfig, BertForPreTraining, load_checkpoint
    model = BertForPreTraining(BertConfig.from_json_file("models/configs/small.json"))
    load_checkpoint(model, "release/bert_small_lm.bin")      # or our dir / .safetensors, or a Hugging Face dir

Post-LayerNorm BERT with exact (erf) GELU and learned absolute positions. Parameter names follow the original
release (attn.query, attention_norm, ffn.fc1, ...), so its files load by name; Hugging Face files go through a key
map. The MLM decoder is the word-embedding matrix itself, so no checkpoint ever holds two copies that could drift.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

# ----------------------------------------------------------------------------------------------------------------
# config

_RELEASE_KEYS = {"act_fn": ("hidden_act",), "ff_dim": ("intermediate_size",), "num_heads": ("num_attention_heads",),
                 "dropout_prob": ("hidden_dropout_prob", "attention_probs_dropout_prob")}
# Hugging Face keys whose value must keep the model the one implemented here.
_HF_CHECKED = {"model_type": ("bert",), "position_embedding_type": ("absolute",), "is_decoder": (False,),
               "add_cross_attention": (False,), "is_encoder_decoder": (False,),
               "problem_type": (None, "regression", "single_label_classification")}
# Hugging Face bookkeeping that does not change the network (label names, generation/tokenizer hints, dtype, ...).
_HF_IGNORED = frozenset({
    "architectures", "transformers_version", "_name_or_path", "pad_token_id", "bos_token_id", "eos_token_id",
    "sep_token_id", "decoder_start_token_id", "use_cache", "classifier_dropout", "torch_dtype", "dtype", "label2id",
    "gradient_checkpointing", "chunk_size_feed_forward", "tie_word_embeddings", "output_attentions",
    "output_hidden_states", "return_dict", "output_past", "torchscript", "pruned_heads", "finetuning_task",
    "tokenizer_class", "task_specific_params", "prefix", "directionality", "pooler_fc_size",
    "pooler_num_attention_heads", "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type"})
_GELU_NAMES = ("gelu", "gelu_python")  # both are the exact erf form; gelu_new/gelu_fast are tanh approximations


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
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
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
        kw, unknown = {}, []
        for key, value in d.items():
            if key in fields:
                names = (key,)
            elif key in _RELEASE_KEYS:
                names = _RELEASE_KEYS[key]
            elif key == "id2label":
                names, value = ("num_labels",), len(value)
            elif key in _HF_CHECKED:
                if value not in _HF_CHECKED[key]:
                    raise ValueError(f"{source}: {key}={value!r} is not supported (expected one of "
                                     f"{list(_HF_CHECKED[key])})")
                continue
            else:
                if key not in _HF_IGNORED:
                    unknown.append(key)
                continue
            for name in names:
                if name in kw and kw[name] != value:
                    raise ValueError(f"{source}: {key}={value!r} conflicts with {name}={kw[name]!r}")
                kw[name] = value
        if unknown:
            raise ValueError(f"{source}: unknown config key(s) {', '.join(sorted(unknown))}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in kw]
        if missing:
            raise ValueError(f"{source}: missing config key(s) {', '.join(missing)}")
        try:
            return cls(**kw)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_json_file(cls, path: str) -> "BertConfig":
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object of config keys")
        return cls.from_dict(d, source=path)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json_file(self, path: str):
        _atomic_write(path, lambda tmp: _write_text(tmp, json.dumps(self.to_dict(), indent=2) + "\n"))

    def to_hf_dict(self, architectures: list[str] | None = None, pad_token_id: int = 0) -> dict:
        """A transformers.BertConfig dict; our tokenizer fields ride along as extra keys that HF keeps."""
        d = self.to_dict()
        num_labels = d.pop("num_labels")
        d.update(model_type="bert", position_embedding_type="absolute", pad_token_id=pad_token_id,
                 tie_word_embeddings=True, id2label={str(i): f"LABEL_{i}" for i in range(num_labels)},
                 label2id={f"LABEL_{i}": i for i in range(num_labels)})
        if architectures:
            d["architectures"] = list(architectures)
        return d


# ----------------------------------------------------------------------------------------------------------------
# encoder

class Embeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        T = input_ids.size(1)
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings="
                             f"{self.position_embeddings.num_embeddings}")
        pos = torch.arange(T, device=input_ids.device)  # [T], broadcast over the batch
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) + self.position_embeddings(pos)
        return self.dropout(self.LayerNorm(x))  # [B,T,H]


class SelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.n_head = config.num_attention_heads
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.o_proj = nn.Linear(H, H)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x, mask):
        B, T, H = x.shape
        # [B,T,H] -> [B,n_head,T,head_dim]
        q, k, v = (proj(x).view(B, T, self.n_head, H // self.n_head).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, H)  # [B,n_head,T,head_dim] -> [B,T,H]
        return self.o_proj(y)


class FeedForward(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Layer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attn = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, mask):
        # post-LN as in the original BERT: normalise after each residual sum, not before each block
        x = self.attention_norm(x + self.dropout(self.attn(x, mask)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class Encoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x, mask):
        for layer in self.layer:
            x = layer(x, mask)
        return x


class Pooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))  # [B,T,H] -> [B,H] from the [CLS] position


def init_weights(module: nn.Module, std: float):
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class BertModel(nn.Module):
    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        # QA never reads the pooled vector; leaving the pooler out keeps DDP free of unused parameters
        self.pooler = Pooler(config) if add_pooler else None
        self.apply(functools.partial(init_weights, std=config.initializer_range))

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = None
        if attention_mask is not None:
            # boolean rather than additive so it needs no dtype juggling under autocast;
            # [B,T] -> [B,1,1,T]: every query may look at the real keys only
            mask = attention_mask.bool()[:, None, None, :]
        x = self.encoder(self.embeddings(input_ids, token_type_ids), mask)  # [B,T,H]
        return x, (self.pooler(x) if self.pooler is not None else None)


# ----------------------------------------------------------------------------------------------------------------
# task heads

class MLMTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h):
        return self.LayerNorm(F.gelu(self.dense(h)))


class MaskedLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = MLMTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, h, word_embeddings):
        return F.linear(self.transform(h), word_embeddings, self.bias)  # [..., H] -> [..., V], tied decoder


class PreTrainingHeads(nn.Module):
    """Holder named `cls` so parameter names match the release and Hugging Face files."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = MaskedLMHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertForPreTraining(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = PreTrainingHeads(config)
        self.cls.apply(functools.partial(init_weights, std=config.initializer_range))

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, mlm_labels=None, sop_labels=None):
        seq, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        emb = self.bert.embeddings.word_embeddings.weight
        out = {"sop_logits": self.cls.seq_relationship(pooled)}  # [B,2]
        losses = []
        if mlm_labels is None:
            out["mlm_logits"] = self.cls.predictions(seq, emb)  # [B,T,V]
        else:
            # the vocab projection dominates the head's cost and ~15% of positions are masked: score only those
            masked = mlm_labels != -100  # [B,T]
            targets = mlm_labels[masked]  # [N]
            logits = self.cls.predictions(seq[masked], emb)  # [N,H] -> [N,V]
            count = masked.sum()
            out["mlm_logits"], out["mlm_count"] = logits, count
            out["mlm_loss"] = F.cross_entropy(logits.float(), targets, reduction="sum") / count.clamp(min=1)
            out["mlm_correct"] = (logits.argmax(-1) == targets).sum()
            losses.append(out["mlm_loss"])
        if sop_labels is not None:
            out["sop_loss"] = F.cross_entropy(out["sop_logits"].float(), sop_labels)
            out["sop_correct"] = (out["sop_logits"].argmax(-1) == sop_labels).sum()
            losses.append(out["sop_loss"])
        if losses:
            out["loss"] = sum(losses)
        return out


class BertForQuestionAnswering(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        init_weights(self.qa_outputs, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, start_positions=None, end_positions=None):
        seq, _ = self.bert(input_ids, token_type_ids, attention_mask)
        start_logits, end_logits = self.qa_outputs(seq).unbind(-1)  # [B,T,2] -> 2 x [B,T]
        out = {"start_logits": start_logits, "end_logits": end_logits}
        if start_positions is not None and end_positions is not None:
            # as in BERT: a position outside the window (answer truncated away) is ignored, not clamped onto it
            T = seq.size(1)
            start = F.cross_entropy(start_logits.float(), start_positions.clamp(0, T), ignore_index=T)
            end = F.cross_entropy(end_logits.float(), end_positions.clamp(0, T), ignore_index=T)
            out["loss"] = (start + end) / 2
        return out


class BertForSequenceClassification(nn.Module):
    def __init__(self, config: BertConfig, num_labels: int | None = None):
        super().__init__()
        # the stored config records the head actually built, so a saved checkpoint reloads as this shape
        self.config = config = dataclasses.replace(config, num_labels=num_labels or config.num_labels)
        self.num_labels = config.num_labels
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)
        init_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None):
        _, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        logits = self.classifier(self.dropout(pooled))  # [B,num_labels]
        out = {"logits": logits}
        if labels is not None:
            if self.num_labels == 1:
                out["loss"] = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                out["loss"] = F.cross_entropy(logits.float(), labels)
        return out


# ----------------------------------------------------------------------------------------------------------------
# key maps: canonical = our names with the encoder under `bert.`; heads keep their names in every layout

_LAYER_RE = re.compile(r"^((?:bert\.)?encoder\.layer\.\d+\.)(.*)$")
_OURS_TO_HF = (("attn.query.", "attention.self.query."), ("attn.key.", "attention.self.key."),
               ("attn.value.", "attention.self.value."), ("attn.o_proj.", "attention.output.dense."),
               ("attention_norm.", "attention.output.LayerNorm."), ("ffn.fc1.", "intermediate.dense."),
               ("ffn.fc2.", "output.dense."), ("ffn_norm.", "output.LayerNorm."))
_HEAD_PREFIXES = ("cls.", "qa_outputs.", "classifier.")
_ENCODER_PREFIXES = ("bert.embeddings.", "bert.encoder.")
_TIED_DECODER = "cls.predictions.decoder.weight"


def _rename_layer_key(key: str, pairs) -> str:
    m = _LAYER_RE.match(key)
    if m:
        for src, dst in pairs:
            if m.group(2).startswith(src):
                return m.group(1) + dst + m.group(2)[len(src):]
    return key


def canonical_state_dict(sd: dict) -> dict:
    """Any supported layout (ours, release with or without `bert.`, Hugging Face) -> canonical names.

    Hugging Face's position_ids/token_type_ids buffers are dropped. The tied decoder weight is kept under its
    release/HF name for load_checkpoint to check against the embeddings.
    """
    hf_to_ours = [(hf, ours) for ours, hf in _OURS_TO_HF]
    out, origin = {}, {}
    for key, value in sd.items():
        k = key
        for wrapper in ("module.", "_orig_mod."):  # DDP / torch.compile wrappers
            k = k.removeprefix(wrapper)
        k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k))
        if k.startswith(("embeddings.", "encoder.", "pooler.")):
            k = "bert." + k
        if k in ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids"):
            continue
        k = _rename_layer_key(k, hf_to_ours)
        if k in out:
            raise ValueError(f"keys {origin[k]!r} and {key!r} both map to {k!r}")
        out[k], origin[k] = value, key
    # Hugging Face ties decoder.bias to predictions.bias; older files hold both, some only the former
    decoder_bias = out.pop("cls.predictions.decoder.bias", None)
    if decoder_bias is not None:
        out.setdefault("cls.predictions.bias", decoder_bias)
    return out


def to_hf_state_dict(sd: dict) -> dict:
    """Our model's state dict -> Hugging Face key names (the tied decoder is left out, as HF saves it)."""
    return {_rename_layer_key(k, _OURS_TO_HF): v for k, v in sd.items()}


def to_release_state_dict(sd: dict) -> dict:
    """Our model's state dict -> the release layout: same names, plus the decoder weight its LM files carry."""
    out = dict(sd)
    if "cls.predictions.bias" in out:
        out[_TIED_DECODER] = out["bert.embeddings.word_embeddings.weight"]  # same tensor: torch.save stores it once
    return out


# ----------------------------------------------------------------------------------------------------------------
# checkpoint files

def _weights_file(path: str) -> str:
    if os.path.isdir(path):
        for name in ("model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin in this directory")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file or directory")
    return path


def read_state_dict(path: str) -> dict:
    """Tensors of a checkpoint file or directory, as stored (see canonical_state_dict for the names)."""
    file = _weights_file(path)
    try:
        if file.endswith(".safetensors"):
            obj = load_file(file)
        else:
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a checkpoint at all, pickle with non-tensor objects, ...
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ValueError(f"{file}: not a readable checkpoint ({type(e).__name__}: {detail})") from None
    for wrapper in ("state_dict", "model"):  # training checkpoints that bundle the optimizer too
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{file}: not a state dict (expected a mapping of parameter names to tensors)")
    return obj


def _listing(items: list[str], n: int = 10) -> str:
    return f"{len(items)} [{', '.join(items[:n])}{', ...' if len(items) > n else ''}]"


def load_checkpoint(model: nn.Module, path: str, strict: bool = True) -> nn.Module:
    """Load any supported checkpoint into one of our models; see the module docstring for the layouts.

    Weights of another task's head in the file are ignored (so is a pooler the model does not have). Missing or
    mis-shaped encoder weights always raise. The model's own head (and pooler) raise when strict, otherwise they
    keep their fresh initialisation with a one-line warning: fine-tuning starts from a pretrained encoder.
    """
    sd = canonical_state_dict(read_state_dict(path))
    own = model.state_dict()
    # canonical name -> this model's parameter name
    names = {k if hasattr(model, "bert") else "bert." + k: k for k in own}
    decoder = sd.pop(_TIED_DECODER, None)
    emb = sd.get("bert.embeddings.word_embeddings.weight")
    if decoder is not None and "cls.predictions.bias" in names and emb is not None and not torch.equal(decoder, emb):
        raise ValueError(f"{path}: {_TIED_DECODER} differs from the word embeddings, but this model ties them")
    ignorable = _HEAD_PREFIXES + ("bert.pooler.",)
    missing = [k for k in names if k not in sd]
    unexpected = [k for k in sd if k not in names and not k.startswith(ignorable)]
    mismatched = [k for k in names if k in sd and sd[k].shape != own[names[k]].shape]
    fresh = [] if strict else [k for k in missing + mismatched if not k.startswith(_ENCODER_PREFIXES)]
    # reported under this model's own parameter names; unexpected ones under the file's (canonicalised) names
    problems = []
    if [k for k in missing if k not in fresh]:
        problems.append("missing " + _listing([names[k] for k in missing if k not in fresh]))
    if unexpected:
        problems.append("unexpected " + _listing(unexpected))
    shapes = [f"{names[k]} file {tuple(sd[k].shape)} vs model {tuple(own[names[k]].shape)}"
              for k in mismatched if k not in fresh]
    if shapes:
        problems.append("shape mismatch " + _listing(shapes))
    if problems:
        raise ValueError(f"{path} does not fit {type(model).__name__}: " + "; ".join(problems))
    if fresh:
        print(f"warning: {path}: {_listing([names[k] for k in fresh], 4)} not in the checkpoint (or of another shape); "
              "keeping their fresh initialisation", file=sys.stderr, flush=True)
    model.load_state_dict({names[k]: v for k, v in sd.items() if k in names and k not in fresh}, strict=False)
    return model


def _write_text(path: str, text: str):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _atomic_write(path: str, write_fn):
    """write_fn(tmp_path) fills a temp file beside `path`; it replaces `path` only once complete."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=f".{os.path.basename(path)}.tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a checkpoint is meant to be shared
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _pad_id(vocab_file: str | None) -> int:
    if vocab_file:
        with open(vocab_file, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.rstrip("\n") == "[PAD]":
                    return i
    return 0


def save_checkpoint(model: nn.Module, out_dir: str, vocab_file: str | None = None, layout: str = "ours"):
    """Write out_dir/{model.safetensors, config.json, vocab.txt}, each file replaced only once fully written.

    layout="hf" writes Hugging Face key names and a transformers.BertConfig config.json (save_pretrained form).
    Our config also rides in the safetensors metadata, so a bare .safetensors file still knows its shape.
    """
    if layout not in ("ours", "hf"):
        raise ValueError(f"unknown checkpoint layout {layout!r}")
    os.makedirs(out_dir, exist_ok=True)
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    if layout == "hf":
        sd = to_hf_state_dict(sd)
        config = model.config.to_hf_dict([type(model).__name__], pad_token_id=_pad_id(vocab_file))
    meta = {"format": "pt", "bert_config": json.dumps(model.config.to_dict())}
    _atomic_write(os.path.join(out_dir, "config.json"),
                  lambda tmp: _write_text(tmp, json.dumps(config, indent=2, ensure_ascii=False) + "\n"))
    vocab_out = os.path.join(out_dir, "vocab.txt")
    if vocab_file and not (os.path.exists(vocab_out) and os.path.samefile(vocab_file, vocab_out)):
        _atomic_write(vocab_out, lambda tmp: shutil.copyfile(vocab_file, tmp))
    _atomic_write(os.path.join(out_dir, "model.safetensors"), lambda tmp: save_file(sd, tmp, metadata=meta))


def checkpoint_config(path: str) -> BertConfig | None:
    """The config stored with a checkpoint (our/HF dir, or our .safetensors metadata); None for a bare .bin."""
    if os.path.isdir(path):
        cfg = os.path.join(path, "config.json")
        return BertConfig.from_json_file(cfg) if os.path.isfile(cfg) else None
    if path.endswith(".safetensors") and os.path.isfile(path):
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as e:
            raise ValueError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
        if "bert_config" in meta:
            return BertConfig.from_dict(json.loads(meta["bert_config"]), source=f"{path} (metadata)")
    return None


def checkpoint_vocab(path: str) -> str | None:
    """The vocab.txt stored in a checkpoint directory, if any."""
    vocab = os.path.join(path, "vocab.txt")
    return vocab if os.path.isdir(path) and os.path.isfile(vocab) else None

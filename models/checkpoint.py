"""Checkpoint I/O: our safetensors format, the original release's .bin layouts and Hugging Face directories.

Every layout is mapped to one canonical key set (our parameter names, encoder under `bert.`), so a model class
loads any of them. `.bin`/`.pt` files are read with torch.load(weights_only=True) only.

Layouts read by load_checkpoint (told apart by key names):
  - the release's encoder .bin: embeddings.*, encoder.layer.N.{attn.{query,key,value,o_proj}, attention_norm,
    ffn.{fc1,fc2}, ffn_norm}, pooler.dense; its LM/fine-tuned files add `bert.` and cls.* / qa_outputs.* /
    classifier.*. Our parameter names are these, so they load by name.
  - Hugging Face (a directory with config.json and model.safetensors, pytorch_model.bin, or shards listed in
    model.safetensors.index.json or pytorch_model.bin.index.json; with several, transformers' order decides):
    attention.self.*, attention.output.*, intermediate.dense, output.* go through a key map; buffers and tied
    copies are dropped.
  - ours: a directory from save_checkpoint (weights in model.safetensors or in shards with an index), or its bare
    model.safetensors (the config rides in its metadata).
A shard index file may be named itself: its folder's config, vocab and tokenizer files go with it.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fileio import atomic_write, atomic_write_text, read_vocab_lines
from models.config import BertConfig, read_json_object

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
        while k.startswith(("module.", "_orig_mod.")):  # DDP / torch.compile wrappers, in either order
            k = k.removeprefix("module.").removeprefix("_orig_mod.")
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

# an hf export's vocab for a morpheme-split model: a name transformers' tokenizer classes do not read
MORPH_VOCAB = "morph_vocab.txt"
SHARD_INDEX = "model.safetensors.index.json"  # Hugging Face's name for a checkpoint split into several files
# the indexes transformers writes for a split checkpoint, with the kind of file each lists (.bin: save_pretrained
# with safe_serialization=False, and older versions)
SHARD_INDEXES = {SHARD_INDEX: ".safetensors", "pytorch_model.bin.index.json": ".bin"}


def weights_files(path: str) -> tuple[list[str], str | None]:
    """(the file(s) holding a checkpoint's tensors, the shard index or None): path itself, or in a directory its
    model.safetensors, its pytorch_model.bin, or every shard a shard index (SHARD_INDEXES) lists; a shard index
    may also be named itself."""
    if os.path.isdir(path):
        # transformers' order: a directory holding several (a stale pytorch_model.bin beside newer safetensors
        # shards, which save_pretrained leaves) loads the same weights here as there
        for name in ("model.safetensors", SHARD_INDEX, "pytorch_model.bin", "pytorch_model.bin.index.json"):
            if os.path.isfile(os.path.join(path, name)):
                return weights_files(os.path.join(path, name))
        raise FileNotFoundError(f"{path}: no model.safetensors, pytorch_model.bin or shard index "
                                f"({' or '.join(SHARD_INDEXES)}) in this directory")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file or directory")
    if os.path.basename(path) in SHARD_INDEXES:
        return _shard_files(path), path
    return [path], None


def _shard_files(index: str) -> list[str]:
    suffix = SHARD_INDEXES[os.path.basename(index)]
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(f, str) and f == os.path.basename(f) and f.endswith(suffix)
            for f in weight_map.values()):
        raise ValueError(f"{index}: weight_map must map tensor names to {suffix} files in its own folder")
    files = [os.path.join(os.path.dirname(index), f) for f in dict.fromkeys(weight_map.values())]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{index}: lists {os.path.basename(missing[0])}, which is not there")
    return files


def read_state_dict(path: str) -> dict:
    """Tensors of a checkpoint file or directory, as stored (see canonical_state_dict for the names); the shards
    of a split checkpoint are read one by one and merged."""
    files, index = weights_files(path)
    obj = {}
    for file in files:
        try:
            if file.endswith(".safetensors"):
                part = load_file(file)
            else:
                part = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated file, not a checkpoint at all, pickle with non-tensor objects, ...
            detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise ValueError(f"{file}: not a readable checkpoint ({type(e).__name__}: {detail})") from None
        for wrapper in ("state_dict", "model"):  # training checkpoints that bundle the optimizer too
            if isinstance(part, dict) and isinstance(part.get(wrapper), dict):
                part = part[wrapper]
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise ValueError(f"{file}: not a state dict (expected a mapping of parameter names to tensors)")
        obj.update(part)
    if index is not None:
        listed = set(read_json_object(index)["weight_map"])
        if listed != set(obj):
            odd = sorted(listed ^ set(obj))
            raise ValueError(f"{index}: its weight_map and its shards disagree on {len(odd)} tensor(s), e.g. {odd[0]}")
    return obj


def _listing(items: list[str], n: int = 10) -> str:
    return f"{len(items)} [{', '.join(items[:n])}{', ...' if len(items) > n else ''}]"


def load_checkpoint(model: nn.Module, path: str, strict: bool = True, fresh_ok=(), sd: dict | None = None
                    ) -> nn.Module:
    """Load any supported checkpoint into one of our models; see the module docstring for the layouts.

    Weights of another task's head in the file are ignored (so is a pooler the model does not have). Missing or
    mis-shaped encoder weights always raise. The model's own head (and pooler) raise when strict, otherwise they
    keep their fresh initialisation with a one-line warning: fine-tuning starts from a pretrained encoder.
    fresh_ok: canonical head/pooler names that may be missing even when strict (same warning), e.g. the SOP head
    and pooler when a masked-LM-only checkpoint becomes a BertForPreTraining.
    sd: the file's tensors when the caller has read them already (read_state_dict(path), in any layout); path then
    only names the file in messages. A release .bin is a whole pickle: reading it twice costs seconds at Large.
    """
    sd = canonical_state_dict(read_state_dict(path) if sd is None else sd)  # a new dict: the caller's is kept
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
    fresh = ([k for k in missing if k in fresh_ok and not k.startswith(_ENCODER_PREFIXES)] if strict
             else [k for k in missing + mismatched if not k.startswith(_ENCODER_PREFIXES)])
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


def _pad_id(vocab_file: str | None) -> int:
    tokens = read_vocab_lines(vocab_file) if vocab_file else []
    return tokens.index("[PAD]") if "[PAD]" in tokens else 0


def _shards(sd: dict, max_bytes: int, meta: dict) -> list[dict]:
    """sd cut, in order, into dicts whose safetensors files (tensor data and header) stay within max_bytes."""
    fixed = len(json.dumps(meta)) + 128  # the header's own fields and metadata, generously
    shards, size = [{}], fixed
    for k, v in sd.items():
        n = v.numel() * v.element_size() + len(k) + 96  # the data and the tensor's header entry (name, shape)
        if fixed + n > max_bytes:
            raise ValueError(f"{k} takes {n / 2**20:.2f} MiB, more than a shard of {max_bytes / 2**20:g} MiB holds")
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = fixed
        shards[-1][k], size = v, size + n
    return shards


def _copy_vocab(src: str, dst: str, strip_bom: bool):
    """The vocab byte for byte (its sha256 ties shards and checkpoints together), less a byte-order mark for
    transformers, whose BertTokenizer would read it into the first token ('\ufeff[PAD]')."""
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[3:] if strip_bom and data.startswith(b"\xef\xbb\xbf") else data)


def save_checkpoint(model: nn.Module, out_dir: str, vocab_file: str | None = None, layout: str = "ours",
                    max_shard_bytes: int | None = None, dtype: torch.dtype | None = None,
                    labels: list[str] | None = None):
    """Write out_dir/{model.safetensors, config.json, vocab.txt}, each file replaced only once fully written.

    layout="hf" writes Hugging Face key names and a transformers.BertConfig config.json (save_pretrained form).
    Our config also rides in the safetensors metadata, so a bare .safetensors file still knows its shape.
    max_shard_bytes: weights larger than this are split, as transformers splits them, into
    model-0000i-of-0000n.safetensors files of at most this size and a model.safetensors.index.json naming each
    tensor's file (every loader here reads them, and so does transformers). dtype: floating-point tensors are
    stored in it (e.g. torch.float16, half the size; they load into an fp32 model as they are, rounded).
    labels: a classifier's label names, row by row: config.json's id2label (and label2id in the hf layout), which
    the evaluation scripts read to match head rows to a task's labels.
    """
    if layout not in ("ours", "hf"):
        raise ValueError(f"unknown checkpoint layout {layout!r}")
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    config = model.config.to_dict()
    if labels and len(labels) == model.config.num_labels:
        config["id2label"] = {str(i): name for i, name in enumerate(labels)}
    if layout == "hf":
        sd = to_hf_state_dict(sd)
        config = model.config.to_hf_dict([type(model).__name__], pad_token_id=_pad_id(vocab_file), labels=labels)
    meta = {"format": "pt", "bert_config": json.dumps(model.config.to_dict())}
    shards = _shards(sd, max_shard_bytes, meta) if max_shard_bytes else [sd]  # raises before anything is written
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "config.json"), json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    vocab_out = os.path.join(out_dir, "vocab.txt")
    if layout == "hf" and vocab_file and model.config.morph_analyzer:
        # transformers' BertTokenizer cannot split morphemes first, and given a vocab.txt it would load without
        # complaint and give other ids: the vocab goes under a name it does not read (checkpoint_vocab does)
        vocab_out = os.path.join(out_dir, MORPH_VOCAB)
        print(f"warning: {out_dir}: morph_analyzer={model.config.morph_analyzer!r}: the vocab is written as "
              f"{MORPH_VOCAB}, with no tokenizer files, as transformers' tokenizer would not split morphemes and "
              f"would give other ids; tokenize with tokenization.FullTokenizer('{vocab_out}', morph_analyzer="
              f"{model.config.morph_analyzer!r}) and pass input_ids", file=sys.stderr, flush=True)
    if vocab_file and not (os.path.exists(vocab_out) and os.path.samefile(vocab_file, vocab_out)):
        atomic_write(vocab_out, lambda tmp: _copy_vocab(vocab_file, tmp, strip_bom=layout == "hf"))
    if len(shards) == 1:
        atomic_write(os.path.join(out_dir, "model.safetensors"), lambda tmp: save_file(sd, tmp, metadata=meta))
        return
    names = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    for name, part in zip(names, shards):
        atomic_write(os.path.join(out_dir, name), lambda tmp, part=part: save_file(part, tmp, metadata=meta))
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
             "weight_map": {k: name for name, part in zip(names, shards) for k in part}}
    atomic_write_text(os.path.join(out_dir, SHARD_INDEX), json.dumps(index, indent=2) + "\n")
    with contextlib.suppress(FileNotFoundError):  # an older single file would be read in the shards' place
        os.remove(os.path.join(out_dir, "model.safetensors"))


_WARNED: set[str] = set()  # tokenizer configs already warned about in this process


def index_folder(path: str) -> str:
    """A shard index stands for its folder (config, vocab, task files); any other path for itself."""
    return os.path.dirname(os.path.abspath(path)) if os.path.basename(path) in SHARD_INDEXES and os.path.isfile(
        path) else path


def checkpoint_config(path: str) -> BertConfig | None:
    """The config stored with a checkpoint (our/HF dir, or our .safetensors metadata); None for a bare .bin.

    A Hugging Face directory keeps do_lower_case in tokenizer_config.json, not config.json: it is read from there.
    """
    path = index_folder(path)
    if os.path.isdir(path):
        cfg = os.path.join(path, "config.json")
        if not os.path.isfile(cfg):
            return None
        d = read_json_object(cfg)
        tok_cfg = os.path.join(path, "tokenizer_config.json")
        tok = read_json_object(tok_cfg) if os.path.isfile(tok_cfg) else {}
        lower = tok.get("do_lower_case")
        if lower is not None:
            if not isinstance(lower, bool):
                raise ValueError(f"{tok_cfg}: do_lower_case must be true or false, got {lower!r}")
            if d.setdefault("do_lower_case", lower) != lower:
                raise ValueError(f"{cfg}: do_lower_case={d['do_lower_case']!r} disagrees with {tok_cfg}: "
                                 f"do_lower_case={lower!r}")
        strip = tok.get("strip_accents")  # None: transformers strips exactly when it lower-cases
        # transformers strips accents by NFD, which also splits every Hangul syllable into jamo; said by one rank
        if (strip or (lower and strip is None)) and tok_cfg not in _WARNED and os.environ.get("RANK", "0") == "0":
            _WARNED.add(tok_cfg)
            print(f"warning: {tok_cfg}: do_lower_case={lower!r} with strip_accents={strip!r}: transformers' "
                  "tokenizer splits Hangul syllables into jamo for this model and ours never does, so Korean text "
                  "is tokenised differently from how the model was trained", file=sys.stderr, flush=True)
        return BertConfig.from_dict(d, source=cfg)
    if path.endswith(".safetensors") and os.path.isfile(path):
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as e:
            raise ValueError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
        if "bert_config" in meta:
            source = f"{path} (metadata bert_config)"
            try:
                d = json.loads(meta["bert_config"])
            except json.JSONDecodeError as e:
                raise ValueError(f"{source}: not valid JSON ({e})") from None
            if not isinstance(d, dict):
                raise ValueError(f"{source}: expected a JSON object")
            return BertConfig.from_dict(d, source=source)
    return None


def checkpoint_casing(path: str) -> bool | None:
    """do_lower_case as a checkpoint states it (ours always do; a Hugging Face directory in its tokenizer_config.json),
    None where it says nothing (the release's files, a bare .bin): what checkpoint_config then reads as cased."""
    path = index_folder(path)
    if os.path.isdir(path):
        stated = [d["do_lower_case"] for d in (read_json_object(os.path.join(path, name))
                                               for name in ("config.json", "tokenizer_config.json")
                                               if os.path.isfile(os.path.join(path, name)))
                  if isinstance(d.get("do_lower_case"), bool)]
        return stated[0] if stated else None
    if path.endswith(".safetensors") and os.path.isfile(path):
        config = checkpoint_config(path)  # from the metadata, which our checkpoints write whole
        return None if config is None else config.do_lower_case
    return None


def checkpoint_folder(path: str) -> str:
    """The folder holding a checkpoint's vocab.txt (and run_classifier's task.json): itself, or a weights file's."""
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def checkpoint_label_names(path: str) -> list[str] | None:
    """A classifier checkpoint's label names, row by row: its config.json's id2label, as transformers saves it.
    None without one, or for transformers' placeholders (LABEL_0, LABEL_1, ...). ValueError when its keys are not
    0..n-1."""
    cfg = os.path.join(checkpoint_folder(path), "config.json")
    id2label = read_json_object(cfg).get("id2label") if os.path.isfile(cfg) else None
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        names = [str(id2label[str(i)]) for i in range(len(id2label))]
    except KeyError:
        raise ValueError(f"{cfg}: id2label keys are not 0..{len(id2label) - 1}") from None
    return None if all(n.upper() == f"LABEL_{i}" for i, n in enumerate(names)) else names


def head_rows(path: str, labels, task_name: str) -> list[int] | None:
    """For a classifier checkpoint whose config.json names its labels (id2label) in another order than `labels`
    (a task's): the head row of each of `labels`, in their order (reorder_head applies it). None when the names
    are `labels` in that order, or transformers' placeholders (LABEL_0, ...), or `labels` is None (regression).
    ValueError for other names: read as they stand, the classes would be silently mixed up."""
    names = checkpoint_label_names(path) if labels else None
    if names is None or len(names) != len(labels):
        return None
    names, wanted = [n.lower() for n in names], [label.lower() for label in labels]
    if names == wanted:
        return None
    if sorted(names) != sorted(wanted):
        raise ValueError(f"{os.path.join(checkpoint_folder(path), 'config.json')}: id2label names "
                         f"{', '.join(names)}, not {task_name}'s labels ({', '.join(wanted)}); fix id2label to say "
                         "which row is which")
    return [names.index(label) for label in wanted]


def reorder_head(sd: dict, rows: list[int]) -> dict:
    """A classifier's tensors with its head's rows (classifier.weight, classifier.bias) in the order head_rows gave."""
    return {k: v[rows] if k in ("classifier.weight", "classifier.bias") else v for k, v in sd.items()}


def checkpoint_vocab(path: str) -> str | None:
    """The vocab.txt stored in a checkpoint directory (or beside a weights file), else an hf export's MORPH_VOCAB,
    if any."""
    for name in ("vocab.txt", MORPH_VOCAB):
        vocab = os.path.join(checkpoint_folder(path), name)
        if os.path.isfile(vocab):
            return vocab
    return None


def checkpoint_tokenizer_vocab(path: str) -> list[str] | None:
    """The WordPiece vocab in a checkpoint folder's tokenizer.json, as vocab.txt lines (id order); None without one.

    transformers 5 saves only tokenizer.json, no vocab.txt.
    """
    file = os.path.join(checkpoint_folder(path), "tokenizer.json")  # beside a weights file or shard index too
    if not os.path.isfile(file):
        return None
    tokenizer = read_json_object(file)
    model = tokenizer.get("model")
    kind = model.get("type") if isinstance(model, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if kind != "WordPiece" or not isinstance(vocab, dict):
        raise ValueError(f"{file}: model.type={kind!r}, not a WordPiece vocab that a vocab.txt can hold")
    ids = list(vocab.values())
    if not all(type(i) is int for i in ids) or sorted(ids) != list(range(len(ids))):
        raise ValueError(f"{file}: model.vocab ids are not 0..{len(vocab) - 1}, each once")
    tokens = sorted(vocab, key=vocab.get)
    # tokens added after training (tokenizer.add_tokens) live only in added_tokens; transformers cuts them out of
    # the text before WordPiece, which a vocab.txt cannot say: ours would tokenise that text differently
    added = [a for a in tokenizer.get("added_tokens") or [] if isinstance(a, dict)]
    extra = [a for a in added if not (type(a.get("id")) is int and 0 <= a["id"] < len(tokens)
                                      and tokens[a["id"]] == a.get("content"))]
    if extra:
        raise ValueError(f"{file}: {len(extra)} added token(s) outside model.vocab (first: {extra[0].get('content')!r}, "
                         f"id {extra[0].get('id')}); tokens added after training are not supported (a vocab.txt "
                         "cannot mark them to be matched before WordPiece)")
    bad = [t for t in tokens if "\n" in t or "\r" in t]
    if bad:
        raise ValueError(f"{file}: token {bad[0]!r} has a line break; a vocab.txt cannot hold it")
    return tokens


def write_tokenizer_vocab(path: str, out_dir: str) -> str | None:
    """out_dir/vocab.txt made from the checkpoint folder's tokenizer.json; None when it has none."""
    tokens = checkpoint_tokenizer_vocab(path)
    if tokens is None:
        return None
    vocab = os.path.join(out_dir, "vocab.txt")
    with open(vocab, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(t + "\n" for t in tokens)
    return vocab

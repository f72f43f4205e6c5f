"""BERT encoder and task heads; checkpoint I/O (our format, the original release's and Hugging Face's) re-exported.

    from models.modeling import BertConfig, BertForPreTraining, load_checkpoint
    model = BertForPreTraining(BertConfig.from_json_file("models/configs/small.json"))
    load_checkpoint(model, "release/bert_small_lm.bin")      # or our dir / .safetensors, or a Hugging Face dir

Post-LayerNorm BERT with exact (erf) GELU and learned absolute positions. The MLM decoder is the word-embedding
matrix itself, so the model never holds two copies that could drift apart.

The checkpoint functions (load_checkpoint, save_checkpoint, checkpoint_config, ...) live in models/checkpoint.py,
with the layouts they read.
"""
from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.config import BertConfig

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

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, mlm_labels=None, sop_labels=None,
                mlm_positions=None):
        """mlm_labels [B,T]: the original token at masked positions, -100 elsewhere. mlm_positions [B,K]: where the
        masked tokens are (padded with any unmasked position, e.g. 0); without it they are found from mlm_labels.

        With labels, mlm_logits are [B,K,V] for the K gathered positions and mlm_targets [B,K] their labels
        (-100 on padding); without labels, mlm_logits are [B,T,V].
        """
        seq, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        emb = self.bert.embeddings.word_embeddings.weight
        out = {"sop_logits": self.cls.seq_relationship(pooled)}  # [B,2]
        losses = []
        if mlm_labels is None:
            out["mlm_logits"] = self.cls.predictions(seq, emb)  # [B,T,V]
        else:
            # the vocab projection dominates the head's cost and ~15% of positions are masked: score only those.
            # Positions from the data pipeline keep shapes static and the GPU unsynchronised; finding them here
            # needs the largest count per row on the host.
            if mlm_positions is None:
                masked = (mlm_labels != -100).int()  # [B,T]
                k = int(masked.sum(1).max())
                mlm_positions = masked.argsort(dim=1, descending=True, stable=True)[:, :k]  # masked first, in order
            targets = mlm_labels.gather(1, mlm_positions)  # [B,K]
            h = seq.gather(1, mlm_positions[..., None].expand(-1, -1, seq.size(-1)))  # [B,K,H]
            logits = self.cls.predictions(h, emb)  # [B,K,V]
            count = (targets != -100).sum()
            out.update(mlm_logits=logits, mlm_targets=targets, mlm_count=count)
            out["mlm_loss"] = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                              reduction="sum") / count.clamp(min=1)
            out["mlm_correct"] = (logits.argmax(-1) == targets).sum()  # -100 never equals an argmax
            losses.append(out["mlm_loss"])
        if sop_labels is not None:
            out["sop_loss"] = F.cross_entropy(out["sop_logits"].float(), sop_labels)
            out["sop_correct"] = (out["sop_logits"].argmax(-1) == sop_labels).sum()
            losses.append(out["sop_loss"])
        if losses:
            out["loss"] = sum(losses)
        return out


def _span_loss(logits, positions, T: int):
    """Mean cross-entropy over the rows whose position lies inside the window; positions outside it are ignored.
    Summed and divided by their count (at least 1), as the MLM loss is: when every row is ignored, cross_entropy's
    mean would be 0/0 = NaN and poison the gradients, where no rows to learn from should give 0."""
    positions = positions.clamp(0, T)
    return F.cross_entropy(logits, positions, ignore_index=T, reduction="sum") / (positions != T).sum().clamp(min=1)


class BertForQuestionAnswering(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        # start and end logits: two outputs whatever the config came with (e.g. 3 from a KorNLI checkpoint), and
        # the stored config says so, or a Hugging Face export would size qa_outputs from its id2label
        self.config = config = dataclasses.replace(config, num_labels=2)
        self.bert = BertModel(config, add_pooler=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self.qa_outputs, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, start_positions=None, end_positions=None):
        seq, _ = self.bert(input_ids, token_type_ids, attention_mask)
        # logits in fp32 even under autocast: bf16 keeps 8 mantissa bits, and ties between start/end scores would
        # reorder the n-best answers (classifier evaluation runs in fp32 for the same reason); the head is tiny
        with torch.autocast(seq.device.type, enabled=False):
            start_logits, end_logits = self.qa_outputs(seq.float()).unbind(-1)  # [B,T,2] -> 2 x [B,T]
        out = {"start_logits": start_logits, "end_logits": end_logits}
        if start_positions is not None and end_positions is not None:
            # as in BERT: a position outside the window (answer truncated away) is ignored, not clamped onto it
            T = seq.size(1)
            if attention_mask is not None:
                # padding takes no share of the softmax, so the loss does not depend on how wide the batch was cut
                # (BERT and Hugging Face let it; trimmed, rounded or length-grouped widths would then differ)
                pad = attention_mask == 0
                start_logits, end_logits = start_logits.masked_fill(pad, -1e4), end_logits.masked_fill(pad, -1e4)
            out["loss"] = (_span_loss(start_logits, start_positions, T) + _span_loss(end_logits, end_positions, T)) / 2
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
                # flat on both sides, as Hugging Face does: [B,1] labels against [B] scores would broadcast to [B,B]
                out["loss"] = F.mse_loss(logits.view(-1).float(), labels.view(-1).float())
            else:
                out["loss"] = F.cross_entropy(logits.float(), labels)
        return out


# Checkpoint I/O lives in models/checkpoint.py; re-exported so `from models.modeling import load_checkpoint` works.
from models.checkpoint import (  # noqa: E402,F401
    canonical_state_dict, checkpoint_config, checkpoint_vocab, load_checkpoint, read_state_dict, save_checkpoint,
    to_hf_state_dict, to_release_state_dict)

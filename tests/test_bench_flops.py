"""The analytic FLOP count behind the benchmarks' MFU against torch's FlopCounterMode on the same forward."""
import os
import sys

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from bench_common import encoder_flops, forward_flops  # noqa: E402
from bench_pretraining import make_batch  # noqa: E402
from models.modeling import (BertConfig, BertForPreTraining, BertForQuestionAnswering,  # noqa: E402
                             BertForSequenceClassification)

B, T = 2, 96


@pytest.fixture(scope="module")
def config():
    c = BertConfig.from_json_file(os.path.join(ROOT, "models", "configs", "tiny.json"))
    # tiny is 2 layers x 64 hidden, FFN 128, vocab 1000: at T=96 the attention/projection/FFN/MLM terms are all
    # of one order, so dropping or mis-scaling any one of them moves the total far beyond the tolerance below
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.vocab_size) == (2, 64, 128, 1000)
    return c


def counted(model, batch, backward=False):
    """(forward FLOPs, backward FLOPs) as FlopCounterMode sees them.

    On the CPU, SDPA goes either to a fused kernel (_scaled_dot_product_flash_attention_for_cpu), which has no FLOP
    formula in torch and counts as 0, or to the math path, depending on the inputs (grad mode, mask, dtype). Forcing
    the math backend runs attention as two bmm's over the full T x T, padded keys included: what the analytic count
    charges, and what torch's formulas for the GPU kernels count too.
    """
    torch.manual_seed(0)
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as fwd:
            loss = model(**batch)["loss"]
        with FlopCounterMode(display=False) as bwd:
            if backward:
                loss.backward()
    return fwd.get_total_flops(), bwd.get_total_flops()


def encoder_terms(config):
    """Per-sequence FLOPs of the encoder's projections, FFN and attention; they must add up to encoder_flops."""
    L, H, inner = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    terms = (L * 8 * T * H * H, L * 4 * T * H * inner, L * 4 * T * T * H)
    assert sum(terms) == encoder_flops(config, T)
    return terms


def close(a, b, rel=0.02):
    return abs(a - b) <= rel * b


def test_pretraining_forward_and_backward(config):
    model = BertForPreTraining(config)
    batch = make_batch(B, T, config.vocab_size, "cpu")  # masked positions and ~10% short rows, as benchmarked
    n_masked = int((batch["mlm_labels"] != -100).sum())
    fwd, bwd = counted(model, batch, backward=True)
    ours = B * forward_flops(config, T, "pretraining", n_masked / B)
    assert close(ours, fwd), (ours, fwd)
    # the "3x forward" of a training step: every matmul's backward is two of the same size
    assert close(2 * fwd, bwd), (fwd, bwd)
    # the check has teeth: without the FFN, the attention or the MLM head the count is off by far more than 2%
    mlm = (n_masked / B) * 2 * config.hidden_size * (config.hidden_size + config.vocab_size)
    for term in (*encoder_terms(config), mlm):
        assert not close(ours - B * term, fwd)


def test_qa_and_classifier_forward(config):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, config.vocab_size, (B, T), generator=g)
    base = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids)}
    qa = BertForQuestionAnswering(config)
    fwd, _ = counted(qa, {**base, "start_positions": torch.tensor([3, 5]), "end_positions": torch.tensor([4, 9])})
    assert close(B * forward_flops(config, T, "qa"), fwd), fwd
    for term in encoder_terms(config):
        assert not close(B * (forward_flops(config, T, "qa") - term), fwd)
    cls = BertForSequenceClassification(config, num_labels=3)
    fwd, _ = counted(cls, {**base, "labels": torch.tensor([0, 2])})
    assert close(B * forward_flops(config, T, "cls", num_labels=3), fwd), fwd

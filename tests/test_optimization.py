import io
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimization import Lamb, build_optimizer, get_scheduler, param_groups  # noqa: E402


# ---------------------------------------------------------------- a small BERT-shaped model (no models/ import)

class TinyEmbeddings(nn.Module):
    def __init__(self, vocab, dim, max_len=16):
        super().__init__()
        self.word = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(max_len, dim)
        self.token_type = nn.Embedding(2, dim)
        self.LayerNorm = nn.LayerNorm(dim)

    def forward(self, ids):  # ids [B,T] -> [B,T,D]
        pos = torch.arange(ids.shape[1])
        return self.LayerNorm(self.word(ids) + self.position(pos) + self.token_type(torch.zeros_like(ids)))


class TinyLayer(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim)  # deliberately not called "LayerNorm"
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.ln_2 = nn.LayerNorm(dim)

    def forward(self, x):  # [B,T,D]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1) @ v
        x = self.attn_norm(x + self.proj(a))
        return self.ln_2(x + self.ff(x))


class TinyBert(nn.Module):
    def __init__(self, vocab=11, dim=8, layers=2):
        super().__init__()
        self.embeddings = TinyEmbeddings(vocab, dim)
        self.layers = nn.ModuleList(TinyLayer(dim) for _ in range(layers))
        self.transform = nn.Linear(dim, dim)
        self.transform_norm = nn.LayerNorm(dim)
        self.decoder = nn.Linear(dim, vocab)
        self.decoder.weight = self.embeddings.word.weight  # tied
        self.sop = nn.Linear(dim, 2)

    def forward(self, ids):
        x = self.embeddings(ids)
        for layer in self.layers:
            x = layer(x)
        return self.decoder(self.transform_norm(self.transform(x))), self.sop(x[:, 0])


# ---------------------------------------------------------------- reference LAMB: explicit formulas, one tensor at a time

class ReferenceLamb:
    def __init__(self, groups, lr, betas, eps, max_grad_norm, use_nvlamb=False):
        self.groups = [([p.detach().clone() for p in params], wd) for params, wd in groups]
        self.lr, self.betas, self.eps, self.max_grad_norm, self.use_nvlamb = lr, betas, eps, max_grad_norm, use_nvlamb
        self.state = {}

    def step(self, grads):  # grads: same nesting as groups, None for "no gradient"
        b1, b2 = self.betas
        flat = [g for gs in grads for g in gs if g is not None]
        global_norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in flat))
        scale = 1.0
        if self.max_grad_norm and global_norm > self.max_grad_norm:
            scale = self.max_grad_norm / global_norm
        for gi, ((params, wd), gs) in enumerate(zip(self.groups, grads)):
            for pi, (p, g) in enumerate(zip(params, gs)):
                if g is None:
                    continue
                st = self.state.setdefault((gi, pi), {"step": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)})
                st["step"] += 1
                t = st["step"]
                g = g * scale
                st["m"] = b1 * st["m"] + (1 - b1) * g
                st["v"] = b2 * st["v"] + (1 - b2) * g * g
                m_hat = st["m"] / (1 - b1 ** t)
                v_hat = st["v"] / (1 - b2 ** t)
                u = m_hat / (v_hat.sqrt() + self.eps) + wd * p
                trust = 1.0
                if wd != 0 or self.use_nvlamb:
                    w_norm, u_norm = float(p.norm()), float(u.norm())
                    if w_norm > 0 and u_norm > 0:
                        trust = w_norm / u_norm
                p -= self.lr * trust * u


def _batch(step, vocab=11):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, vocab, (3, 5), generator=g), torch.randint(0, 2, (3,), generator=g)


def _loss(model, step):
    ids, sop = (t.to(next(model.parameters()).device) for t in _batch(step))
    mlm_logits, sop_logits = model(ids)
    return (nn.functional.cross_entropy(mlm_logits.flatten(0, 1), ids.flatten())
            + nn.functional.cross_entropy(sop_logits, sop))


def _model():
    torch.manual_seed(0)
    model = TinyBert()
    with torch.no_grad():
        model.transform.weight.zero_()  # ||w|| = 0 at the first step: trust-ratio-1 path
    return model


def _backward(model, step):
    """Gradients for `step`; the SOP head skips odd steps (grad None), exercising per-parameter step counts."""
    model.zero_grad(set_to_none=True)
    _loss(model, step).backward()
    if step % 2 == 1:
        model.sop.weight.grad = None
        model.sop.bias.grad = None


@pytest.mark.parametrize("max_grad_norm,use_nvlamb", [(0.05, False), (1e6, False), (None, False), (0.05, True)])
def test_lamb_matches_reference_loop(max_grad_norm, use_nvlamb):
    model = _model()
    model.unused = nn.Linear(2, 2)  # never in the graph: grad stays None throughout
    groups = param_groups(model, weight_decay=0.01)
    lr, betas, eps = 0.05, (0.9, 0.999), 1e-6
    opt = Lamb(groups, lr=lr, betas=betas, eps=eps, max_grad_norm=max_grad_norm, use_nvlamb=use_nvlamb)
    ref = ReferenceLamb([(g["params"], g["weight_decay"]) for g in groups], lr, betas, eps, max_grad_norm, use_nvlamb)
    unused_before = model.unused.weight.detach().clone()

    for step in range(6):
        _backward(model, step)
        grads = [[None if p.grad is None else p.grad.clone() for p in g["params"]] for g in groups]
        flat = [g for gs in grads for g in gs if g is not None]
        global_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in flat]))
        if max_grad_norm == 0.05:
            assert global_norm > max_grad_norm  # clipping really is active
        elif max_grad_norm is not None:
            assert global_norm < max_grad_norm
        opt.step()
        ref.step(grads)
        for g, (ref_params, _) in zip(groups, ref.groups):
            for p, r in zip(g["params"], ref_params):
                torch.testing.assert_close(p.detach(), r, rtol=0, atol=1e-6)
        # clipping happens inside the step and, as with clip_grad_norm_, leaves .grad clipped
        scale = min(1.0, max_grad_norm / global_norm.item()) if max_grad_norm else 1.0
        for gs, g in zip(grads, groups):
            for before, p in zip(gs, g["params"]):
                if before is not None:
                    torch.testing.assert_close(p.grad, before * scale, rtol=1e-6, atol=0)

    assert torch.equal(model.unused.weight, unused_before)
    assert model.unused.weight not in opt.state
    assert opt.state[model.sop.weight]["step"] == 3  # skipped steps do not advance its bias correction
    assert opt.state[model.layers[0].qkv.weight]["step"] == 6
    assert model.transform.weight.abs().sum() > 0  # the zero-initialised weight moved


def test_lamb_single_step_by_hand():
    # w: decay group, trust ratio applies. b: no-decay group, plain Adam step (apex semantics).
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    b = nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
    opt = Lamb([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
               lr=0.1, eps=0.0, max_grad_norm=1.0)
    w.grad = torch.tensor([6.0, 8.0], dtype=torch.float64)
    b.grad = torch.tensor([-24.0], dtype=torch.float64)  # global norm sqrt(36 + 64 + 576) = 26 -> scale 1/26
    opt.step()
    # First Adam step with eps=0 is sign(g) whatever the clipping: u_w = [1, 1] + 0.1 * [3, 4] = [1.3, 1.4],
    # trust = ||w|| / ||u|| = 5 / sqrt(3.65) = 2.6171196..., w -= 0.1 * trust * u.
    torch.testing.assert_close(w.detach(), torch.tensor([2.659774450316361, 3.6336032541868506], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(b.detach(), torch.tensor([0.6], dtype=torch.float64), rtol=0, atol=1e-12)

    # Second step anchors clipping and bias correction: only b moves (w.grad = 0 -> u_w = m_hat/sqrt(v_hat) + wd w).
    w.grad = torch.zeros(2, dtype=torch.float64)
    b.grad = torch.tensor([-2.0], dtype=torch.float64)  # global norm 2 -> scale 1/2
    opt.step()
    g1, g2 = -24.0 / 26.0, -2.0 / 2.0
    m = 0.9 * (0.1 * g1) + 0.1 * g2
    v = 0.999 * (0.001 * g1 * g1) + 0.001 * g2 * g2
    expected_b = 0.6 - 0.1 * (m / (1 - 0.9 ** 2)) / math.sqrt(v / (1 - 0.999 ** 2))
    assert abs(b.item() - expected_b) < 1e-12


@pytest.mark.parametrize("save_at", [1, 4])  # inside warm-up (it ends at step 2) and after it
def test_lamb_state_dict_resume_is_exact(save_at):
    lr, n = 0.02, 8

    def run(model, opt, sched, steps):
        for step in steps:
            _backward(model, step)
            opt.step()
            sched.step()

    full = _model()
    opt = Lamb(param_groups(full, 0.01), lr=lr, max_grad_norm=0.05)
    run(full, opt, get_scheduler("poly", opt, 0.25, n), range(n))

    first = _model()
    opt_a = Lamb(param_groups(first, 0.01), lr=lr, max_grad_norm=0.05)
    sched_a = get_scheduler("poly", opt_a, 0.25, n)
    run(first, opt_a, sched_a, range(save_at))
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt_a.state_dict(), "sched": sched_a.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    resumed = TinyBert()
    resumed.load_state_dict(ckpt["model"])
    opt_b = Lamb(param_groups(resumed, 0.01), lr=lr, max_grad_norm=0.05)
    sched_b = get_scheduler("poly", opt_b, 0.25, n)
    opt_b.load_state_dict(ckpt["opt"])
    sched_b.load_state_dict(ckpt["sched"])
    run(resumed, opt_b, sched_b, range(save_at, n))

    for (name, p), q in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    assert opt_b.state[resumed.sop.weight]["step"] == opt.state[full.sop.weight]["step"] == n // 2


def _three_layer():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))])
@pytest.mark.parametrize("old_step", ["int", "float64 on the host"])
def test_lamb_continues_an_older_state_dict(device, old_step):
    """Earlier versions saved the step as a Python int, then as a float64 tensor on the host; the fused kernel wants
    float32 beside the parameter. Loading either continues the same run exactly, per-parameter counts included
    (the last bias skips the odd steps)."""
    x = torch.linspace(-1, 1, 64).reshape(16, 4).to(device)

    def fresh():
        model = _three_layer().to(device)
        opt = Lamb(param_groups(model, 0.01), lr=0.05, max_grad_norm=0.05)
        return model, opt, get_scheduler("linear", opt, 0.25, 6)

    def run(model, opt, sched, steps):
        for step in steps:
            model.zero_grad(set_to_none=True)
            model(x + step).pow(2).mean().backward()
            if step % 2:
                model[2].bias.grad = None
            opt.step()
            sched.step()

    full, opt, sched = fresh()
    run(full, opt, sched, range(6))
    first, opt_a, sched_a = fresh()
    run(first, opt_a, sched_a, range(3))
    state = opt_a.state_dict()
    for s in state["state"].values():
        n = int(s["step"].item())
        s["step"] = n if old_step == "int" else torch.tensor(float(n), dtype=torch.float64)
    resumed, opt_b, sched_b = fresh()
    resumed.load_state_dict(first.state_dict())
    opt_b.load_state_dict(state)
    sched_b.load_state_dict(sched_a.state_dict())
    run(resumed, opt_b, sched_b, range(3, 6))
    for (name, p), q in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    assert all(s["step"].dtype == torch.float32 and s["step"].device.type == device for s in opt_b.state.values())
    assert opt_b.state[resumed[2].bias]["step"].item() == 3
    assert opt_b.state[resumed[2].weight]["step"].item() == 6


def test_lamb_rejects_sparse_gradients():
    emb = nn.Embedding(5, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse"):
        Lamb(emb.parameters(), lr=0.1).step()


def test_param_groups_no_decay_on_biases_and_every_layernorm():
    model = TinyBert()
    model.embeddings.token_type.weight.requires_grad_(False)
    decay, no_decay = param_groups(model, weight_decay=0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0

    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 1 + 2 * 2 + 1  # embeddings, two per layer, MLM transform
    expected_no_decay = {id(m.weight) for m in norms} | {id(p) for n, p in model.named_parameters() if n.endswith("bias")}
    trainable = [p for p in model.parameters() if p.requires_grad]  # parameters() already de-duplicates ties
    assert {id(p) for p in no_decay["params"]} == expected_no_decay
    assert {id(p) for p in decay["params"]} == {id(p) for p in trainable} - expected_no_decay
    all_ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(all_ids) == len(set(all_ids)) == len(trainable)
    assert sum(p is model.embeddings.word.weight for p in decay["params"]) == 1  # tied decoder weight once
    assert id(model.embeddings.token_type.weight) not in all_ids  # frozen parameters are left out


def test_param_groups_a_tensor_shared_by_a_norm_and_another_module_is_not_decayed():
    """A parameter reached as a LayerNorm's weight and as another module's plain parameter (a tie no BERT has, but
    an experiment may add) lands in the no-decay group alone: torch's optimizers refuse one in both groups."""
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Module())
    model[2].scale = model[1].weight
    decay, no_decay = param_groups(model, weight_decay=0.01)
    assert [p is model[1].weight for p in no_decay["params"]].count(True) == 1
    assert not any(p is model[1].weight for p in decay["params"])
    torch.optim.AdamW([decay, no_decay], lr=1e-3)


def test_param_groups_no_decay_on_every_kind_of_normalisation():
    """RMSNorm and GroupNorm scales are normalisation weights too: no decay, like LayerNorm's."""
    model = nn.Sequential(nn.Linear(4, 8), nn.RMSNorm(8), nn.Linear(8, 8, bias=False), nn.GroupNorm(2, 8))
    decay, no_decay = param_groups(model, weight_decay=0.01)
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].weight), id(model[3].weight),
                                                   id(model[3].bias)}


def test_lamb_norms_of_half_precision_tensors_do_not_overflow():
    """Per-tensor norms for the trust ratio and the clipping are reduced in fp32: an fp16 tensor whose norm is past
    fp16's range (65504) still has a finite, exact norm."""
    from optimization import _norms
    big = torch.full((10000,), 1000.0, dtype=torch.float16)
    norms = _norms([big, torch.ones(4, dtype=torch.bfloat16)])
    assert norms.dtype == torch.float32
    torch.testing.assert_close(norms, torch.tensor([1000.0 * 100, 2.0]), rtol=1e-5, atol=0)


def test_lamb_resumes_after_the_parameters_change_dtype():
    """A state dict loaded after the model changed dtype (load_state_dict casts the moments to the parameters'):
    the step matches a fresh LAMB given the same state, not one computed in scratch space of the old dtype."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(6, 5))
    opt = Lamb([{"params": [w], "weight_decay": 0.01}], lr=0.1)
    w.grad = torch.randn(6, 5)
    opt.step()
    saved = io.BytesIO()
    torch.save(opt.state_dict(), saved)  # as a checkpoint holds it: each load gets tensors of its own

    def state():
        saved.seek(0)
        return torch.load(saved, weights_only=True)
    fresh_w = nn.Parameter(w.detach().double().clone())
    fresh = Lamb([{"params": [fresh_w], "weight_decay": 0.01}], lr=0.1)
    fresh.load_state_dict(state())
    w.data = w.data.double()
    opt.load_state_dict(state())
    g = torch.randn(6, 5, dtype=torch.float64)
    w.grad, fresh_w.grad = g.clone(), g.clone()
    opt.step()
    fresh.step()
    assert w.dtype == torch.float64
    torch.testing.assert_close(w.detach(), fresh_w.detach(), rtol=0, atol=1e-12)


def test_layer_lr_decay_sets_each_depths_rate():
    """Layer-wise decay: lr * D ** (L + 1 - depth), with the embeddings at depth 0, encoder layer i at i + 1 and
    the pooler and head at L + 1 (the full rate); the weight-decay split is the one without it, D = 1 gives the two
    plain groups, and the schedule scales every group alike."""
    from helpers import tiny_config
    from models.modeling import BertForSequenceClassification
    model = BertForSequenceClassification(tiny_config(), num_labels=1)
    L = len(model.bert.encoder.layer)
    plain, groups = param_groups(model, 0.01), param_groups(model, 0.01, layer_lr_decay=0.5)
    assert len(plain) == 2 and "lr_scale" not in plain[0] and len(groups) == 2 * (L + 2)
    for wd, ref in ((0.01, plain[0]), (0.0, plain[1])):
        assert [id(p) for g in groups if g["weight_decay"] == wd for p in g["params"]] != []
        assert {id(p) for g in groups if g["weight_decay"] == wd for p in g["params"]} == {id(p) for p in ref["params"]}
    opt = build_optimizer("adam", groups, lr=1e-3)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}

    def expected(name):
        if name.startswith("bert.embeddings."):
            return 1e-3 * 0.5 ** (L + 1)
        if name.startswith("bert.encoder.layer."):
            return 1e-3 * 0.5 ** (L - int(name.split(".")[3]))
        return 1e-3  # pooler, classifier
    for name, p in model.named_parameters():
        assert lr_of[id(p)] == pytest.approx(expected(name)), name
    sched = get_scheduler("linear", opt, 0.0, 10)
    opt.step()
    sched.step()
    assert all(g["lr"] == pytest.approx(0.9e-3 * g["lr_scale"]) for g in opt.param_groups)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="layer_lr_decay"):
            param_groups(model, 0.01, layer_lr_decay=bad)
    with pytest.raises(ValueError, match="needs a BERT model"):
        param_groups(_model(), 0.01, layer_lr_decay=0.9)


def _lrs(name, warmup, total, until, degree=0.5):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = get_scheduler(name, opt, warmup, total, degree=degree)
    lrs = []
    for _ in range(until + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_linear_schedule_curve():
    lrs = _lrs("linear", 0.1, 100, 130)
    expected = {0: 0.0, 5: 1.0, 9: 1.8, 10: 2.0, 55: 1.0, 91: 0.2, 100: 0.0, 101: 0.0, 130: 0.0}
    for step, lr in expected.items():
        assert lrs[step] == pytest.approx(lr, abs=1e-12), step
    assert all(isinstance(x, float) and math.isfinite(x) and x >= 0 for x in lrs)


def test_linear_schedule_equals_transformers_where_warmup_is_whole_steps():
    """transformers' get_linear_schedule_with_warmup as the oracle, every step from 0 to past the end. Where warm-up
    is not a whole number of steps the two part on purpose: transformers truncates it to whole steps, ours (as
    pytorch-pretrained-BERT's warmup_linear) warms up over the exact fraction."""
    transformers = pytest.importorskip("transformers")
    for total, warmup in ((100, 0.1), (37, 0.0), (8, 0.25), (1000, 0.06)):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
        theirs = transformers.get_linear_schedule_with_warmup(opt, round(warmup * total), total)
        ours = _lrs("linear", warmup, total, total + 5)
        for step, lr in enumerate(ours):
            assert lr == pytest.approx(2.0 * theirs.lr_lambdas[0](step), abs=1e-12), (total, warmup, step)


def test_poly_schedule_curve():
    lrs = _lrs("poly", 0.1, 100, 130)
    # NVIDIA's PolyWarmUpScheduler jumps from 2 * 0.9 to 2 * sqrt(0.9) at the end of warm-up.
    expected = {0: 0.0, 5: 1.0, 9: 1.8, 10: 2.0 * math.sqrt(0.9), 50: 2.0 * math.sqrt(0.5),
                75: 1.0, 99: 2.0 * math.sqrt(0.01), 100: 0.0, 101: 0.0, 130: 0.0}
    for step, lr in expected.items():
        assert lrs[step] == pytest.approx(lr, abs=1e-12), step
    assert all(isinstance(x, float) and math.isfinite(x) and x >= 0 for x in lrs)
    assert _lrs("poly", 0.1, 100, 50, degree=1.0)[50] == pytest.approx(1.0)


def test_schedules_without_warmup():
    lin, poly = _lrs("linear", 0.0, 100, 120), _lrs("poly", 0.0, 100, 120)
    assert lin[0] == poly[0] == 2.0
    assert lin[50] == pytest.approx(1.0) and poly[75] == pytest.approx(1.0)
    assert lin[100] == poly[100] == lin[120] == poly[120] == 0.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(total_steps=0), "total_steps"), (dict(total_steps=-5), "total_steps"), (dict(total_steps=2.5), "total_steps"),
    (dict(warmup_proportion=1.0), "warmup_proportion"), (dict(warmup_proportion=-0.1), "warmup_proportion"),
    (dict(degree=0.0), "degree"), (dict(name="cosine"), "cosine"),
])
def test_scheduler_rejects_bad_arguments(kwargs, match):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    args = dict(name="poly", warmup_proportion=0.1, total_steps=10) | kwargs
    with pytest.raises(ValueError, match=match):
        get_scheduler(args.pop("name"), opt, **args)


def test_build_optimizer_adam_equals_torch_adamw():
    a, b = _model(), _model()
    opt_a = build_optimizer("adam", param_groups(a, 0.01), lr=1e-2, eps=1e-6, betas=(0.9, 0.98))
    opt_b = torch.optim.AdamW(param_groups(b, 0.01), lr=1e-2, eps=1e-6, betas=(0.9, 0.98), foreach=False)
    assert type(opt_a) is torch.optim.AdamW and opt_a.defaults["foreach"] is True  # CPU: foreach, not fused
    assert [g["weight_decay"] for g in opt_a.param_groups] == [0.01, 0.0]
    for step in range(4):
        for model, opt in ((a, opt_a), (b, opt_b)):
            _backward(model, step)
            opt.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(a.layers[0].qkv.weight, _model().layers[0].qkv.weight)


def test_build_optimizer_lamb_and_unknown_name():
    model = _model()
    opt = build_optimizer("lamb", param_groups(model, 0.01), lr=1e-3, max_grad_norm=0.5)
    assert isinstance(opt, Lamb) and opt.max_grad_norm == 0.5 and opt.defaults["eps"] == 1e-6
    opt = build_optimizer("lamb", param_groups(model, 0.01), lr=1e-3, eps=1e-8, betas=(0.8, 0.95))
    assert opt.defaults["eps"] == 1e-8 and opt.defaults["betas"] == (0.8, 0.95)  # the flags reach LAMB too
    with pytest.raises(ValueError, match="sgd"):
        build_optimizer("sgd", param_groups(model, 0.01), lr=1e-3)


def test_every_schedule_and_optimizer_is_a_flag_choice():
    """A schedule added to optimization._SCHEDULES (or an optimizer to build_optimizer) is a --scheduler
    (--optimizer) choice of run_pretraining.py and bench/cram.py without another list to edit."""
    import run_pretraining
    from optimization import OPTIMIZERS, SCHEDULES, _SCHEDULES

    actions = {a.dest: a for a in run_pretraining.build_parser()._actions}
    assert tuple(actions["scheduler"].choices) == SCHEDULES == tuple(_SCHEDULES)
    assert tuple(actions["optimizer"].choices) == OPTIMIZERS
    model = torch.nn.Linear(2, 2)
    for name in OPTIMIZERS:  # each name builds
        build_optimizer(name, param_groups(model, 0.01), lr=1e-3)
    with pytest.raises(ValueError, match="expected one of adam, lamb"):
        build_optimizer("sgd", param_groups(model, 0.01), lr=1e-3)

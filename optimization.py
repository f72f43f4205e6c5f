"""Optimisers and learning-rate schedules for BERT fine-tuning and pre-training.

    from optimization import param_groups, build_optimizer, get_scheduler
    optimizer = build_optimizer("lamb", param_groups(model, weight_decay=0.01), lr=6e-3, max_grad_norm=1.0)
    # or compile=True: the same update through torch.compile (measured slower than eager on a GPU: see Lamb)
    scheduler = get_scheduler("poly", optimizer, warmup_proportion=0.2843, total_steps=7038)  # step once per update

`Lamb` reproduces the update of NVIDIA apex's FusedLAMB (the optimiser of NVIDIA's BERT pre-training recipe)
in plain PyTorch foreach ops, so the recipe's hyperparameters carry over without apex.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

# Normalisation weights are scales around 1; decaying them towards 0 fights the normalisation. They are found by
# module type because parameter names differ between our modules, release checkpoints and Hugging Face.
_NORM_TYPES = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)


def check_layer_lr_decay(value: float, name: str = "layer_lr_decay"):
    """ValueError naming `name` (a flag, for the scripts) unless 0 < value <= 1."""
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} {value}: must be in (0, 1]")


def param_groups(model: nn.Module, weight_decay: float, layer_lr_decay: float = 1.0) -> list[dict]:
    """[decay group, no-decay group] over the trainable parameters of `model`.

    No decay on biases and on the weights of normalisation layers; decay on everything else. A parameter shared
    by several modules (the MLM decoder weight tied to the word embeddings) is listed once. Both groups are always
    returned, even if one is empty, so that optimiser state dicts line up between runs.

    layer_lr_decay < 1: layer-wise learning-rate decay for fine-tuning (ELECTRA's, one step less: its top
    layer trains at D ** 2, its embeddings at D ** (L + 2)): the pair of groups per
    depth, each with lr_scale = layer_lr_decay ** (L + 1 - depth), where the embeddings are depth 0, encoder layer
    i is depth i + 1 and all above the encoder (pooler, task head) is depth L + 1 at the full rate; build_optimizer
    turns lr_scale into the group's lr. The model must be ours (model.bert.embeddings, model.bert.encoder.layer).
    """
    check_layer_lr_decay(layer_lr_decay)
    decay: dict[int, nn.Parameter] = {}
    no_decay: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for local_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if local_name == "bias" or isinstance(module, _NORM_TYPES):
                no_decay[id(p)] = p
            else:
                decay[id(p)] = p
    # A tensor reached both as a norm/bias and as something else (not the case in BERT) gets no decay.
    decay = {key: p for key, p in decay.items() if key not in no_decay}
    if layer_lr_decay == 1.0:
        return [
            {"params": list(decay.values()), "weight_decay": weight_decay},
            {"params": list(no_decay.values()), "weight_decay": 0.0},
        ]
    bert = getattr(model, "bert", None)
    if bert is None or not hasattr(bert, "embeddings") or not hasattr(getattr(bert, "encoder", None), "layer"):
        raise ValueError(f"layer_lr_decay needs a BERT model with bert.embeddings and bert.encoder.layer, "
                         f"not {type(model).__name__}")
    top = len(bert.encoder.layer) + 1
    depth = {id(p): 0 for p in bert.embeddings.parameters()}
    for i, layer in enumerate(bert.encoder.layer):
        depth.update({id(p): i + 1 for p in layer.parameters()})
    return [{"params": [p for key, p in params.items() if depth.get(key, top) == d], "weight_decay": wd,
             "lr_scale": layer_lr_decay ** (top - d)}
            for d in range(top + 1) for params, wd in ((decay, weight_decay), (no_decay, 0.0))]


def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per-tensor L2 norms, stacked; fp16/bf16 tensors are reduced in fp32 so large norms do not overflow."""
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))


def _clip_coef(grads: list[torch.Tensor], max_grad_norm: float | None) -> torch.Tensor | None:
    """max_grad_norm / global L2 norm of all gradients, at most 1 (a 0-d device tensor); None when not clipping."""
    if not max_grad_norm:
        return None
    global_norm = torch.linalg.vector_norm(_norms(grads))
    # global_norm == 0 gives inf here, which the clamp turns into 1
    return torch.clamp(max_grad_norm / global_norm, max=1.0)


def _lamb_apply(ps, gs, ms, vs, bias1, bias2, lr, hyper, clip_coef):
    """One LAMB step over a list of parameters, in place.

    bias1, bias2: the bias corrections 1 - beta^step, either Python floats (one step count for the whole list) or
    one 0-d tensor per parameter; lr: a float or a 0-d tensor. hyper: (beta1, beta2, eps, weight_decay, apply_trust).
    """
    beta1, beta2, eps, wd, apply_trust = hyper
    if clip_coef is not None:
        gs = torch._foreach_mul(gs, clip_coef)
    # m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
    torch._foreach_mul_(ms, beta1)
    torch._foreach_add_(ms, gs, alpha=1.0 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, gs, gs, value=1.0 - beta2)
    del gs

    # u = m_hat / (sqrt(v_hat) + eps) + wd * w, with m_hat = m / bias1, v_hat = v / bias2
    denom = torch._foreach_div(vs, bias2)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    update = torch._foreach_div(ms, bias1)
    torch._foreach_div_(update, denom)
    del denom
    if wd != 0.0:
        torch._foreach_add_(update, ps, alpha=wd)

    # w -= lr * trust * u, trust = ||w|| / ||u|| when both are non-zero, else 1 (not clamped)
    if apply_trust:
        w_norm, u_norm = _norms(ps), _norms(update)
        trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
        torch._foreach_mul_(update, list((trust * -lr).unbind()))
    else:
        torch._foreach_mul_(update, -lr)
    torch._foreach_add_(ps, update)


def _lamb_update(params, grads, exp_avgs, exp_avg_sqs, steps, lrs, hypers, max_grad_norm):
    """One LAMB step over all groups with every number on the device: the update that Lamb(compile=True) compiles.

    Every argument but the last is a list with one entry per group. Steps (one float64 0-d tensor per parameter)
    and learning rates are device tensors, so nothing waits on the host and one compiled graph serves every step
    as the lr schedule moves. hypers: per group (beta1, beta2, eps, weight_decay, apply_trust).
    """
    clip_coef = _clip_coef([g for gs in grads for g in gs], max_grad_norm)
    for ps, gs, ms, vs, ss, lr, hyper in zip(params, grads, exp_avgs, exp_avg_sqs, steps, lrs, hypers):
        beta1, beta2 = hyper[:2]
        torch._foreach_add_(ss, 1)
        bias1 = torch._foreach_pow(beta1, ss)
        torch._foreach_neg_(bias1)
        torch._foreach_add_(bias1, 1)
        bias2 = torch._foreach_pow(beta2, ss)
        torch._foreach_neg_(bias2)
        torch._foreach_add_(bias2, 1)
        _lamb_apply(ps, gs, ms, vs, bias1, bias2, lr, hyper, clip_coef)


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2019) with the semantics of apex FusedLAMB (adam_w_mode=True, bias_correction=True).

    Each step:
      1. all gradients of all groups are scaled by max_grad_norm / global_norm when their global L2 norm exceeds
         max_grad_norm (0 or None disables this); .grad itself is left untouched;
      2. Adam moments with bias correction, u = m_hat / (sqrt(v_hat) + eps) + weight_decay * w (decoupled decay);
      3. per tensor, trust = ||w|| / ||u|| when both norms are non-zero, else 1 (not clamped), and w -= lr * trust * u.
    As in apex, the trust ratio is applied only in groups with weight_decay != 0 (biases and LayerNorm weights take
    a plain Adam step); use_nvlamb=True applies it to every group.

    The step count is kept per parameter (state["step"], a float64 0-d tensor), so a parameter whose gradient is
    None at some steps (an unused head) gets the same bias correction as in torch.optim.Adam. Apex counts steps
    per group; the two agree whenever every parameter has a gradient at every step.

    compile=True runs the update through torch.compile, meant to fuse the eager update's few dozen foreach passes
    over the weights into a few kernels. Measured on an H200 with the large model (bench/bench_optimizer.py), it
    is not worth it yet: 94 s to compile, then 27.0 ms a step against the eager update's 16.6 ms, so
    run_pretraining.py keeps LAMB eager. The first step compiles; the step counts and the lr reach it as device
    tensors, so later steps reuse it whatever the schedule does.
    The eager update keeps them on the host instead, as torch's own optimizers do when not capturable: the bias
    corrections and the lr are then plain numbers, which keeps every division on its fused foreach path (a 0-d
    device tensor per parameter makes each one a launch per tensor; the trust ratio still is). State dicts move
    between the two.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.01,
                 max_grad_norm: float | None = 1.0, use_nvlamb: bool = False, compile: bool = False):
        if not lr >= 0.0:
            raise ValueError(f"Lamb: invalid lr {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Lamb: invalid eps {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Lamb: invalid betas {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Lamb: invalid weight_decay {weight_decay}")
        if max_grad_norm is not None and not max_grad_norm >= 0.0:
            raise ValueError(f"Lamb: invalid max_grad_norm {max_grad_norm}")
        # Clipping is global over all groups, so it is an optimiser setting rather than a per-group one.
        self.max_grad_norm = max_grad_norm
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      use_nvlamb=use_nvlamb))
        self._compiled = torch.compile(_lamb_update) if compile else None
        self._lr_tensors: dict[int, torch.Tensor] = {}  # compiled only, per group: its lr on its device

    def _params_with_grad(self, group) -> list[torch.Tensor]:
        params = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise ValueError("Lamb does not support sparse gradients (build embeddings with sparse=False)")
            params.append(p)
        return params

    def _state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        # compiled: the step lives beside the parameter; eager: on the host, where reading it costs no sync
        device = p.device if self._compiled is not None else torch.device("cpu")
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float64, device=device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        elif not torch.is_tensor(state["step"]) or state["step"].device != device:
            # an int from an older checkpoint, or a state dict saved by the other kind of update
            state["step"] = torch.as_tensor(state["step"], dtype=torch.float64).to(device)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        groups = []  # (group index, group, its parameters that have a gradient, their states)
        for i, group in enumerate(self.param_groups):
            ps = self._params_with_grad(group)
            if ps:
                groups.append((i, group, ps, [self._state(p) for p in ps]))
        if groups and self._compiled is not None:
            self._step_compiled(groups)
        elif groups:
            self._step_eager(groups)
        return loss

    @staticmethod
    def _hyper(group) -> tuple:
        # as in apex, the trust ratio is applied only where weight decay is (unless use_nvlamb)
        return (*group["betas"], group["eps"], group["weight_decay"],
                group["weight_decay"] != 0.0 or group["use_nvlamb"])

    def _step_compiled(self, groups):
        lrs = []
        for i, group, ps, _ in groups:
            lr = self._lr_tensors.get(i)
            if lr is None or lr.device != ps[0].device:
                lr = self._lr_tensors[i] = torch.zeros((), dtype=torch.float64, device=ps[0].device)
            lr.fill_(group["lr"])  # a device-side fill: no host sync, and no recompile
            lrs.append(lr)
        self._compiled([ps for _, _, ps, _ in groups],
                       [[p.grad for p in ps] for _, _, ps, _ in groups],
                       [[s["exp_avg"] for s in states] for *_, states in groups],
                       [[s["exp_avg_sq"] for s in states] for *_, states in groups],
                       [[s["step"] for s in states] for *_, states in groups],
                       lrs, [self._hyper(group) for _, group, _, _ in groups], self.max_grad_norm)

    def _step_eager(self, groups):
        clip_coef = _clip_coef([p.grad for _, _, ps, _ in groups for p in ps], self.max_grad_norm)
        for _, group, ps, states in groups:
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)  # host tensors: no launches, and .item() below does not wait
            # a parameter that skipped steps (a head without a gradient) has its own count: one call per count
            by_step: dict[float, list[int]] = {}
            for j, step in enumerate(steps):
                by_step.setdefault(step.item(), []).append(j)
            hyper = self._hyper(group)
            beta1, beta2 = hyper[:2]
            for step, idx in by_step.items():
                _lamb_apply([ps[j] for j in idx], [ps[j].grad for j in idx],
                            [states[j]["exp_avg"] for j in idx], [states[j]["exp_avg_sq"] for j in idx],
                            1.0 - beta1 ** step, 1.0 - beta2 ** step, group["lr"], hyper, clip_coef)


def build_optimizer(name: str, groups, lr: float, eps: float = 1e-6, betas=(0.9, 0.999),
                    max_grad_norm: float | None = 1.0, compile: bool = False) -> torch.optim.Optimizer:
    """"adam" -> torch AdamW (decoupled decay from the groups), "lamb" -> Lamb.

    max_grad_norm is used only by "lamb", which clips inside its step; with "adam" the training loop clips.
    compile is used only by "lamb" (Lamb(compile=True)); AdamW is fused on CUDA already.
    """
    # a group's lr_scale (layer-wise decay, param_groups) sets its own rate; the schedule then scales every group
    groups = [dict(g, lr=lr * g["lr_scale"]) if isinstance(g, dict) and "lr_scale" in g else g for g in groups]
    if name == "adam":
        params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
        if params and all(p.is_cuda for p in params):
            return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas, eps=eps, max_grad_norm=max_grad_norm, compile=compile)
    raise ValueError(f"unknown optimizer {name!r}: expected 'adam' or 'lamb'")


def _linear_factor(progress: float, warmup: float, degree: float) -> float:
    # Linear warm-up from 0, then linear decay reaching 0 at the last step (BERT's warmup_linear).
    if progress < warmup:
        return progress / warmup
    return max(0.0, (1.0 - progress) / (1.0 - warmup))


def _poly_factor(progress: float, warmup: float, degree: float) -> float:
    # NVIDIA's PolyWarmUpScheduler. 1 - progress is clamped at 0 so that stepping past the end gives lr 0
    # instead of a complex number (a negative base to the power 0.5).
    if progress < warmup:
        return progress / warmup
    return max(0.0, 1.0 - progress) ** degree


_SCHEDULES = {"linear": _linear_factor, "poly": _poly_factor}


def lr_factor(name: str, progress: float, warmup_proportion: float, degree: float = 0.5) -> float:
    """The schedule's lr multiplier at a progress in [0, 1] (step / total_steps, or elapsed / time budget)."""
    return _SCHEDULES[name](progress, warmup_proportion, degree)


def get_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup_proportion: float, total_steps: int,
                  degree: float = 0.5) -> torch.optim.lr_scheduler.LambdaLR:
    """LR schedule as a multiple of each group's initial lr, with progress = step / total_steps.

    "linear": progress / warmup during warm-up, then (1 - progress) / (1 - warmup) down to 0 at total_steps.
    "poly":   progress / warmup during warm-up, then (1 - progress) ** degree.
    Step it once per optimizer step; the lr at step 0 is 0 (warm-up starts from nothing), and it stays 0 past
    total_steps.
    """
    if name not in _SCHEDULES:
        raise ValueError(f"unknown scheduler {name!r}: expected one of {sorted(_SCHEDULES)}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or total_steps <= 0:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if not (isinstance(warmup_proportion, numbers.Real) and 0.0 <= warmup_proportion < 1.0):
        raise ValueError(f"warmup_proportion must be in [0, 1), got {warmup_proportion!r}")
    if name == "poly" and not (isinstance(degree, numbers.Real) and math.isfinite(degree) and degree > 0.0):
        # degree 0 would keep the lr at its peak after the last step (0 ** 0 == 1)
        raise ValueError(f"degree must be a positive number, got {degree!r}")
    factor = _SCHEDULES[name]
    warmup = float(warmup_proportion)

    def lr_lambda(step: int) -> float:
        return factor(step / total_steps, warmup, degree)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

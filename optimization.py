"""Optimisers and learning-rate schedules for BERT fine-tuning and pre-training.

    from optimization import param_groups, build_optimizer, get_scheduler
    optimizer = build_optimizer("lamb", param_groups(model, weight_decay=0.01), lr=6e-3, max_grad_norm=1.0)
    scheduler = get_scheduler("poly", optimizer, warmup_proportion=0.2843, total_steps=7038)  # step once per update

`Lamb` reproduces the update of NVIDIA apex's FusedLAMB (the optimiser of NVIDIA's BERT pre-training recipe)
in plain PyTorch (torch's fused AdamW kernel and foreach ops), so the recipe's hyperparameters carry over
without apex.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn
from torch.optim.adamw import adamw

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


def _adam(targets, grads, states, lr: float, weight_decay: float, betas, eps: float, grad_scale):
    """torch's fused AdamW kernel: targets *= 1 - lr * weight_decay, then targets -= lr * m_hat / (sqrt(v_hat) + eps);
    it also advances each parameter's step and moments in `states` and divides the gradients, in place, by
    grad_scale."""
    adamw(targets, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
          [s["step"] for s in states], fused=True, grad_scale=grad_scale, amsgrad=False, beta1=betas[0],
          beta2=betas[1], lr=lr, weight_decay=weight_decay, eps=eps, maximize=False)


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2019) with the semantics of apex FusedLAMB (adam_w_mode=True, bias_correction=True).

    Each step:
      1. all gradients of all groups are scaled by max_grad_norm / global_norm when their global L2 norm exceeds
         max_grad_norm (0 or None disables this); like clip_grad_norm_, this scales .grad in place;
      2. Adam moments with bias correction, u = m_hat / (sqrt(v_hat) + eps) + weight_decay * w (decoupled decay);
      3. per tensor, trust = ||w|| / ||u|| when both norms are non-zero, else 1 (not clamped), and w -= lr * trust * u.
    As in apex, the trust ratio is applied only in groups with weight_decay != 0 (biases and LayerNorm weights take
    a plain Adam step); use_nvlamb=True applies it to every group.

    Step 2 is torch's fused AdamW kernel, run on a scratch copy of the weights so that it leaves -u there: one pass
    over w, g, m and v, where the same update in foreach ops made about 30 passes over parameter-sized tensors
    (bench/bench_optimizer.py). The scratch copies stay allocated between steps (one more copy of the decayed
    weights, outside the state dict). Clipping rides along as the kernel's grad_scale, a float32 device tensor, so
    nothing waits on the host (float64 parameters are clipped by a float32 factor: about 1e-8 relative). The step count is kept per parameter (state["step"], a float32 0-d tensor
    beside the parameter, as in torch's fused AdamW), so a parameter whose gradient is None at some steps (an
    unused head) gets the same bias correction as in torch.optim.Adam. Apex counts steps per group; the two agree
    whenever every parameter has a gradient at every step.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.01,
                 max_grad_norm: float | None = 1.0, use_nvlamb: bool = False):
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
        self._scratch: dict[torch.Tensor, torch.Tensor] = {}  # per parameter: where the kernel writes -u

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
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        elif not torch.is_tensor(state["step"]) or state["step"].device != p.device \
                or state["step"].dtype != torch.float32:
            # an int or a float64 host tensor, as earlier versions of this class saved it
            state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(p.device)
        return state

    def _scratch_for(self, p: torch.Tensor) -> torch.Tensor:
        t = self._scratch.get(p)
        if t is None or t.shape != p.shape or t.dtype != p.dtype or t.device != p.device:  # new, or p was moved
            t = self._scratch[p] = torch.empty_like(p)
        return t

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        groups = [(group, ps) for group in self.param_groups if (ps := self._params_with_grad(group))]
        grad_scale = None  # the kernel divides by it: global_norm / max_grad_norm, at least 1
        if self.max_grad_norm and groups:
            global_norm = torch.linalg.vector_norm(_norms([p.grad for _, ps in groups for p in ps]))
            # a zero norm gives 0 here, which the clamp turns into 1
            grad_scale = torch.clamp(global_norm / self.max_grad_norm, min=1.0).float()
        for group, ps in groups:
            states = [self._state(p) for p in ps]
            grads = [p.grad for p in ps]
            wd = group["weight_decay"]
            if wd == 0.0 and not group["use_nvlamb"]:  # as in apex: no decay, no trust ratio, a plain Adam step
                _adam(ps, grads, states, group["lr"], 0.0, group["betas"], group["eps"], grad_scale)
                continue
            neg_u = [self._scratch_for(p) for p in ps]
            torch._foreach_copy_(neg_u, ps)
            # lr 1 and decay 1 + wd: the kernel first multiplies the copy by 1 - (1 + wd), which leaves -wd * w,
            # then subtracts m_hat / (sqrt(v_hat) + eps) from it: -u, with w itself untouched
            _adam(neg_u, grads, states, 1.0, 1.0 + wd, group["betas"], group["eps"], grad_scale)
            w_norm, u_norm = _norms(ps), _norms(neg_u)
            trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
            # w += lr * trust * (-u): one small launch per tensor for its own factor, and no wait on the host
            torch._foreach_addcmul_(ps, neg_u, list((trust * group["lr"]).unbind()))
        return loss


def build_optimizer(name: str, groups, lr: float, eps: float = 1e-6, betas=(0.9, 0.999),
                    max_grad_norm: float | None = 1.0) -> torch.optim.Optimizer:
    """"adam" -> torch AdamW (decoupled decay from the groups), "lamb" -> Lamb.

    max_grad_norm is used only by "lamb", which clips inside its step; with "adam" the training loop clips.
    """
    # a group's lr_scale (layer-wise decay, param_groups) sets its own rate; the schedule then scales every group
    groups = [dict(g, lr=lr * g["lr_scale"]) if isinstance(g, dict) and "lr_scale" in g else g for g in groups]
    if name == "adam":
        params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
        if params and all(p.is_cuda for p in params):
            return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas, eps=eps, max_grad_norm=max_grad_norm)
    raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")


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
SCHEDULES = tuple(_SCHEDULES)  # the --scheduler choices: a schedule added to _SCHEDULES is a choice everywhere
OPTIMIZERS = ("adam", "lamb")  # build_optimizer's names


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

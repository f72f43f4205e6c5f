"""Optimizer step time: our LAMB against torch's fused AdamW on the same parameters, alone and after
clip_grad_norm_.

    python bench/bench_optimizer.py                                        # CPU: small config
    python bench/bench_optimizer.py --device cuda --configs small large_v1 --json bench/results/optimizer.json
    python bench/bench_optimizer.py --configs tiny --rounds 3              # a quick look

Each optimizer owns its copy of a config's BertForPreTraining parameters (fp32, as in mixed-precision training),
with the same random gradients; a step is the update alone, no forward or backward. The contenders take turns in
rounds of --steps steps, and each one's time per step is the median over rounds, so load changes on a shared
machine hit all alike. Three contenders: LAMB (clipping by the global gradient norm inside its step, as
run_pretraining.py --optimizer lamb runs it), fused AdamW alone, and clip_grad_norm_ + fused AdamW (what
run_pretraining.py --optimizer adam does each step). LAMB needs more passes over the weights than Adam (the global
gradient norm, then per-tensor weight and update norms); the target for the large model is at most 1.2x fused
AdamW's step time, and the row gives the ratio to both AdamW contenders.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import torch

# first: importing bench_common puts the repository root on sys.path for the imports below it
from bench_common import ROOT, add_run_args, keep_rows, runtime, setup_device, write_json
from models.modeling import BertConfig, BertForPreTraining  # noqa: E402
from optimization import Lamb, param_groups  # noqa: E402


class ClippedAdamW:
    """clip_grad_norm_ then a fused AdamW step: the Adam path's update in run_pretraining.py."""

    def __init__(self, groups, max_grad_norm):
        self.opt = torch.optim.AdamW(groups, lr=1e-4, fused=True)
        self.param_groups, self.max_grad_norm = self.opt.param_groups, max_grad_norm

    def step(self):
        torch.nn.utils.clip_grad_norm_([p for g in self.param_groups for p in g["params"]], self.max_grad_norm)
        self.opt.step()


def make_optimizers(config, device, max_grad_norm=1.0):
    """{name: optimizer}, each over its own copy of one randomly initialised model with the same gradients.

    The gradients' global norm is above max_grad_norm, so both clipping contenders scale them at their first step
    (in place, as clip_grad_norm_ does); after that the norm sits at max_grad_norm and stays there."""
    torch.manual_seed(0)
    model = BertForPreTraining(config).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, device=device, generator=g) * 1e-3
    kinds = {"lamb": lambda groups: Lamb(groups, lr=1e-4, max_grad_norm=max_grad_norm),
             "adamw_clipped": lambda groups: ClippedAdamW(groups, max_grad_norm)}
    opts = {}
    for name, make in kinds.items():
        copy = BertForPreTraining(config).to(device)
        copy.load_state_dict(model.state_dict())
        for p, q in zip(model.parameters(), copy.parameters()):
            q.grad = p.grad.clone()
        opts[name] = make(param_groups(copy, 0.01))
    opts["adamw_fused"] = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, fused=True)
    return opts


def time_steps(opts, rounds, steps, sync):
    """Median ms per step over rounds for each optimizer, after two untimed steps (lazy state settles)."""
    for opt in opts.values():
        opt.step()
        opt.step()
    sync()
    per_round = {name: [] for name in opts}
    for _ in range(rounds):
        for name, opt in opts.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            sync()
            per_round[name].append((time.perf_counter() - t0) / steps * 1e3)
    return {name: statistics.median(v) for name, v in per_round.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p)
    p.add_argument("--configs", nargs="+", default=None, help="names in models/configs (default: CPU small, GPU "
                   "small large_v1)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=None, help="steps per round (default: 10 on GPU, 2 on CPU)")
    args = p.parse_args(argv)

    device, gpu = setup_device(args)
    card, sync, _ = runtime(device, "no")
    steps = args.steps or (10 if gpu else 2)
    print(f"{card} | torch {torch.__version__}", flush=True)
    rows = []
    for name in args.configs or (["small", "large_v1"] if gpu else ["small"]):
        config = BertConfig.from_json_file(os.path.join(ROOT, "models", "configs", f"{name}.json"))
        opts = make_optimizers(config, device)
        n_params = sum(p.numel() for g in opts["adamw_fused"].param_groups for p in g["params"])
        ms = time_steps(opts, args.rounds, steps, sync)
        row = {"config": name, "kind": "optimizer_step", "params": n_params, "card": card,
               "date": datetime.date.today().isoformat(), "torch": torch.__version__,
               "adamw_fused_ms": round(ms["adamw_fused"], 3), "adamw_clipped_ms": round(ms["adamw_clipped"], 3),
               "lamb_ms": round(ms["lamb"], 3), "lamb_ratio": round(ms["lamb"] / ms["adamw_fused"], 3),
               "lamb_clipped_ratio": round(ms["lamb"] / ms["adamw_clipped"], 3)}
        rows.append(row)
        print(f"{name} ({n_params / 1e6:.1f}M params): fused AdamW {ms['adamw_fused']:.2f} ms | clip_grad_norm_ + "
              f"fused AdamW {ms['adamw_clipped']:.2f} ms | LAMB {ms['lamb']:.2f} ms ({row['lamb_ratio']:.2f}x, "
              f"{row['lamb_clipped_ratio']:.2f}x)", flush=True)
        del opts
        keep_rows(rows, args, gpu)
    if args.json:
        write_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()

"""Optimizer step time: our LAMB, eager and compiled, against torch's fused AdamW on the same parameters.

    python bench/bench_optimizer.py                                        # CPU: small config
    python bench/bench_optimizer.py --device cuda --configs small large_v1 --json bench/results/optimizer.json
    python bench/bench_optimizer.py --configs tiny --no_compile --rounds 3 # a quick look

Each optimizer owns its copy of a config's BertForPreTraining parameters (fp32, as in mixed-precision training),
with fixed random gradients; a step is optimizer.step() alone, no forward or backward. The contenders take turns in
rounds of --steps steps, and each one's time per step is the median over rounds, so load changes on a shared
machine hit all alike. Eager LAMB is timed against fused AdamW first, then the compiled LAMB against fused AdamW again
(its first step compiles; that time is reported apart and not timed). Each ratio comes from one interleaved pair.
LAMB needs more passes over the weights than Adam (global gradient norm, then per-tensor weight and update norms);
the target for the large model is at most 1.2x fused AdamW's step time.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import torch

# first: importing bench_pretraining puts the repository root on sys.path for the imports below it
from bench_pretraining import ROOT, add_run_args, keep_rows, runtime, setup_device, write_json
from models.modeling import BertConfig, BertForPreTraining  # noqa: E402
from optimization import Lamb, param_groups  # noqa: E402


def make_optimizers(config, device, compile_lamb=True):
    """{name: optimizer}, each over its own copy of one randomly initialised model with the same gradients."""
    torch.manual_seed(0)
    model = BertForPreTraining(config).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, device=device, generator=g) * 1e-3
    kinds = {"lamb": dict(), "lamb_compiled": dict(compile=True)} if compile_lamb else {"lamb": dict()}
    opts = {}
    for name, kw in kinds.items():
        copy = BertForPreTraining(config).to(device)
        copy.load_state_dict(model.state_dict())
        for p, q in zip(model.parameters(), copy.parameters()):
            q.grad = p.grad.clone()
        opts[name] = Lamb(param_groups(copy, 0.01), lr=1e-4, max_grad_norm=1.0, **kw)
    opts["adamw_fused"] = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, fused=True)
    return opts


def time_steps(opts, rounds, steps, sync):
    """(median ms per step over rounds, first-step seconds) for each optimizer; the first step also compiles."""
    first = {}
    for name, opt in opts.items():
        t0 = time.perf_counter()
        opt.step()
        sync()
        first[name] = time.perf_counter() - t0
        opt.step()  # a second untimed step: lazy state and caches settle
    sync()
    per_round = {name: [] for name in opts}
    for _ in range(rounds):
        for name, opt in opts.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            sync()
            per_round[name].append((time.perf_counter() - t0) / steps * 1e3)
    return {name: statistics.median(v) for name, v in per_round.items()}, first


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p)
    p.add_argument("--configs", nargs="+", default=None, help="names in models/configs (default: CPU small, GPU "
                   "small large_v1)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=None, help="steps per round (default: 10 on GPU, 2 on CPU)")
    p.add_argument("--no_compile", action="store_true", help="leave out the compiled LAMB (compiling takes a while)")
    args = p.parse_args(argv)

    device, gpu = setup_device(args)
    card, sync, _ = runtime(device, "no")
    steps = args.steps or (10 if gpu else 2)
    print(f"{card} | torch {torch.__version__}", flush=True)
    rows = []
    for name in args.configs or (["small", "large_v1"] if gpu else ["small"]):
        config = BertConfig.from_json_file(os.path.join(ROOT, "models", "configs", f"{name}.json"))
        opts = make_optimizers(config, device, compile_lamb=not args.no_compile)
        n_params = sum(p.numel() for g in opts["adamw_fused"].param_groups for p in g["params"])
        row = {"config": name, "kind": "optimizer_step", "params": n_params, "card": card,
               "date": datetime.date.today().isoformat(), "torch": torch.__version__}
        # eager first, so that a time limit reached while compiling still leaves the eager row
        ms, _ = time_steps({k: opts[k] for k in ("lamb", "adamw_fused")}, args.rounds, steps, sync)
        row.update(adamw_fused_ms=round(ms["adamw_fused"], 3), lamb_ms=round(ms["lamb"], 3),
                   lamb_ratio=round(ms["lamb"] / ms["adamw_fused"], 3))
        rows.append(row)
        print(f"{name} ({n_params / 1e6:.1f}M params): fused AdamW {ms['adamw_fused']:.2f} ms | LAMB "
              f"{ms['lamb']:.2f} ms ({row['lamb_ratio']:.2f}x)", flush=True)
        keep_rows(rows, args, gpu)
        if "lamb_compiled" in opts:
            ms, first = time_steps({k: opts[k] for k in ("lamb_compiled", "adamw_fused")}, args.rounds, steps, sync)
            row.update(lamb_compiled_ms=round(ms["lamb_compiled"], 3), adamw_fused_ms_2=round(ms["adamw_fused"], 3),
                       lamb_compiled_ratio=round(ms["lamb_compiled"] / ms["adamw_fused"], 3),
                       lamb_compile_s=round(first["lamb_compiled"], 1))
            print(f"{name}: fused AdamW {ms['adamw_fused']:.2f} ms | LAMB compiled {ms['lamb_compiled']:.2f} ms "
                  f"({row['lamb_compiled_ratio']:.2f}x; its first step, compiling, took "
                  f"{first['lamb_compiled']:.0f} s)", flush=True)
        del opts
        keep_rows(rows, args, gpu)
    if args.json:
        write_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()

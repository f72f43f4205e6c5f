"""The measuring kit the benchmarks share: device and run flags, our model against Hugging Face's on the same
weights (weight copy, loss check), timed steps (interleaved, pipelined, profiled), model FLOPs, a matmul peak
measured in the same run and MFU against it, and result rows written as JSON after every row.

    from bench_common import add_run_args, setup_device, runtime, check_losses, make_step, time_interleaved
    # bench_pretraining.py, bench_finetune.py and bench_optimizer.py are built on these

A module, not a script: run those three.
"""
from __future__ import annotations

if __name__ == "__main__":
    raise SystemExit("bench/bench_common.py is the benchmarks' shared module, not a script: run python "
                     "bench/bench_pretraining.py, bench_finetune.py or bench_optimizer.py --help")

import argparse
import contextlib
import itertools
import json
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models.modeling import to_hf_state_dict  # noqa: E402


def copy_weights_to_hf(ours, hf):
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours.state_dict()), strict=False)
    # the decoder weight/bias are tied to the embeddings / prediction bias in HF; position_ids is a buffer
    left = [k for k in missing if not k.startswith("cls.predictions.decoder") and "position_ids" not in k]
    if left or unexpected:
        raise SystemExit(f"weight copy to Hugging Face failed: missing {left}, unexpected {unexpected}")


@contextlib.contextmanager
def full_fp32():
    """fp32 matmuls and convolutions in full fp32 (TF32 off, as setup_device turns it on for a GPU) in the block."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def check_losses(ours, hf, batch, autocast, amp, ours_fn, hf_fn):
    """Our loss and Hugging Face's on the same weights and batch, dropout off: equal, or the benchmark stops.

    Always in full fp32 (TF32 off) to 1e-4 of the loss, then with amp "bf16" also under the timed steps' autocast
    to 2e-2. The bf16 tolerance alone is no check of the model: at initialisation the loss sits near ln(vocab)
    whatever the head does, and scoring the hidden state next to each masked token, or leaving the MLM transform
    out, moves it by 1e-3 to 3e-3 of its value (bf16 rounding differences seen on a GPU: 1e-5 to 5e-4)."""
    ours.eval(), hf.eval()
    checks = [("fp32", contextlib.nullcontext, full_fp32, 1e-4)]
    if amp == "bf16":
        checks.append(("bf16", autocast, contextlib.nullcontext, 2e-2))
    try:
        for name, precision, matmuls, tol in checks:
            with torch.no_grad(), matmuls(), precision():
                a, b = float(ours_fn(ours, batch)), float(hf_fn(hf, batch))
            ok = abs(a - b) <= tol * max(1.0, abs(b))
            print(f"  loss check ({name}): ours {a:.5f}  hf {b:.5f}  |diff| {abs(a - b):.2e}  "
                  f"{'ok' if ok else 'MISMATCH'}", flush=True)
            if not ok:
                raise SystemExit(f"our loss differs from Hugging Face's on the same weights and batch ({name})")
    finally:
        ours.train(), hf.train()


def make_step(model, loss_fn, batch, autocast, fused, graphs=False):
    """One training step per call; `batch` is one batch used every time, or a list of batches taken in turn.
    graphs: the model was compiled with CUDA graphs (modes reduce-overhead, max-autotune), so each step starts a
    new iteration."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01,
                            **({"fused": True} if fused else {"foreach": True}))
    batches = itertools.cycle(batch if isinstance(batch, list) else [batch])

    def step():
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model, next(batches))
        loss.backward()
        opt.step()
    return step


def time_interleaved(steps: dict, warmup: int, n: int, sync, stat=statistics.median):
    """Steps per second of each step function from the median of n timed steps: (wall clock, process CPU time).

    The contenders alternate step by step, so a load change on a shared machine hits each alike, and the median
    drops the steps that a burst of someone else's work happened to land on. CPU time (all threads of this process)
    does not count time spent waiting for a core, so on a busy machine it is the steadier measure of work.
    Steps over batches of different sizes need stat=statistics.fmean: their total, not a typical one, is the cost.
    """
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    sync()
    wall, cpu = {name: [] for name in steps}, {name: [] for name in steps}
    for _ in range(n):
        for name, fn in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return ({name: 1.0 / stat(t) for name, t in wall.items()}, {name: 1.0 / stat(t) for name, t in cpu.items()})


def time_pipelined(steps: dict, n: int, sync, rounds: int = 3) -> dict:
    """Steps per second of each step function run n times back to back with one sync at the end (the host queues
    the next step while the device runs this one, as in a training loop); the median over `rounds` such runs,
    the contenders taking turns. Warm-up is the caller's (time_interleaved's steps before it)."""
    per_step = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            sync()
            per_step[name].append((time.perf_counter() - t0) / n)
    return {name: 1.0 / statistics.median(t) for name, t in per_step.items()}


def pipelined_fields(steps: dict, n: int, sync, batch: int) -> dict:
    """A result row's pipelined rates (sequences/s of `batch`-row steps, time_pipelined), ours / HF and, when both
    were compiled, ours compiled / HF compiled."""
    piped = {name: round(rate * batch, 2) for name, rate in time_pipelined(steps, n, sync).items()}
    row = {"pipelined_seq_per_s": piped, "pipelined_ratio": round(piped["ours"] / piped["hf"], 3)}
    if "ours_compiled" in piped and "hf_compiled" in piped:
        row["pipelined_compiled_ratio"] = round(piped["ours_compiled"] / piped["hf_compiled"], 3)
    return row


def print_pipelined(row: dict, per: str):
    print(f"  pipelined (one sync per {per}) seq/s: " + "  ".join(
        f"{k} {v:.1f}" for k, v in row["pipelined_seq_per_s"].items()) + f"  ratio {row['pipelined_ratio']:.2f}x"
          + (f"  compiled {row['pipelined_compiled_ratio']:.2f}x" if "pipelined_compiled_ratio" in row else ""),
          flush=True)


def profile_steps(steps: dict, n: int, sync, gpu: bool, top: int = 12) -> dict:
    """n more steps of each contender under torch.profiler: the top ops by self time on the device (the CPU when
    there is no GPU) and, per step, the device's busy time against the wall time. Busy well below wall means the
    GPU waits for the host (launch-bound): fusing or compiling helps there, faster kernels do not."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    key = "self_device_time_total" if gpu else "self_cpu_time_total"
    out = {}
    for name, fn in steps.items():
        try:
            with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])) as prof:
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                sync()
                wall_ms = (time.perf_counter() - t0) / n * 1e3  # profiled: slower than the timed steps
            events = prof.key_averages()
        except Exception as e:  # e.g. replaying CUDA graphs recorded before the profiler started: the timings stand
            out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            print(f"  profile {name}: failed ({out[name]['error']})", flush=True)
            continue
        # on a GPU the op that launched a kernel also carries the kernel's time, and annotations span many: only
        # the kernel rows themselves add up to the device's busy time
        busy_ms = sum(getattr(e, key) for e in events if not gpu or (
            e.device_type == DeviceType.CUDA and not e.is_user_annotation)) / n / 1e3
        out[name] = {"wall_ms_per_step": round(wall_ms, 2), "busy_ms_per_step": round(busy_ms, 2)}
        print(f"  profile {name}: {busy_ms:.2f} ms busy ({'device' if gpu else 'CPU'}) per {wall_ms:.2f} ms step "
              f"(profiled); top ops by self time:", flush=True)
        print(events.table(sort_by=key, row_limit=top, max_name_column_width=70), flush=True)
    return out


def encoder_flops(config, seq_len: int) -> int:
    """Forward matmul FLOPs (2 per multiply-add) of the encoder on one sequence of seq_len positions.

    Attention is charged the full T x T scores and weighted sum, padded keys included, as the SDPA kernels of both
    models compute them. Embedding lookups, LayerNorm, GELU, softmax and the optimizer are not matmuls: left out,
    as in the usual MFU definition.
    """
    H, inner, T = config.hidden_size, config.intermediate_size, seq_len
    per_layer = 2 * T * H * 4 * H + 2 * 2 * T * H * inner + 2 * 2 * T * T * H  # QKV+output, FFN in+out, QK^T and PV
    return config.num_hidden_layers * per_layer


def forward_flops(config, seq_len: int, head: str = "pretraining", n_masked: float = 0.0, num_labels: int = 2):
    """Forward matmul FLOPs per sequence, encoder + head; a training step must do 3x this.

    head "pretraining": MLM transform + tied vocabulary projection at n_masked positions (mean per sequence: the
    positions that are scored), pooler and SOP; "qa": start/end logits at every position; "cls": pooler and classifier.
    """
    H = config.hidden_size
    heads = {"pretraining": n_masked * 2 * H * (H + config.vocab_size) + 2 * H * H + 2 * H * 2,
             "qa": 2 * seq_len * H * 2, "cls": 2 * H * H + 2 * H * num_labels}
    return encoder_flops(config, seq_len) + heads[head]


def measure_peak_tflops(device, dtype, n=None, reps=None):
    """The best rate of a square matmul in dtype on this device, in TFLOP/s: the practical peak MFU is taken against.

    Measured in the same run rather than read from a data sheet, so clocks, power limits and the library's best
    kernel are what the models also get.
    """
    gpu = device.type == "cuda"
    n, reps = n or (8192 if gpu else 1024), reps or (20 if gpu else 3)
    sync = (lambda: torch.cuda.synchronize(device)) if gpu else (lambda: None)
    g = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=g) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        sync()
        best = min(best, (time.perf_counter() - t0) / reps)
    del a, b, out
    return 2 * n ** 3 / best / 1e12


def mfu_fields(rate: dict, flops_per_seq: float, peak_tflops: float) -> dict:
    """{name_mfu: fraction of peak} for each seq/s rate in `rate` (ours, hf, ..._compiled)."""
    return {f"{name}_mfu": round(r * flops_per_seq / (peak_tflops * 1e12), 4) for name, r in rate.items()}


def runtime(device, amp):
    """(card name, sync, autocast factory) for a device and a precision ("bf16" or "no")."""
    gpu = device.type == "cuda"
    card = torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)"
    sync = (lambda: torch.cuda.synchronize(device)) if gpu else (lambda: None)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")
    return card, sync, autocast


def write_json(rows, path, announce=True):
    """Rewritten after every row, so a run stopped by a time limit still leaves the rows it finished."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)
    if announce:
        print(f"wrote {path}")


def add_run_args(p: argparse.ArgumentParser):
    """--device, --threads and --json: the same in every benchmark here (--results_json: bench/cram.py's and
    bench_corpus_mix.py's spelling)."""
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", "--results_json", dest="json", default=None, help="write the result rows to this file")


def setup_device(args) -> tuple[torch.device, bool]:
    """(device, is it a GPU); TF32 matmuls on a GPU, as the Hugging Face figures were measured."""
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise SystemExit(f"error: --device {args.device}: {str(e).splitlines()[0]}") from None
    gpu = device.type == "cuda"
    if gpu and not torch.cuda.is_available():  # torch's own error is a traceback from deep inside the first copy
        raise SystemExit(f"error: --device {args.device}: no CUDA device here (torch {torch.__version__})")
    if args.threads:
        torch.set_num_threads(args.threads)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device, gpu


def keep_rows(rows, args, gpu):
    """After each row: rewrite the JSON (a run stopped by a time limit keeps what it finished) and free cached GPU
    memory for the next row's models."""
    if args.json:
        write_json(rows, args.json, announce=False)
    if gpu:
        torch.cuda.empty_cache()

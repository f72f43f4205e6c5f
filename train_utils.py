"""Leaf helpers shared by the run_*/eval_* scripts: argument groups and their checks, device/AMP/distributed setup,
seeding and RNG state, stop signals (the model flags and what they resolve to: model_args.py; a run's files, logs,
plots and checkpoint directories: fileio.py; batching: batching.py).

Everything takes explicit arguments; nothing here reads global flags or owns a training loop.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import signal
import sys
from dataclasses import dataclass

import numpy as np
import torch

from fileio import atomic_write, check_makeable
from optimization import OPTIMIZERS, SCHEDULES


def fail(msg: str, code: int = 2):
    """One-line error for the user, no traceback."""
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def warn(msg: str):
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# argument groups: the same flag names in every script

def parse_bool(value: str) -> bool:
    """absl's spellings of a boolean flag value, so google-research/bert command lines (--do_train=True,
    --do_lower_case=False) work."""
    v = str(value).strip().lower()
    if v in ("true", "t", "1", "yes", "y"):
        return True
    if v in ("false", "f", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def add_bool_flag(group, name: str, help: str):
    """--name alone means true; --name=false / --name true take a value, as absl flags do. Default None: not given."""
    return group.add_argument(name, nargs="?", const=True, default=None, type=parse_bool, metavar="BOOL", help=help)


def add_optim_args(parser: argparse.ArgumentParser, learning_rate: float = 5e-5):
    g = parser.add_argument_group("optimisation")
    g.add_argument("--learning_rate", type=float, default=learning_rate)
    g.add_argument("--weight_decay", type=float, default=0.01)
    g.add_argument("--adam_epsilon", type=float, default=1e-6)
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="clip gradients to this global L2 norm (0: no "
                                                                      "clipping, as in Hugging Face's Trainer)")
    g.add_argument("--warmup_proportion", type=float, default=0.1)
    g.add_argument("--gradient_accumulation_steps", type=int, default=1)
    return g


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """A seed grid's seeds, from ranges and lists like 1-10 or 1,3,5 (ValueError naming `flag` otherwise)."""
    seeds = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m[2] and int(m[2]) < int(m[1])):
            raise ValueError(f"{flag} {text!r}: expected ranges and lists like 1-10 or 1,3,5")
        seeds += range(int(m[1]), int(m[2] or m[1]) + 1)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{flag} {text!r}: a seed appears twice")
    return seeds


def check_training_args(args):
    """ValueError naming the first flag of the shared groups (add_optim_args, add_runtime_args, add_compile_arg and
    --num_train_epochs where a script has it) whose value would crash a training run only after it has started, or
    train silently wrong (a negative --max_grad_norm flips the gradients)."""
    workers, epochs = getattr(args, "num_workers", None), getattr(args, "num_train_epochs", None)
    # `not lo <= x < hi` also refuses NaN
    for flag, ok, need in (("learning_rate", 0 <= args.learning_rate < math.inf, ">= 0"),  # 0: weights stay put
                           ("warmup_proportion", 0 <= args.warmup_proportion < 1, "in [0, 1)"),
                           ("adam_epsilon", 0 < args.adam_epsilon < math.inf, "a positive number"),
                           ("weight_decay", 0 <= args.weight_decay < math.inf, ">= 0"),
                           ("max_grad_norm", 0 <= args.max_grad_norm <= math.inf, ">= 0 (0: no clipping)"),
                           ("gradient_accumulation_steps", args.gradient_accumulation_steps >= 1, ">= 1"),
                           ("num_workers", workers is None or workers >= 0, ">= 0"),
                           # numpy's generators (batching, masking) take no negative seed
                           ("seed", getattr(args, "seed", 0) >= 0, ">= 0"),
                           ("num_train_epochs", epochs is None or 0 < epochs < math.inf, "a positive number")):
        if not ok:
            raise ValueError(f"--{flag} {getattr(args, flag)}: must be {need}")
    check_compile_args(args)


def check_output_dir_path(path: str, flag: str = "--output_dir"):
    """ValueError when `path` exists and is not a directory, or cannot be made (a file or an unwritable folder on
    its way): checked before any work, not at the first write, and without making anything."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path}: exists and is not a directory")
    check_makeable(path, flag)


def check_inputs_outside(args, leftovers: list[str], out_dir: str):
    """ValueError when --checkpoint, --config_file or --vocab_file lies in one of `leftovers`: what an unfinished
    run left in out_dir, which this run replaces (e.g. its own epoch-1 to continue from), so never an input."""
    left = [os.path.realpath(p) for p in leftovers]
    for flag in ("checkpoint", "config_file", "vocab_file"):
        path = getattr(args, flag)
        real = os.path.realpath(path) if path else None
        if real and any(real == p or real.startswith(p + os.sep) for p in left):
            raise ValueError(f"--{flag} {path} is part of the unfinished run in {out_dir}, which this run would "
                             "replace; copy it elsewhere or choose another --output_dir")


def add_optimizer_choice_args(group):
    """--optimizer and --scheduler: optimization.OPTIMIZERS and SCHEDULES (Adam + linear: BERT's and the release's)."""
    group.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                       help="adam: AdamW (decoupled weight decay); lamb: LAMB (layer-wise trust ratio, large batches)")
    group.add_argument("--scheduler", choices=SCHEDULES, default="linear",
                       help="after warm-up, linear: decay to 0 at the last step; poly: (1 - progress) ** 0.5")
    return group


def add_layer_lr_decay_arg(group):
    """Fine-tuning only: pretraining trains every layer at one rate."""
    group.add_argument("--layer_lr_decay", type=float, default=1.0, metavar="D",
                       help="layer-wise lr decay: encoder layer i (of L) trains at lr * D ** (L - i), the embeddings "
                            "at lr * D ** (L + 1), the pooler and head at lr (default 1: one rate for all)")


def add_runtime_args(parser: argparse.ArgumentParser, num_workers: int | None = 2,
                     num_workers_help: str = "DataLoader worker processes"):
    g = parser.add_argument_group("runtime")
    g.add_argument("--output_dir", default=None)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--amp", choices=["no", "bf16", "fp16"], default="no",
                   help="autocast precision (fp16 uses a gradient scaler)")
    g.add_argument("--fp16", dest="amp", action="store_const", const="fp16",
                   help="alias of --amp fp16 (the original scripts' flag)")
    g.add_argument("--no_cuda", action="store_true", help="run on the CPU even when a GPU is present")
    g.add_argument("--local_rank", "--local-rank", type=int, default=-1,  # the hyphen: torch.distributed.launch
                   help="ignored: torchrun passes LOCAL_RANK in the environment")
    g.add_argument("--num_workers", type=int, default=num_workers, help=num_workers_help)
    return g


def add_compile_arg(group):
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the model for training: the first steps compile (inductor caches the "
                            "result on disk for the next run); a new batch width compiles once more, then dynamic "
                            "shapes serve all; evaluation stays eager")
    group.add_argument("--compile_mode", choices=["default", "reduce-overhead"], default="default",
                       help="with --compile: reduce-overhead replays the compiled forward and backward as CUDA "
                            "graphs, one launch instead of hundreds (for a step bound by its launches: a small "
                            "model, or any on small batches); a graph is recorded for each batch shape, so feed it "
                            "few (fixed-length pretraining batches; --pad_to_multiple_of when fine-tuning)")


def add_apex_args(group):
    """The release's apex flags, accepted so its command lines still run (warn_apex_args says they do nothing):
    native AMP has no opt levels and scales the fp16 loss dynamically."""
    group.add_argument("--fp16_opt_level", default=None, help="ignored (apex); --fp16 uses native AMP")
    group.add_argument("--loss_scale", type=float, default=None,
                       help="ignored (apex); --fp16 scales the loss dynamically")


def warn_apex_args(args, rt):
    if rt.is_main and (args.fp16_opt_level is not None or args.loss_scale is not None):
        warn("--fp16_opt_level and --loss_scale are apex options and are ignored: mixed precision is native AMP "
             "(--amp fp16 scales the loss dynamically)")


def check_compile_args(args):
    """ValueError for a --compile_mode that cannot apply."""
    if args.compile_mode != "default" and not args.compile:
        raise ValueError(f"--compile_mode {args.compile_mode} applies to a compiled model: add --compile")
    if args.compile_mode == "reduce-overhead" and args.gradient_accumulation_steps > 1:
        # a replay reuses its outputs' memory, gradients included: accumulating over replays is not checked yet
        raise ValueError("--compile_mode reduce-overhead takes one micro-batch per step: drop "
                         "--gradient_accumulation_steps or use --compile_mode default")


def compile_for_training(model, args):
    """(what to train, whether its steps replay CUDA graphs: then torch.compiler.cudagraph_mark_step_begin() before
    each forward, so that a replay may reuse the memory of the last one's outputs). On the CPU inductor makes no
    graphs and the marks change nothing."""
    if not args.compile:
        return model, False
    mode = None if args.compile_mode == "default" else args.compile_mode
    return torch.compile(model, mode=mode), args.compile_mode == "reduce-overhead"


# ----------------------------------------------------------------------------------------------------------------
# device, precision, distributed

@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp: str = "no"
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.amp == "no":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)


def setup_runtime(args) -> Runtime:
    """Pick the device and join the process group when launched by torchrun (RANK/WORLD_SIZE in env)."""
    use_cuda = torch.cuda.is_available() and not getattr(args, "no_cuda", False)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    amp = getattr(args, "amp", "no") or "no"
    if amp == "fp16" and not use_cuda:
        fail("--amp fp16 needs a CUDA GPU; use --amp bf16 or --amp no on the CPU")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        # TF32 matmuls: same results to ~1e-3, several times faster on Ampere and newer.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
    distributed = world_size > 1
    if distributed and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Runtime(device=device, rank=rank, world_size=world_size, local_rank=local_rank,
                   amp=amp, distributed=distributed)


def cleanup_runtime(rt: Runtime):
    if rt.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_num_workers(cap: int = 8) -> int:
    """DataLoader workers per rank: the CPUs this process may use, shared by the ranks on this node, one left over
    for the rank itself, at most `cap`."""
    if not hasattr(os, "sched_getaffinity"):
        return 2
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, min(cap, usable_cpus() // local_ranks - 1))


def mean_over_ranks(total, count: int, rt) -> float:
    """total / count, both summed over all ranks (rank 0 alone sees only its shard): a per-row mean loss. Every
    rank must call it (an all-reduce)."""
    t = torch.tensor([float(total), count], dtype=torch.float64, device=rt.device)
    if rt.distributed:
        torch.distributed.all_reduce(t)
    return (t[0] / t[1].clamp(min=1)).item()


def finite_loss(loss: float, step: int) -> float:
    """The fine-tuning loss, or a one-line stop once it is inf/NaN: a diverged run must not go on to save NaN weights
    as its best or final checkpoint. Every rank gets the same mean_over_ranks value, so all stop together."""
    if not math.isfinite(loss):
        print(file=sys.stderr)  # off the progress bar's line
        fail(f"training loss is {loss} at step {step}; lower --learning_rate (or use --amp bf16 instead of fp16); "
             "checkpoints saved before this step are kept")
    return loss


def ignore_stop_signals(worker_id=None):
    """DataLoader worker_init_fn for a run that saves on SIGINT/SIGTERM: a Ctrl-C or a scheduler's SIGTERM reaches
    the whole process group, and the workers must outlive the step that is finishing for the checkpoint. The main
    process stops them (shutdown_workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def catch_stop_signals():
    """From now on SIGINT and SIGTERM append their number to the returned list, so that a training loop can finish its
    step and save; a second SIGINT raises KeyboardInterrupt. Returns (that list, a function that puts the old
    handlers back)."""
    caught = []

    def on_signal(signum, frame):
        caught.append(signum)
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore():
        for s, h in old.items():
            signal.signal(s, h)
    return caught, restore


def shutdown_workers(loader_iter):
    """Stop a DataLoader iterator's workers now, whatever ended the run: an error's traceback can keep the iterator
    alive, and workers left to garbage collection at exit hang it, since they ignore SIGTERM (ignore_stop_signals)."""
    if hasattr(loader_iter, "_shutdown_workers"):
        loader_iter._shutdown_workers()


def make_grad_scaler(rt: Runtime):
    # bf16 has fp32's exponent range, so only fp16 needs loss scaling.
    return torch.amp.GradScaler(rt.device.type, enabled=(rt.amp == "fp16"))


def scaler_step(scaler, optimizer) -> bool:
    """scaler.step + scaler.update; False when fp16's scaler skipped the step (inf/NaN gradients: it backs off its
    scale exactly then), so the caller leaves the schedule where it was, as transformers' Trainer does. A disabled
    scaler (no fp16: its scale stays 1.0) steps the optimizer every time."""
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= scale


# ----------------------------------------------------------------------------------------------------------------
# seeding and RNG state (exact resume needs every generator)

def set_seed(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_dropout_per_rank(seed: int, rt):
    """Under DDP, a stream of its own for each rank once the model is built, so the ranks draw different dropout
    masks (seeded alike, they all drew the same ones); one process keeps its stream. (seed, rank) is hashed: with
    seed + rank, seed s's rank 1 would draw seed s+1's rank-0 masks in a seed grid."""
    if rt.distributed:
        torch.manual_seed(int(np.random.SeedSequence([seed, rt.rank]).generate_state(1)[0]))


def rng_state() -> dict:
    """The generators this process draws from: its own GPU's only (each rank saves its own), so a checkpoint
    resumes on a machine that shows a different number of GPUs."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # saved by earlier versions: every visible GPU's state
            cuda = cuda[torch.cuda.current_device()] if torch.cuda.current_device() < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


# ----------------------------------------------------------------------------------------------------------------
# a torch object written atomically (the torch-free writers: fileio)

def atomic_torch_save(obj, path: str):
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


# ----------------------------------------------------------------------------------------------------------------
# RNG state in a form torch.load(weights_only=True) accepts (numpy's state holds an ndarray, which it refuses)

def rng_state_portable() -> dict:
    s = rng_state()
    name, keys, pos, has_gauss, cached = s["numpy"]
    version, internal, gauss = s["python"]
    s["numpy"] = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    s["python"] = [version, list(internal), gauss]
    return s


def set_rng_state_portable(state: dict):
    name, keys, pos, has_gauss, cached = state["numpy"]
    version, internal, gauss = state["python"]
    set_rng_state({"python": (version, tuple(internal), gauss),
                   "numpy": (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached),
                   "torch": state["torch"], **({"cuda": state["cuda"]} if "cuda" in state else {})})

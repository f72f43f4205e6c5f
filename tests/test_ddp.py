"""Two CPU ranks under torchrun (gloo) compute the same training run as one process with the same global batch.

Each rank reads its own half of every global batch and accumulates over two micro-batches (so no_sync is used);
the loss is normalised by the global masked-token count, so per-step losses, gradient norms and the final weights
must match the single-process run up to float summation order.
"""
import os
import subprocess
import sys

import torch.distributed as dist
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pretraining_helpers import ROOT, argv, assert_same_run, assert_same_weights, rows, weights  # noqa: E402
import run_pretraining  # noqa: E402


@pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")
def test_two_ranks_match_one_process(pretrain_data, tmp_path):
    flags = dict(config="tiny_nodrop.json", max_steps=3, save_steps=3, warmup_proportion=0.0, train_batch_size=8)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, "run_pretraining.py"),
           *argv(pretrain_data, tmp_path / "ddp", gradient_accumulation_steps=2, **flags)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run_pretraining.main(argv(pretrain_data, tmp_path / "single", **flags)) == 0
    assert [r["step"] for r in rows(tmp_path / "ddp")] == [1, 2, 3]
    assert_same_run(rows(tmp_path / "single"), rows(tmp_path / "ddp"), [1, 2, 3], tol=1e-5)
    assert_same_weights(weights(tmp_path / "single", 3), weights(tmp_path / "ddp", 3), tol=1e-5)

"""bench/bench_optimizer.py: the contenders start from the same weights and gradients, and a run writes its rows."""
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import bench_optimizer  # noqa: E402
from models.modeling import BertConfig  # noqa: E402


def test_optimizers_share_weights_and_gradients():
    config = BertConfig.from_json_file(os.path.join(ROOT, "models", "configs", "tiny.json"))
    opts = bench_optimizer.make_optimizers(config, torch.device("cpu"), max_grad_norm=0.1)
    assert set(opts) == {"lamb", "adamw_clipped", "adamw_fused"}
    params = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in opts.items()}
    assert len(params["lamb"]) == len(params["adamw_clipped"]) == len(params["adamw_fused"]) > 0
    for p, q, r in zip(params["lamb"], params["adamw_clipped"], params["adamw_fused"]):
        assert p is not q and q is not r and p is not r
        assert torch.equal(p, r) and torch.equal(q, r) and torch.equal(p.grad, r.grad) and torch.equal(q.grad, r.grad)
        assert p.grad.abs().sum() > 0
    # the clipping contenders scale the gradients at their first step, to the same global norm
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params["adamw_fused"]]))
    assert norm > 0.1
    opts["lamb"].step()
    opts["adamw_clipped"].step()
    for p, q in zip(params["lamb"], params["adamw_clipped"]):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=0)


def test_run_writes_rows(tmp_path):
    out = tmp_path / "opt.json"
    rows = bench_optimizer.main(["--device", "cpu", "--configs", "tiny", "--rounds", "1",
                                 "--steps", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == rows and len(rows) == 1
    row = rows[0]
    assert row["config"] == "tiny" and row["lamb_ms"] > 0 and row["adamw_fused_ms"] > 0 and row["adamw_clipped_ms"] > 0
    assert abs(row["lamb_ratio"] - row["lamb_ms"] / row["adamw_fused_ms"]) < 0.01 * row["lamb_ratio"]
    assert abs(row["lamb_clipped_ratio"] - row["lamb_ms"] / row["adamw_clipped_ms"]) < 0.01 * row["lamb_clipped_ratio"]

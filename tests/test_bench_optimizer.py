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
    opts = bench_optimizer.make_optimizers(config, torch.device("cpu"), compile_lamb=False)
    assert set(opts) == {"lamb", "adamw_fused"}
    params = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in opts.items()}
    assert len(params["lamb"]) == len(params["adamw_fused"]) > 0
    for p, q in zip(params["lamb"], params["adamw_fused"]):
        assert p is not q and torch.equal(p, q) and torch.equal(p.grad, q.grad) and p.grad.abs().sum() > 0


def test_run_writes_rows(tmp_path):
    out = tmp_path / "opt.json"
    rows = bench_optimizer.main(["--device", "cpu", "--configs", "tiny", "--no_compile", "--rounds", "1",
                                 "--steps", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == rows and len(rows) == 1
    row = rows[0]
    assert row["config"] == "tiny" and row["lamb_ms"] > 0 and row["adamw_fused_ms"] > 0
    assert abs(row["lamb_ratio"] - row["lamb_ms"] / row["adamw_fused_ms"]) < 0.01 * row["lamb_ratio"]
    assert "lamb_compiled_ms" not in row

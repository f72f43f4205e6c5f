"""bench/bench_pretraining.py and its kit (bench/bench_common.py): pipelined timing syncs once per block of steps
(not once per step), and a CPU run of a tiny config writes a row with both rates."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import bench_common  # noqa: E402
import bench_pretraining  # noqa: E402


def test_time_pipelined_syncs_once_per_block():
    calls = []
    steps = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    rates = bench_common.time_pipelined(steps, n=4, sync=lambda: calls.append("sync"), rounds=2)
    # per round and contender: a sync before (nothing queued from the one before is timed), 4 steps, one sync
    block = ["sync", "a", "a", "a", "a", "sync", "sync", "b", "b", "b", "b", "sync"]
    assert calls == block * 2
    assert set(rates) == {"a", "b"} and all(r > 0 for r in rates.values())


def test_cpu_run_writes_both_rates(tmp_path):
    out = tmp_path / "rows.json"
    rows = bench_pretraining.main(["--device", "cpu", "--configs", "tiny", "--seq_lens", "32", "--batch", "2",
                                   "--steps", "2", "--warmup", "1", "--threads", "1", "--json", str(out)])
    assert json.loads(out.read_text(encoding="utf-8")) == rows and len(rows) == 1
    row = rows[0]
    assert set(row["pipelined_seq_per_s"]) == {"ours", "hf"} and row["ours_seq_per_s"] > 0
    assert row["pipelined_ratio"] == round(row["pipelined_seq_per_s"]["ours"] / row["pipelined_seq_per_s"]["hf"], 3)


def test_pipelined_fields_compiled_ratio_only_with_both_compiled():
    four = {name: (lambda: None) for name in ("ours", "hf", "ours_compiled", "hf_compiled")}
    row = bench_common.pipelined_fields(four, n=3, sync=lambda: None, batch=8)
    piped = row["pipelined_seq_per_s"]
    assert row["pipelined_compiled_ratio"] == round(piped["ours_compiled"] / piped["hf_compiled"], 3)
    assert row["pipelined_ratio"] == round(piped["ours"] / piped["hf"], 3)
    eager = bench_common.pipelined_fields({k: four[k] for k in ("ours", "hf")}, n=3, sync=lambda: None, batch=8)
    assert "pipelined_compiled_ratio" not in eager


def test_bench_finetune_fixed_row_with_profile_and_its_flag_checks(tmp_path, capsys):
    """bench_finetune.py's fixed rows (same step as above, for the task heads): a CPU row with --profile carries
    both contenders' busy and wall times; a compile mode without --compile and a negative --profile are refused."""
    import pytest

    import bench_finetune
    rows = bench_finetune.main(["--device", "cpu", "--fixed", "qa:tiny:32:2", "--real", "--steps", "2", "--warmup",
                                "1", "--threads", "1", "--profile", "1", "--json", str(tmp_path / "rows.json")])
    assert len(rows) == 1 and rows[0]["compile_mode"] is None and rows[0]["ours_seq_per_s"] > 0
    assert set(rows[0]["profile"]) == {"ours", "hf"}
    assert all(p["wall_ms_per_step"] > 0 and p["busy_ms_per_step"] > 0 for p in rows[0]["profile"].values())
    for argv, needle in ((["--compile_mode", "reduce-overhead"], "add --compile"), (["--profile", "-1"], "--profile")):
        with pytest.raises(SystemExit) as e:
            bench_finetune.main(argv)
        assert e.value.code == 2 and needle in capsys.readouterr().err


def test_a_failing_profile_keeps_the_row_and_its_timings(tmp_path, monkeypatch):
    """The profiler can fail where the timing did not (replaying CUDA graphs recorded before it started): the row
    keeps its timings, each contender's profile says what failed, and the JSON holds the row before profiling."""
    import torch.profiler

    import bench_finetune
    out = tmp_path / "rows.json"

    def broken_profile(*args, **kwargs):
        assert json.loads(out.read_text())[0]["ours_seq_per_s"] > 0  # written before the profiler starts
        raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")
    monkeypatch.setattr(torch.profiler, "profile", broken_profile)
    rows = bench_finetune.main(["--device", "cpu", "--fixed", "qa:tiny:32:2", "--real", "--steps", "2", "--warmup",
                                "1", "--threads", "1", "--profile", "1", "--json", str(out)])
    assert rows[0]["ours_seq_per_s"] > 0 and rows[0]["profile"] == {
        name: {"error": "RuntimeError: CUPTI_ERROR_NOT_INITIALIZED"} for name in ("ours", "hf")}
    assert json.loads(out.read_text()) == rows


def test_loss_check_catches_a_head_difference_that_bf16_tolerance_hides():
    """Under bf16 the check's tolerance (2% of the loss) is wider than what a wrong MLM head changes at
    initialisation (scoring the hidden state one position right of each masked token: about 0.2%), so a bf16 run
    also compares the losses in full fp32, where both models agree to rounding."""
    import pytest
    import torch

    from models.modeling import BertConfig
    config = BertConfig.from_json_file(os.path.join(ROOT, "models", "configs", "tiny.json"))
    ours, hf = bench_pretraining.build_models(config, torch.device("cpu"))
    batch = bench_pretraining.make_batch(4, 64, config.vocab_size, "cpu")
    _, _, autocast = bench_common.runtime(torch.device("cpu"), "bf16")

    def shifted(model, b):  # each masked token predicted from the hidden state to its right
        pos = b["mlm_positions"]
        labels = torch.full_like(b["mlm_labels"], -100).scatter_(1, pos + 1, b["mlm_labels"].gather(1, pos))
        labels[:, 0] = -100
        return model(**dict(b, mlm_labels=labels, mlm_positions=pos + 1))["loss"]

    bench_common.check_losses(ours, hf, batch, autocast, "bf16", bench_pretraining.ours_loss,
                              bench_pretraining.hf_loss)  # the same model passes both checks
    assert ours.training and hf.training
    with pytest.raises(SystemExit, match=r"\(fp32\)"):
        bench_common.check_losses(ours, hf, batch, autocast, "bf16", shifted, bench_pretraining.hf_loss)
    assert ours.training and hf.training  # put back in training mode after a failed check too


def test_a_compile_mode_without_compile_is_refused(capsys):
    """--compile_mode alone would time the eager contenders only and write compile_mode null: a GPU run's row
    without the compiled rates it was started for."""
    import pytest

    with pytest.raises(SystemExit) as e:
        bench_pretraining.main(["--device", "cpu", "--configs", "tiny", "--compile_mode", "reduce-overhead"])
    assert e.value.code == 2 and "add --compile" in capsys.readouterr().err


def test_a_device_that_is_not_here_is_one_line_in_every_benchmark():
    """--device cuda on a machine without one was an AssertionError traceback from torch's first copy to it."""
    import pytest
    import torch

    import bench_finetune
    import bench_optimizer

    for main in (bench_pretraining.main, bench_optimizer.main, bench_finetune.main):
        with pytest.raises(SystemExit, match=r"^error: --device gpu0: Invalid device string"):
            main(["--device", "gpu0"])
        if not torch.cuda.is_available():
            with pytest.raises(SystemExit, match=r"^error: --device cuda: no CUDA device here"):
                main(["--device", "cuda"])

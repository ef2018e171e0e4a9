"""The benchmark baselines (benchmarks/regularizers.py), the trade-off benchmark and run_all, on tiny settings."""

from __future__ import annotations

import csv
import doctest
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import synopsloss as sl

snn = pytest.importorskip("snntorch")
from snntorch import utils as snn_utils  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """The benchmark modules, imported from benchmarks/ (not a package)."""
    sys.path.insert(0, str(BENCH))
    try:
        yield {name: importlib.import_module(name) for name in ("regularizers", "tasks", "tradeoff", "run_all")}
    finally:
        sys.path.remove(str(BENCH))


def test_benchmark_docstring_examples_run(bench):
    for module in bench.values():
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__


# ----------------------------------------------------------------------------- the penalties, by hand

def test_l1_spike_rate_is_the_mean_of_all_hidden_spikes(bench):
    s = {"a": [torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])],
         "b": [torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]])]}
    # (1 + 3 + 3) spikes over 8 + 8 values
    assert bench["regularizers"].l1_spike_rate(s).item() == pytest.approx(7 / 16)


def test_hinge_squared_rate_penalises_only_layers_above_the_max_rate(bench):
    f = bench["regularizers"].hinge_squared_rate
    a = torch.tensor([[1.0, 0.0, 1.0, 1.0]], requires_grad=True)     # rate 0.75
    b = torch.tensor([[0.0, 0.0, 0.0, 1.0]], requires_grad=True)     # rate 0.25
    v = f({"a": [a], "b": [b]}, max_rate=0.5)
    assert v.item() == pytest.approx(0.25 ** 2)
    v.backward()
    assert torch.allclose(a.grad, torch.full((1, 4), 2 * 0.25 / 4))   # d/ds (r - m)^2 = 2 (r - m) / n
    assert torch.equal(b.grad, torch.zeros(1, 4))
    assert f({"a": [a], "b": [b]}, max_rate=0.2).item() == pytest.approx(0.55 ** 2 + 0.05 ** 2)
    assert f({"a": [a], "b": [b]}, max_rate=0.8).item() == 0.0


def test_outgoing_synapses_counts_taps_by_hand(bench):
    f = bench["regularizers"].outgoing_synapses
    conv = nn.Conv2d(1, 1, 3, padding=1)
    # 3x3 input, 3x3 kernel, zero padding: corner 4 taps, edge 6, centre 9
    assert torch.equal(f(conv, (1, 3, 3)), torch.tensor([[[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]]))
    fc = nn.Linear(3, 4)
    with torch.no_grad():
        fc.weight[:, 1] = 0.0          # input 1 has no synapse
        fc.weight[0, 2] = 0.0          # input 2 has 3
    assert torch.equal(f(fc, (3,)), torch.tensor([4.0, 0.0, 3.0]))
    strided = nn.Conv1d(1, 2, 2, stride=2)   # non-overlapping windows: each input reaches 1 output x 2 channels
    assert torch.equal(f(strided, (1, 6)), torch.full((1, 6), 2.0))


def _spiking_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), snn.Leaky(beta=0.5, init_hidden=True, threshold=0.1),
        nn.Conv2d(3, 4, 3, stride=2, padding=1), snn.Leaky(beta=0.5, init_hidden=True, threshold=0.1),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 5),
    )
    with torch.no_grad():
        net[2].weight[0, 1] = 0.0     # a pruned 3x3 slice: fewer outgoing synapses for channel-1 neurons
        net[5].weight[:, :6] = 0.0
    return net


def test_fanout_penalty_equals_the_counters_synops_of_the_next_layers(bench):
    """Suetake et al.'s sum_i spikes_i x outgoing synapses_i is the synops of the layers those spikes feed."""
    r = bench["regularizers"]
    net = _spiking_net()
    counter = sl.SynOpsCounter(net, neurons=False)
    rec = r.ActivityRecorder(net, synaptic_layers=["2", "5"])
    snn_utils.reset(net)
    x = (torch.rand(3, 6, 1, 6, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()   # [T, B, ...]
    for t in range(3):
        net(x[t])
    inputs = torch.cat([i.flatten() for i in rec.inputs["2"] + rec.inputs["5"]])
    assert set(inputs.unique().tolist()) <= {0.0, 1.0} and inputs.sum() > 0   # binary spikes, some of them
    per_layer = counter.synops(by_layer=True)
    omega = r.fanout_weighted_spikes(rec.inputs, rec.layers, normalize=False)
    assert omega.item() == pytest.approx((per_layer["2"] + per_layer["5"]).item(), rel=1e-6)
    assert omega.item() == pytest.approx(sum(per_layer[n].item() for n in per_layer if n not in counter.data_fed_layers()))
    # the gradient reaches the spikes (through the surrogate) and the weights before them
    omega.backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0
    rec.remove()
    counter.remove()


def test_normalised_fanout_penalty_is_synops_over_dense_synops(bench):
    r = bench["regularizers"]
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(4, 6), nn.Linear(6, 3)
    net = nn.Sequential(fc1, snn.Leaky(beta=0.5, init_hidden=True, threshold=0.05), fc2)
    counter = sl.SynOpsCounter(net, neurons=False)
    with r.ActivityRecorder(net, synaptic_layers=["2"]) as rec:
        x = torch.rand(5, 4)
        net(x)
        net(x)
        c = counter.snapshot().per_layer()["2"]
        v = r.fanout_weighted_spikes(rec.inputs, rec.layers)
    assert c["dense"] == 2 * 6 * 3        # two calls, 6 inputs x 3 outputs
    assert v.item() == pytest.approx(c["synops"] / c["dense"])
    counter.remove()


def test_iterative_target_lowers_the_target_to_07_of_the_last_achieved():
    """The benchmark's iterative method: SynOpsLoss with schedules.Iterative (2 stages of 2 batches)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(5, 4, generator=g) * (k + 1) for k in range(5)]
    # hand: the driven layer "2" gets relu(fc1(x)) and every input has 3 outgoing synapses
    with torch.no_grad():
        driven = [float(torch.relu(net[0](x)).sum() * 3 / 5) for x in batches]
    counter = sl.SynOpsCounter(net)
    it = sl.schedules.Iterative(factor=0.7, stage_steps=2, stages=1, window=2)
    loss_fn = sl.SynOpsLoss(counter, target=it, weight=2.0)
    losses = []
    for x in batches:
        counter.reset()
        net(x)
        losses.append(float(loss_fn().detach()))
        loss_fn.step()
    t1 = 0.7 * driven[0]
    t2 = 0.7 * (driven[0] + driven[1]) / 2
    assert it.stage_targets == pytest.approx([t1, t2])
    assert it.achieved == pytest.approx([(driven[0] + driven[1]) / 2])   # one lowering (stages=1), then held
    assert losses[1] == pytest.approx(2.0 * ((driven[1] - t1) / t1) ** 2, rel=1e-5)
    assert losses[3] == pytest.approx(2.0 * ((driven[3] - t2) / t2) ** 2, rel=1e-5)
    assert losses[4] == pytest.approx(2.0 * ((driven[4] - t2) / t2) ** 2, rel=1e-5)   # the last target stays
    counter.remove()


# ----------------------------------------------------------------------------- the benchmark

def test_mnist1d_is_generated_offline_and_rate_coded_on_two_channels(bench):
    t = bench["tasks"].load_task("mnist1d")
    x_tr, y_tr, x_te, y_te = t.data
    assert x_tr.shape == (4000, 2, 40) and x_te.shape == (1000, 2, 40)
    assert 0 <= float(x_tr.min()) and float(x_tr.max()) <= 1
    assert (x_tr[:, 0] * x_tr[:, 1]).abs().max() == 0      # a sample is ON or OFF, never both
    assert sorted(y_tr.unique().tolist()) == list(range(10))


def test_verdict_picks_the_fewest_synops_within_one_point(bench):
    tr = bench["tradeoff"]
    rows = []
    for method, strength, acc, syn in [("baseline", "", 0.900, 100.0), ("synops", 0.5, 0.895, 30.0),
                                       ("synops", 0.3, 0.880, 10.0), ("l1", 1.0, 0.891, 25.0),
                                       ("l1", 2.0, 0.850, 5.0), ("hinge", 0.1, 0.80, 50.0)]:
        for seed, d in ((0, -0.004), (1, 0.004), (2, 0.0)):
            rows.append({"dataset": "d", "method": method, "strength": strength, "seed": seed,
                         "accuracy": acc + d, "driven_synops": syn, "total_synops": syn + 7, "target": ""})
    v = tr.verdict(tr.means(rows))["d"]
    assert v["accuracy_line"] == pytest.approx(0.89)
    assert v["winner"] == "l1" and v["best"]["l1"]["strength"] == "1.0"      # 0.891 >= 0.89; 0.880 is not
    assert v["best"]["synops"]["driven_synops"] == 30.0 and v["best"]["hinge"] is None
    assert v["best"]["l1"]["reduction"] == pytest.approx(4.0)
    assert v["ranking"] == ["l1", "synops"]
    # two seeds whose differences agree give a zero-width interval: too few to decide anything
    two = tr.verdict(tr.means([r for r in rows if r["seed"] < 2]))["d"]
    assert two["winner"] is None and set(two["decisions"].values()) == {"undecided"}


def test_tradeoff_tiny_run_writes_one_row_per_run_and_a_front_per_dataset(bench, tmp_path):
    tr = bench["tradeoff"]
    out = tmp_path / "res"
    tr.main(["--datasets", "digits", "mnist1d", "--seeds", "0", "--epochs", "1", "--train-samples", "96",
             "--test-samples", "40", "--time-steps", "2", "--batch-size", "48", "--jobs", "1", "--out", str(out),
             "--grid-only", "--grid", "target=3000", "synops=0.5", "ramp=0.5", "iterative=2", "l1=1", "hinge=50",
             "fanout=1"])
    with open(out / "tradeoff.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 8
    assert {(r["dataset"], r["method"]) for r in rows} == {(d, m) for d in ("digits", "mnist1d") for m in tr.METHODS}
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 1
        assert 0 < float(r["driven_synops"]) < float(r["total_synops"])    # conv1 is data-fed: total is larger
        if r["method"] in ("target", "synops", "ramp", "iterative"):   # budget error from the row's own figures
            assert float(r["budget_error"]) == pytest.approx(abs(float(r["driven_synops"]) / float(r["target"]) - 1))
        if r["method"] == "target":
            assert float(r["target"]) == 3000.0
        assert r["code_hash"] == tr.code_hash() and r["layout"] == "torch_threads=1 processes=1"
    assert (out / "tradeoff_digits.png").stat().st_size > 0 and (out / "tradeoff_mnist1d.png").stat().st_size > 0
    summary = json.loads((out / "tradeoff.json").read_text())
    assert set(summary["verdict"]) == {"digits", "mnist1d"} and summary["failed_runs"] == 0
    assert {(b["dataset"], b["method"]) for b in summary["budgets"]} == {
        (d, m) for d in ("digits", "mnist1d") for m in ("target", "synops", "ramp", "iterative")}
    assert all(b["l1_tried"] == [1.0] for b in summary["budgets"])
    assert not (out / "tradeoff.partial.csv").exists()


# ----------------------------------------------------------------------------- run_all

OVERHEAD_OUT = """synopsloss counting overhead (issue 12), 2026-12-07 06:06
  torch                                  2.13.0+cpu

[1a] sinabs tutorial SNN, B=32, T=20 (IAFSqueeze, [B*T, 1, 28, 28]): median of 3 interleaved rounds [quartiles of the per-round ratio]
                                           plain                readme               default                sinabs
training step [ms]                          20.0                  23.0                  21.0                  22.0
  ratio to plain               1.000 [1.00-1.00]     1.150 [1.10-1.20]     1.050 [1.00-1.08]     1.100 [1.05-1.15]
forward pass [ms]                           10.0                  15.0                  12.0                  12.5
  ratio to plain               1.000 [1.00-1.00]     1.500 [1.40-1.60]     1.200 [1.10-1.30]     1.250 [1.20-1.30]

[1b] snntorch CSNN (tutorial 6), B=128, T=25 calls of the network: median of 3 interleaved rounds [quartiles of the per-round ratio]
                                           plain                readme               default
training step [ms]                        1240.2                1261.1                1277.8
  ratio to plain               1.000 [1.00-1.00]     1.004 [0.95-1.03]     1.016 [0.96-1.11]

[2a] light 3-conv CNN (3-16-32-64, Linear(65536, 10)), B=64, 32x32: median of 3 interleaved rounds (added time: median of per-round differences)
  plain forward                        100.00 ms
  + synopsloss counts                   20.00 ms  [14.01-18.32]  =  0.200x the forward
  + NeuroBench SynapticOperations      270.00 ms  [376.98-501.96]  =  2.700x the forward
  + floor: x.sum() per layer input       3.26 ms  [0.29-3.68]  =  0.076x the forward
  NeuroBench overhead / synopsloss overhead:   13.5x   (target >= 20x: NOT met)
  synopsloss overhead / floor:                  6.1x
  numbers per sample              Dense             Eff_MACs          Eff_ACs
    synopsloss                  23699648.0        11536268.7               0.0
    NeuroBench                  23699648.0        11536268.7               0.0
    identical: yes (bit for bit)
"""

SOAK_OUT = """step   100  rss    300.0 MiB  peak    301.0 MiB  live tensors    94  synops/sample    1,234.5  task loss 1.0  (1 s)
step   200  rss    300.5 MiB  peak    301.0 MiB  live tensors    94  synops/sample    1,200.0  task loss 0.9  (2 s)
after warm-up (step 100): live tensors +0, RSS +0.5 MiB, peak RSS +0.0 MiB
verdict: FLAT (no leak)
"""


def test_run_all_summary_parses_the_figures_and_records_a_failed_benchmark(bench, tmp_path):
    ra = bench["run_all"]
    recs = {
        "overhead": {"name": "overhead", "command": "python benchmarks/overhead.py --repeats 3", "returncode": 2,
                     "seconds": 1.0, "stdout": "", "stderr_tail": "error: unrecognized arguments: --repeats"},
        "soak": {"name": "soak", "command": "python benchmarks/soak.py", "returncode": 0, "seconds": 3.0,
                 "stdout": SOAK_OUT, "stderr_tail": ""},
    }
    md = ra.summarize(recs, ra.machine(), False, str(tmp_path), info_end="1.00")
    assert "**FAILED** (exit status 2" in md and "unrecognized arguments: --repeats" in md
    assert "94, 94" in md and "FLAT (no leak)" in md
    with open(tmp_path / "soak.csv") as f:
        assert [r["tensors"] for r in csv.DictReader(f)] == ["94", "94"]
    assert (tmp_path / "summary.md").read_text() == md
    assert "| CPU |" in md and "torch" in md

    figures = ra.parse_overhead(OVERHEAD_OUT)
    sinabs, csnn = figures["sections"]
    assert sinabs["columns"] == ["plain", "readme", "default", "sinabs"] and csnn["columns"] == ["plain", "readme",
                                                                                                 "default"]
    assert sinabs["ratios"] == {"training step": [1.0, 1.15, 1.05, 1.1], "forward pass": [1.0, 1.5, 1.2, 1.25]}
    assert sinabs["quartiles"]["training step"][1] == (1.1, 1.2) and csnn["ratios"]["training step"][1] == 1.004
    (cnn,) = figures["counting"]
    assert (cnn["ours_ms"], cnn["ours_x"], cnn["neurobench_ms"], cnn["neurobench_x"]) == (20.0, 0.2, 270.0, 2.7)
    assert cnn["neurobench_over_ours"] == 13.5 and cnn["identical"] == "yes (bit for bit)"
    recs["overhead"].update(returncode=0, stdout=OVERHEAD_OUT)
    md = ra.summarize(recs, ra.machine(), False, str(tmp_path), info_end="1.00")
    assert "| training step | 1.00 [1.00-1.00] | 1.15 [1.10-1.20] | 1.05 [1.00-1.08] | 1.10 [1.05-1.15] |" in md
    assert "**13.5x**" in md and "yes (bit for bit)" in md
    assert os.path.exists(tmp_path / "overhead.csv") and os.path.exists(tmp_path / "overhead.png")
    # a negative added time (noise) is said to be noise, not turned into a huge ratio
    noisy = OVERHEAD_OUT.replace("20.00 ms  [14.01-18.32]  =  0.200x", "-5.00 ms  [-9.0-1.0]  =  -0.050x")
    recs["overhead"].update(stdout=noisy)
    md = ra.summarize(recs, ra.machine(), False, str(tmp_path), info_end="1.00")
    assert "**-54.0x**" not in md and "not meaningful" in md and "-5.00 ms" in md  # the raw line is still quoted


def test_tradeoff_reuses_finished_rows_and_trains_only_the_rest(bench, tmp_path):
    """A rerun with --reuse takes the rows an earlier run left and gives the same CSV as training them again."""
    tr = bench["tradeoff"]
    common = ["--datasets", "digits", "--seeds", "0", "--epochs", "1", "--train-samples", "64", "--test-samples", "32",
              "--time-steps", "2", "--batch-size", "32", "--jobs", "1", "--grid-only"]
    first, second = tmp_path / "a", tmp_path / "b"
    tr.main(common + ["--out", str(first), "--grid", "l1=1"])
    tr.main(common + ["--out", str(second), "--grid", "l1=1", "fanout=1", "--reuse", str(first / "tradeoff.csv")])
    with open(first / "tradeoff.csv") as f:
        a = {(r["method"], r["strength"]): r for r in csv.DictReader(f)}
    with open(second / "tradeoff.csv") as f:
        b = {(r["method"], r["strength"]): r for r in csv.DictReader(f)}
    assert set(b) == {("baseline", ""), ("l1", "1.0"), ("fanout", "1.0")}
    for k in a:   # reused: the same figures, and the same seconds (not retrained)
        assert {c: b[k][c] for c in ("accuracy", "driven_synops", "seconds")} == \
            {c: a[k][c] for c in ("accuracy", "driven_synops", "seconds")}
    assert json.loads((second / "tradeoff.json").read_text())["reused_runs"] == 2
    # and training again gives the very same figures (what makes reuse legitimate)
    third = tmp_path / "c"
    tr.main(common + ["--out", str(third), "--grid", "l1=1"])
    with open(third / "tradeoff.csv") as f:
        c = {(r["method"], r["strength"]): r for r in csv.DictReader(f)}
    assert {k: (v["accuracy"], v["driven_synops"]) for k, v in c.items()} == \
        {k: (v["accuracy"], v["driven_synops"]) for k, v in a.items()}


def test_reuse_is_refused_when_code_hash_torch_or_layout_differ(bench, tmp_path):
    tr = bench["tradeoff"]
    job = dict(dataset="digits", method="l1", strength=1.0, seed=0, epochs=1, time_steps=2, batch_size=32, lr=1e-2,
               warmup=0.25, hinge_max_rate=0.01, train_samples=64, test_samples=32, jobs=1, code_hash="abc")
    row = {"dataset": "digits", "method": "l1", "strength": "1.0", "seed": "0", "epochs": "1", "accuracy": "0.5",
           "driven_synops": "10", "total_synops": "20", "settings": tr.settings_of(job), "code_hash": "abc",
           "torch": torch.__version__, "layout": tr.layout_of(job)}
    reused, refused = tr.reusable([row], [job])
    assert list(reused) == [0] and refused == []
    for column, value in (("code_hash", "def"), ("torch", "0.0"), ("layout", "torch_threads=1 processes=2"),
                          ("code_hash", "")):
        reused, refused = tr.reusable([dict(row, **{column: value})], [job])
        assert reused == {} and len(refused) == 1 and refused[0].startswith(f"digits l1 1 seed 0: {column} ")
    old = {k: v for k, v in row.items() if k not in ("code_hash", "torch", "layout")}   # a CSV from before the hash
    assert tr.reusable([old], [job])[0] == {}


def test_one_short_training_is_bit_identical_when_rerun_in_the_ci_layout(bench):
    """The same job twice in this process and once in a fresh process, one torch thread each: every figure of the
    row is equal bit for bit (floats compared with ==); only the wall-clock and CPU seconds differ."""
    tr = bench["tradeoff"]
    job = dict(dataset="mnist1d", method="synops", strength=0.5, seed=3, epochs=1, time_steps=2, batch_size=32,
               lr=1e-2, warmup=0.25, hinge_max_rate=0.01, train_samples=96, test_samples=64, jobs=1,
               code_hash=tr.code_hash())
    first, second = tr.run_one(job), tr.run_one(job)
    code = ("import json, sys; sys.path.insert(0, sys.argv[2]); import tradeoff; "
            "print(json.dumps(tradeoff.run_one(json.loads(sys.argv[1]))))")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(BENCH.parent))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(job), str(BENCH)], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    fresh = json.loads(out.strip().splitlines()[-1])
    assert not first["warnings"].startswith("ERROR"), first["warnings"]
    timings = {"seconds", "cpu_seconds"}
    for other in (second, fresh):
        assert set(other) == set(first)
        assert {k: v for k, v in other.items() if k not in timings} == {k: v for k, v in first.items() if k not in timings}


def test_run_all_keeps_each_benchmarks_record_for_a_later_partial_rerun(bench, tmp_path):
    ra = bench["run_all"]
    rec = ra.run("soak", [sys.executable, "-c", f"print({SOAK_OUT!r}); import sys; sys.stderr.write('warn')"],
                 str(tmp_path), timeout=60)
    assert rec["returncode"] == 0 and "live tensors" in rec["stdout"]
    again = ra.earlier("soak", str(tmp_path))
    assert again["earlier"] and again["stdout"].strip() == SOAK_OUT.strip()   # stderr kept apart
    md = ra.summarize({"soak": again}, ra.machine(), True, str(tmp_path), info_end="1")
    assert "an earlier invocation" in md and "FLAT (no leak)" in md
    assert ra.earlier("overhead", str(tmp_path)) is None
    # the record names the commit it ran at, as git itself gives it
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH.parent, capture_output=True,
                          text=True).stdout.strip()
    if head:
        assert rec["git_commit"].split(" ")[0] == head and again["git_commit"] == rec["git_commit"]
        assert f"Ran at commit {rec['git_commit']}." in md


def test_run_all_from_results_summarises_earlier_outputs_without_running_anything(bench, tmp_path, capsys):
    ra, tr = bench["run_all"], bench["tradeoff"]
    out = tmp_path / "res"
    out.mkdir()
    # a trade-off run left by another checkout: its rows, its record (commit and note written with it) and its log
    rows = []
    accs = {"baseline": [0.90, 0.92, 0.91], "target": [0.91, 0.92, 0.92]}
    for method, strength, target, synops in (("baseline", "", "", [100.0, 120.0, 110.0]),
                                             ("target", "30.0", "30.0", [31.0, 30.0, 29.0])):
        for seed in range(3):
            rows.append({"dataset": "d", "method": method, "strength": strength, "seed": str(seed),
                         "accuracy": str(accs[method][seed]), "driven_synops": str(synops[seed]),
                         "total_synops": str(2 * synops[seed]), "target": target,
                         "budget_error": "" if not target else str(abs(synops[seed] / 30 - 1)),
                         "settings": "T=2 batch=8 lr=0.01", "epochs": "3", "code_hash": "abc123", "torch": "t",
                         "layout": "torch_threads=1 processes=1"})
    with open(out / "tradeoff.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    tr.main(["--from-csv", str(out / "tradeoff.csv"), "--out", str(out)])   # tradeoff.json, no training
    (out / "tradeoff.txt").write_text("the log\n")
    (out / "tradeoff.run.json").write_text(json.dumps({
        "name": "tradeoff", "command": "python benchmarks/tradeoff.py --reduced --seeds 0 1 2 --jobs 1",
        "returncode": 0, "seconds": 3600.0, "finished": "2026-01-01 00:00 UTC", "git_commit": "d5a14bd",
        "note": "trained in another worktree"}))
    ra.run("soak", [sys.executable, "-c", f"print({SOAK_OUT!r})"], str(out), timeout=60)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".json", ".txt", ".csv")}

    assert ra.main(["--from-results", "--out", str(out)]) == 0
    md = (out / "summary.md").read_text()
    # nothing ran: every record, log and row is as it was, and no overhead section was made up
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name in before}
    assert after == before and "## Overhead" not in md
    assert md.startswith("# Benchmark results (reduced settings)") and "Nothing was run by this invocation" in md
    assert "Ran at commit d5a14bd." in md and "Note: trained in another worktree." in md
    assert "finished 2026-01-01 00:00 UTC" in md and "FLAT (no leak)" in md
    assert "Code hash abc123" in md and "d: 3 epochs, 2 time steps" in md
    # the figures are the rows': baseline mean 91.0%, (100 + 120 + 110) / 3 = 110 synops; budget errors
    # |31/30 - 1|, 0, |29/30 - 1|; the target's paired differences +1, 0, +1 points: mean 0.67, 95% half-width
    # t(0.975, 2) s / sqrt(3) = 4.303 * 0.577 / 1.732 = 1.43
    assert "cross-entropy only 91.0%, 110 network-driven synops" in md
    assert "| 3.3%, 0.0%, 3.3% | 3/3 |" in md
    assert "+0.7 (-0.8 to +2.1)" in md
    # every setting, with its spread: accuracy 91.7 ± 4.303 * 0.577 / sqrt(3) points, synops 30 ± 4.303 * 1 / sqrt(3)
    assert "| d | target 30 | 3 | 91.7 ± 1.4 (91.0–92.0) | 30 ± 2 (29–31) | +0.7 (-0.8 to +2.1) | within |" in md
    # the settings come from the records, so options that would run something are refused, as is an empty folder
    for bad in (["--from-results", "--full", "--out", str(out)], ["--from-results", "--out", str(tmp_path / "none")]):
        with pytest.raises(SystemExit) as err:
            ra.main(bad)
        assert err.value.code == 2
    assert "found no benchmark record" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the energy suite (tradeoff.py --energy)

def test_energy_suite_test_figures_match_the_loss_and_counter_read_batch_by_batch(bench):
    """evaluate(extras=...) on the digits net, two test batches: the energies are the table's total and
    EnergyLoss's value, the per-sample synops are those of counter.per_sample() per batch and, for fc, spikes x 10
    counted by a hook; the percentiles are numpy's."""
    np = pytest.importorskip("numpy")
    tr, tasks = bench["tradeoff"], bench["tasks"]
    task = tasks.load_task("digits", 0)
    x, y = task.data[2][:24], task.data[3][:24]
    torch.manual_seed(0)
    net = task.make_net()
    counter = sl.SynOpsCounter(net, batch_dim=1, neurons=True, per_sample=True)
    extras: dict = {}
    result = tr.evaluate(net, counter, x, y, task.encode, time_steps=3, seed=0, batch_size=16, extras=extras)
    fed = result.data_fed
    assert fed == ["conv1"]
    # the same two batches again (same encoding), read through the live batch and the losses
    gen = torch.Generator().manual_seed(10_000)
    per_sample, energy, loss_energy, fc_inputs = [], {p: 0.0 for p in tr.ENERGY_PRESETS.values()}, \
        {p: 0.0 for p in tr.ENERGY_PRESETS.values()}, []
    hook = net.fc.register_forward_hook(lambda m, inp, out: fc_inputs.append(inp[0].detach().clone()))
    net.eval()
    with torch.no_grad():
        for i in range(0, len(y), 16):
            counter.reset()
            fc_inputs.clear()
            net(task.encode(x[i:i + 16], 3, gen))
            b = len(y[i:i + 16])
            layers = counter.per_sample(by_layer=True)
            per_sample += [sum(float(layers[n][k]) for n in layers if n not in fed) for k in range(b)]
            fc_by_hand = sum((t != 0).sum(1) for t in fc_inputs) * 10   # [b]: nonzero inputs x 10 outputs
            assert layers["fc"].tolist() == pytest.approx(fc_by_hand.tolist())
            for preset in energy:
                energy[preset] += counter.table(energy=preset).total.energy * b
                loss_fn = sl.EnergyLoss(counter, target=1.0, energy=preset, shape="hinge")
                loss_fn()
                loss_energy[preset] += loss_fn.value() * b
    hook.remove()
    for preset in energy:
        assert extras[f"energy_{preset}"] == pytest.approx(energy[preset] / len(y), rel=1e-9)
        assert extras[f"loss_energy_{preset}"] == pytest.approx(loss_energy[preset] / len(y), rel=1e-9)
    assert extras["energy_loihi-davies2018"] > extras["energy_horowitz45nm"] > 0
    assert result.driven_synops == pytest.approx(sum(per_sample) / len(y), rel=1e-6)
    for q, key in ((50, "driven_p50"), (95, "driven_p95"), (99, "driven_p99"), (100, "driven_max")):
        assert extras[key] == pytest.approx(float(np.percentile(per_sample, q)), rel=1e-6)
    counter.remove()


def test_energy_suite_tiny_run_reports_what_its_rows_hold(bench, tmp_path):
    tr = bench["tradeoff"]
    out = tmp_path / "res"
    tr.main(["--energy", "--datasets", "digits", "--seeds", "0", "1", "--epochs", "1", "--train-samples", "64",
             "--test-samples", "32", "--time-steps", "2", "--batch-size", "32", "--jobs", "1", "--out", str(out),
             "--grid-only", "--grid", "synops=0.5", "energy=0.5", "energy_loihi=0.7", "target=3000",
             "quantile=3000"])
    with open(out / "energy.csv") as f:
        rows = list(csv.DictReader(f))
    assert not (out / "tradeoff.csv").exists() and not (out / "energy.partial.csv").exists()
    assert {(r["method"], int(r["seed"])) for r in rows} == {
        (m, s) for m in ("baseline", "synops", "energy", "energy_loihi", "target", "quantile") for s in (0, 1)}
    for r in rows:
        assert not r["warnings"].startswith("ERROR"), r["warnings"]
        p = [float(r[k]) for k in ("driven_p50", "driven_p95", "driven_p99", "driven_max")]
        assert p == sorted(p) and p[-1] > 0
        if r["method"] == "quantile":   # its budget error is the test set's p95 against B
            assert float(r["target"]) == 3000.0
            assert float(r["budget_error"]) == pytest.approx(abs(float(r["driven_p95"]) / 3000.0 - 1))
        if r["method"] in ("energy", "energy_loihi"):   # a target in joules, near the loss's layers' energy
            assert 0 < float(r["target"]) < float(r["energy_" + tr.ENERGY_PRESETS[r["method"]]])
    summary = json.loads((out / "energy.json").read_text())
    by = {(r["method"], int(r["seed"])): r for r in rows}
    e = summary["settings"]["digits"]["energy_loihi 0.7"]
    vals = [float(by[("energy_loihi", s)]["energy_loihi-davies2018"]) for s in (0, 1)]
    assert e["energy_loihi-davies2018"]["mean"] == pytest.approx(sum(vals) / 2)
    assert e["energy_loihi-davies2018"]["min"] == min(vals)
    pairs = {p["energy"]: p for p in summary["matched"]["digits"]}
    assert set(pairs) == {"energy 0.5", "energy_loihi 0.7"}
    pr = pairs["energy 0.5"]
    other = pr["synops"].split()[0]
    ratios = [float(by[("energy", s)]["energy_horowitz45nm"]) / float(by[(other, s)]["energy_horowitz45nm"])
              for s in (0, 1)]
    assert pr["energy_ratio"]["horowitz45nm"]["mean"] == pytest.approx(sum(ratios) / 2)
    q = summary["quantile"]["digits"][0]
    assert (q["budget"], q["quantile"], q["target"]) == (3000.0, "quantile 3000", "target 3000")
    held = sum(float(by[("quantile", s)]["driven_p95"]) <= 3000.0 for s in (0, 1))
    assert summary["settings"]["digits"]["quantile 3000"]["p95_held"] == held
    md = (out / "energy.md").read_text()
    assert "--energy --full" in md and "was not run" in md and "Quantile budget B = 3,000" in md


def test_energy_methods_need_the_energy_suite(bench, tmp_path):
    with pytest.raises(SystemExit, match="--energy"):
        bench["tradeoff"].main(["--datasets", "digits", "--grid-only", "--grid", "energy=0.5", "--out", str(tmp_path)])

"""``synopsloss report`` end to end, through a subprocess, with a model factory on PYTHONPATH."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

FACTORIES = textwrap.dedent(
    """
    import torch
    import snntorch as snn

    def snn_net():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(18, 6), snn.Leaky(beta=0.9, init_hidden=True),
            torch.nn.Linear(6, 3), snn.Leaky(beta=0.9, init_hidden=True))

    def sinabs_net():
        import sinabs.layers as sl
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(2), torch.nn.Linear(18, 6), sl.IAF(), torch.nn.Linear(6, 3))

    def squeeze_net():
        import sinabs.layers as sl
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(18, 6), sl.IAFSqueeze(batch_size=3),
                                   torch.nn.Linear(6, 3))

    def steps_net():
        import sinabs.layers as sl
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(18, 6), sl.IAFSqueeze(num_timesteps=4),
                                   torch.nn.Linear(6, 3))

    def only_relu():
        return torch.nn.Sequential(torch.nn.ReLU())

    def lin():
        net = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False))
        with torch.no_grad():
            net[0].weight.fill_(1.0)
        return net

    not_a_model = 3
    """
)


@pytest.fixture()
def env(tmp_path):
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "models.py").write_text(FACTORIES)
    e = dict(os.environ)
    e["PYTHONPATH"] = str(tmp_path) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def _report(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "synopsloss", "report", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _first_layer_synops(x: torch.Tensor) -> float:
    """Synops of Linear(18, 6) fed the data: input value x its 6 (nonzero) weights, per sample."""
    import userpkg.models as models  # noqa: F401 (imported by the caller's sys.path)

    net = models.snn_net()
    fan = (net[1].weight != 0).sum(0).double()
    return float((x.reshape(x.shape[0], x.shape[1], 18).double() * fan).sum() / x.shape[0])


def test_report_counts_poisson_spikes_over_several_batches(env, tmp_path, monkeypatch):
    res = _report(env, "userpkg.models:snn_net", "--input-shape", "2,3,3", "--timesteps", "4", "--batch", "3",
                  "--batches", "2", "--rate", "0.25", "--seed", "7", "--format", "csv", "--energy", "loihi")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(res.stdout))}
    # the same Poisson batches, drawn independently here
    gen = torch.Generator().manual_seed(7)
    xs = torch.cat([(torch.rand((3, 4, 2, 3, 3), generator=gen) < 0.25).float() for _ in range(2)])
    monkeypatch.syspath_prepend(str(tmp_path))
    assert float(rows["1"]["synops"]) == pytest.approx(_first_layer_synops(xs))
    assert float(rows["1"]["in_rate"]) == pytest.approx(xs.mean().item())
    assert float(rows["1"]["time_steps"]) == 4
    assert rows["1"]["data_fed"] == "True"
    assert [rows[n]["kind"] for n in ("0", "1", "2", "3", "4")] == ["reshape", "synaptic", "neuron", "synaptic", "neuron"]
    assert float(rows["2"]["membrane_updates_dense"]) == 4 * 6
    assert float(rows["Total"]["synops"]) == pytest.approx(float(rows["1"]["synops"]) + float(rows["3"]["synops"]))
    assert "batches" in res.stderr  # the progress bar


def test_report_text_markdown_and_plot(env, tmp_path):
    out = tmp_path / "plot.png"
    res = _report(env, "userpkg.models:sinabs_net", "--input-shape", "2,3,3", "--timesteps", "5",
                  "--batch", "2", "--plot", str(out), "--dt", "0.001")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith("Layer") and "Synops/s" in res.stdout
    assert "IAF" in res.stdout and "neuron" in res.stdout
    assert out.read_bytes()[:4] == b"\x89PNG"
    md = _report(env, "userpkg.models:sinabs_net", "--input-shape", "2,3,3", "--timesteps", "5", "--format", "markdown")
    assert md.returncode == 0 and md.stdout.startswith("| Layer |")


def test_report_reads_a_saved_input_tensor(env, tmp_path, monkeypatch):
    x = (torch.rand(4, 3, 2, 3, 3) < 0.5).float()
    path = tmp_path / "x.pt"
    torch.save(x, path)
    res = _report(env, "userpkg.models:snn_net", "--input", str(path), "--batch", "2", "--format", "csv")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(res.stdout))}
    monkeypatch.syspath_prepend(str(tmp_path))
    assert float(rows["1"]["synops"]) == pytest.approx(_first_layer_synops(x))


@pytest.mark.parametrize("args,message", [
    (["nosuchpkg.models:snn_net", "--input-shape", "2,3,3"], "cannot import module 'nosuchpkg.models'"),
    (["userpkg.models.snn_net", "--input-shape", "2,3,3"], "PACKAGE.MODULE:FACTORY"),
    (["userpkg.models:missing", "--input-shape", "2,3,3"], "has no attribute 'missing'"),
    (["userpkg.models:not_a_model", "--input-shape", "2,3,3"], "neither an nn.Module nor a factory"),
    (["userpkg.models:snn_net", "--input-shape", "5,5"], "failed on an input of shape [8, 5, 5]"),
    (["userpkg.models:only_relu", "--input-shape", "4"], "nothing to count"),
    (["userpkg.models:snn_net", "--input-shape", "2,-3"], "--input-shape must be positive integers"),
])
def test_report_errors_say_what_is_wrong(env, args, message):
    res = _report(env, *args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_report_runs_sinabs_squeeze_models_with_time_folded_into_the_batch(env, tmp_path, monkeypatch):
    res = _report(env, "userpkg.models:squeeze_net", "--input-shape", "2,3,3", "--time-steps", "4", "--batch", "3",
                  "--rate", "0.3", "--seed", "1", "--format", "csv")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(res.stdout))}
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand((3, 4, 2, 3, 3), generator=gen) < 0.3).float()
    monkeypatch.syspath_prepend(str(tmp_path))
    # same network weights as snn_net's first Linear(18, 6) (seed 0, Flatten first): per sample, not per B*T row
    assert float(rows["1"]["synops"]) == pytest.approx(_first_layer_synops(x))
    assert float(rows["1"]["time_steps"]) == 4
    assert rows["2"]["kind"] == "neuron"


def test_report_finds_a_factory_module_in_the_current_directory(tmp_path):
    (tmp_path / "mymodels.py").write_text("import torch\n\ndef net():\n    return torch.nn.Sequential(torch.nn.Linear(4, 2))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout only: the factory's directory is not on the path
    res = _report(env, "mymodels:net", "--input-shape", "4", "--rate", "1.0", "--format", "csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(res.stdout))}
    assert float(rows["0"]["dense"]) == 4 * 2 * 20  # 4 inputs x 2 outputs per step, 20 steps (the default)


def test_report_defaults_make_leaky_neurons_fire_and_a_silent_network_is_flagged(env, tmp_path, monkeypatch):
    res = _report(env, "userpkg.models:snn_net", "--input-shape", "2,3,3", "--format", "csv")
    assert res.returncode == 0, res.stderr
    assert "no neuron fired" not in res.stderr
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(res.stdout))}
    # the same Poisson input by hand (defaults: seed 0, batch 8, 20 steps, rate 0.1), fed step by step
    monkeypatch.syspath_prepend(str(tmp_path))
    import userpkg.models as models
    from snntorch import utils

    net = models.snn_net()
    x = (torch.rand((8, 20, 2, 3, 3), generator=torch.Generator().manual_seed(0)) < 0.1).float()
    spikes = {2: 0.0, 4: 0.0}
    hooks = [net[i].register_forward_hook(lambda m, a, out, i=i: spikes.__setitem__(i, spikes[i] + float(out.sum())))
             for i in spikes]
    utils.reset(net)
    with torch.no_grad():
        for t in range(20):
            net(x[:, t])
    for h in hooks:
        h.remove()
    assert spikes[2] > 0 and spikes[4] > 0  # the defaults make both neuron layers fire
    assert float(rows["2"]["firing_rate"]) == pytest.approx(spikes[2] / (8 * 20 * 6), rel=1e-6)
    assert float(rows["4"]["firing_rate"]) == pytest.approx(spikes[4] / (8 * 20 * 3), rel=1e-6)
    # one step of one sample: no Leaky neuron reaches its threshold, and the warning names the flags to raise
    quiet = _report(env, "userpkg.models:snn_net", "--input-shape", "2,3,3", "--timesteps", "1", "--batch", "1")
    assert quiet.returncode == 0, quiet.stderr
    assert "warning: no neuron fired (neuron layers 2, 4)" in quiet.stderr
    assert "--timesteps 1, --rate 0.1" in quiet.stderr and "raise --timesteps or --rate" in quiet.stderr


@pytest.mark.parametrize("spelling", ["--time-steps", "--timesteps"])
def test_report_and_demo_accept_the_same_time_steps_option(env, spelling):
    res = _report(env, "userpkg.models:snn_net", "--input-shape", "2,3,3", spelling, "3", "--format", "csv")
    assert res.returncode == 0, res.stderr
    assert float({r["name"]: r for r in csv.DictReader(io.StringIO(res.stdout))}["1"]["time_steps"]) == 3
    from synopsloss.cli import build_parser

    args = build_parser().parse_args(["demo", spelling, "5"])
    assert args.time_steps == 5


def test_report_prints_the_mean_with_its_confidence_interval(env, tmp_path, monkeypatch):
    res = _report(env, "userpkg.models:snn_net", "--input-shape", "2,3,3", "--timesteps", "4", "--batch", "3",
                  "--batches", "2", "--rate", "0.25", "--seed", "7", "--energy", "none")
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("Synops per sample over 6 samples"))
    # the first layer's per-sample synops are fixed by the data; the mean line covers every layer
    gen = torch.Generator().manual_seed(7)
    xs = torch.cat([(torch.rand((3, 4, 2, 3, 3), generator=gen) < 0.25).float() for _ in range(2)])
    monkeypatch.syspath_prepend(str(tmp_path))
    mean = float(line.split("mean ")[1].split(" ")[0].replace(",", ""))
    assert mean >= _first_layer_synops(xs) - 0.1
    assert "95% CI" in line and "p95" in line


@pytest.mark.parametrize("case", ["nan", "empty", "plot"])
def test_report_bad_data_and_paths_give_one_line(env, tmp_path, case):
    """NaN in the input, an input without samples, a plot path in a missing directory: one error line, status 2."""
    x = torch.ones(3, 2, 4)
    if case == "nan":
        x[1, 0, 2] = float("nan")
    elif case == "empty":
        x = torch.ones(0, 2, 4)
    path = tmp_path / "x.pt"
    torch.save(x, path)
    extra = ["--plot", str(tmp_path / "missing" / "p.png")] if case == "plot" else []
    res = _report(env, "userpkg.models:lin", "--input", str(path), *extra)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    want = {"nan": "NaN or inf in the input of layer '0'", "empty": "--input holds 0 samples",
            "plot": "cannot save the plot to"}[case]
    assert want in res.stderr


def test_report_folded_feed_without_squeeze_layers_stays_per_sample(env, tmp_path):
    """``--feed folded`` on a plain model: the counter is told each batch's samples, so the numbers are per
    sample (by hand: every input value 1 reaches 3 synapses, 4 inputs x 2 steps: 24 per sample), not per step."""
    path = tmp_path / "x.pt"
    torch.save(torch.ones(3, 2, 4), path)
    for feed in ("steps", "folded"):
        res = _report(env, "userpkg.models:lin", "--input", str(path), "--feed", feed, "--format", "csv")
        assert res.returncode == 0, res.stderr
        rows = {r["name"]: r for r in csv.DictReader(io.StringIO(res.stdout))}
        assert float(rows["0"]["synops"]) == 24.0


def test_report_says_the_poisson_options_are_unused_with_an_input_file(env, tmp_path):
    path = tmp_path / "x.pt"
    torch.save(torch.ones(3, 2, 4), path)
    res = _report(env, "userpkg.models:lin", "--input", str(path), "--batches", "5", "--rate", "0.5")
    assert res.returncode == 0, res.stderr
    assert "--batches, --rate set the Poisson input; with --input FILE they are not used" in res.stderr
    res = _report(env, "userpkg.models:lin", "--input", str(path))
    assert "Poisson input" not in res.stderr


def test_a_folded_feed_of_a_plain_model_runs_the_same_steps_as_a_stepped_one(env):
    """``--feed folded`` on a model without time-folding layers: the counter is told the input folds time, so
    every row shows T steps and the same per-step rates as the stepped feed of the same data."""
    tables = {}
    for feed in ("steps", "folded"):
        out = _report(env, "userpkg.models:lin", "--input-shape", "4", "--timesteps", "7", "--batch", "3",
                      "--rate", "0.3", "--dt", "1e-3", "--feed", feed, "--format", "csv", "--no-progress")
        assert out.returncode == 0, out.stderr
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        tables[feed] = {r["name"]: r for r in rows}
    for feed, table in tables.items():
        for name in ("0", "Total"):
            row = table[name]
            assert float(row["time_steps"]) == 7.0, (feed, name)
            assert float(row["synops_per_step"]) == pytest.approx(float(row["synops"]) / 7, rel=1e-9)
    assert float(tables["folded"]["0"]["synops"]) == pytest.approx(float(tables["steps"]["0"]["synops"]), rel=1e-9)


def test_a_short_last_batch_of_a_fixed_batch_squeeze_model_is_refused(env, tmp_path):
    """--input of 8 samples of 3 steps in batches of 3: the last batch has 2 samples (6 rows), which
    IAFSqueeze(batch_size=3) would read as 3 samples of 2 steps; the report refuses it and says how to fix it."""
    x = (torch.rand(8, 3, 2, 3, 3, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    torch.save(x, tmp_path / "x.pt")
    res = _report(env, "userpkg.models:squeeze_net", "--input", str(tmp_path / "x.pt"), "--batch", "3",
                  "--feed", "folded", "--format", "csv")
    assert res.returncode != 0
    assert "a batch of 2 samples was read as 3 samples" in res.stderr and "multiple of --batch" in res.stderr
    torch.save(x[:6], tmp_path / "x6.pt")
    ok = _report(env, "userpkg.models:squeeze_net", "--input", str(tmp_path / "x6.pt"), "--batch", "3",
                 "--feed", "folded", "--format", "csv")
    assert ok.returncode == 0, ok.stderr


def test_an_input_file_of_python_objects_is_refused_without_torchs_unpickling_advice(env, tmp_path):
    """torch.load(weights_only=True) refuses pickled objects and suggests weights_only=False; the report says what the
    file holds and how to save the spikes instead (it does not unpickle objects)."""
    path = tmp_path / "objects.pt"
    code = ("import torch, fractions; torch.save([fractions.Fraction(1, 3), torch.ones(2)], "
            f"{str(path)!r})")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    res = _report(env, "userpkg.models:lin", "--input", str(path))
    assert res.returncode == 2
    assert "holds Python objects, not one tensor" in res.stderr and "torch.save(spikes, path)" in res.stderr
    assert "weights_only=False" not in res.stderr and "Traceback" not in res.stderr


def test_report_names_the_time_steps_a_time_folding_layer_was_built_for(env):
    """IAFSqueeze(num_timesteps=4) run with --timesteps 8: the error blamed a fixed batch size and --input (not
    given) and advised num_timesteps=, which the layers already use. It now names the --timesteps to pass."""
    res = _report(env, "userpkg.models:steps_net", "--input-shape", "2,3,3", "--timesteps", "8", "--batch", "3")
    assert res.returncode == 2
    assert "built for num_timesteps=4, and --timesteps is 8. Pass --timesteps 4" in res.stderr
    res = _report(env, "userpkg.models:steps_net", "--input-shape", "2,3,3", "--timesteps", "4", "--batch", "3",
                  "--format", "csv")
    assert res.returncode == 0, res.stderr

"""``ef21-mpi sweep``: grid expansion, file names, and resuming (skip final logs, rerun unfinished ones)."""

from __future__ import annotations

import fcntl
import json
import math
import re
import sys
from dataclasses import replace

import h5py
import pytest
from helpers import write_pm1_libsvm as write_libsvm

from ef21_mpi.analysis.grid import Config, expand_grid, validate_grid
from ef21_mpi.analysis.results import load_run
from ef21_mpi.analysis.sweep import command
from ef21_mpi.cli.main import build_parser, main
from ef21_mpi.cli.sweep import grid_from_args
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.config import RunConfig


def test_expand_grid_is_the_product_of_the_flags():
    configs = expand_grid(["a9a", "w8a"], ["ef", "ef21", "gd"], [1, 2.5], [1, 4], 100, tol=1e-7, log_every=5)
    expected = [(ds, alg, k, m) for ds in ("a9a", "w8a") for alg in ("ef", "ef21") for k in (1, 4) for m in (1, 2.5)]
    expected += [(ds, "gd", d, m) for ds, d in (("a9a", 123), ("w8a", 300)) for m in (1, 2.5)]
    got = [(c.dataset, c.algorithm, c.k, c.multiplier) for c in configs]
    assert sorted(got) == sorted(expected) and len(got) == 20
    assert all(c.rounds == 100 and c.tol == 1e-7 and c.log_every == 5 for c in configs)
    names = {c.name for c in configs}
    assert len(names) == 20
    assert {"a9a__ef21__top-4__x2.5.h5", "w8a__gd__x1.h5", "a9a__ef__top-1__x1.h5"} <= names


def test_bits_budget_gives_every_k_the_same_bits():
    configs = expand_grid(["phishing"], ["ef21", "ef", "gd"], [1], [1, 2, 3], bits_budget=6400)
    # EF21: rounds 1..R count (round 0 is the initialisation); EF and GD: rounds 0..R count
    assert [(c.algorithm, c.k, c.rounds) for c in configs] == [
        ("ef21", 1, 200), ("ef21", 2, 100), ("ef21", 3, math.floor(6400 / 96)),
        ("ef", 1, 199), ("ef", 2, 99), ("ef", 3, math.floor(6400 / 96) - 1), ("gd", 68, 1)]
    capped = expand_grid(["phishing"], ["ef21"], [1], [1, 2], rounds=150, bits_budget=6400)
    assert [c.rounds for c in capped] == [150, 100]
    with pytest.raises(InputError):
        expand_grid(["phishing"], ["ef21"], [1], [1])


def test_flags_override_the_json_grid(tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"datasets": ["a9a", "phishing"], "algorithms": ["ef21"], "multipliers": [1, 2],
                                "k": 2, "rounds": 50, "log-every": 10}))
    args = build_parser().parse_args(["sweep", "--out-dir", str(tmp_path), "--grid", str(grid),
                                      "--multipliers", "4,8,16", "--tol", "1e-6"])
    g = grid_from_args(args)
    assert (g["dataset"], g["algorithm"], g["stepsize_multiplier"], g["k"]) == (["a9a", "phishing"], ["ef21"],
                                                                                [4.0, 8.0, 16.0], 2)
    assert (g["rounds"], g["log_every"], g["tol"], g["workers"]) == (50, 10, 1e-6, [20])
    grid.write_text(json.dumps({"datasets": ["a9a"], "rounds": 5, "stepsize_mult": 1}))
    with pytest.raises(InputError, match="unknown key"):
        grid_from_args(args)
    bad = build_parser().parse_args(["sweep", "--out-dir", str(tmp_path), "--datasets", "a9a", "--rounds", "5",
                                     "--algorithms", "ef22"])
    with pytest.raises(InputError, match="ef22"):
        grid_from_args(bad)


def test_launcher_template():
    config = Config.of(100, dataset="a9a", algorithm="ef21", k=1, stepsize_multiplier=4.0, workers=20)
    cmd = command(config, "out.h5", None, "mpiexec -n {n+1}")
    assert cmd[:4] == ["mpiexec", "-n", "21", sys.executable] and cmd[-2:] == ["--backend", "mpi"]
    serial = command(config, "out.h5", None, None)
    assert serial[0] == sys.executable and "--workers" in serial and serial[serial.index("--backend") + 1] == "serial"


def test_sweep_runs_skips_and_resumes(tmp_path, capsys):
    data = tmp_path / "syn.svm"
    write_libsvm(data)
    out = tmp_path / "runs"
    argv = ["sweep", "--out-dir", str(out), "--datasets", str(data), "--algorithms", "ef,ef21", "--k", "2",
            "--multipliers", "2", "--rounds", "20", "--workers", "4", "--jobs", "2"]
    assert main(argv) == 0
    logs = [out / "syn__ef__top-2__x2__workers-4.h5", out / "syn__ef21__top-2__x2__workers-4.h5"]
    for log in logs:
        run = load_run(log)
        assert run.status == "completed" and run.rows == 21 and run.attrs["n_workers"] == 4
        assert run.attrs["k"] == 2 and run.attrs["stepsize_multiplier"] == pytest.approx(2.0)
    text = capsys.readouterr().out
    assert "[2/2]" in text and "2 completed" in text
    mtimes = [log.stat().st_mtime_ns for log in logs]

    assert main(argv) == 0  # nothing to do: both logs are final
    assert [log.stat().st_mtime_ns for log in logs] == mtimes
    text = capsys.readouterr().out
    assert text.count("skipped, log exists (completed)") == 2 and "2 skipped" in text

    with h5py.File(logs[1], "r+") as f:  # as if the sweep had been killed during this run
        f.attrs["status"] = "running"
    assert main(argv) == 0
    assert logs[0].stat().st_mtime_ns == mtimes[0]
    assert load_run(logs[1]).status == "completed" and load_run(logs[1]).rows == 21
    assert "1 completed, 1 skipped" in capsys.readouterr().out


def test_sweep_fails_only_when_a_run_fails(tmp_path, capsys):
    data = tmp_path / "syn.svm"
    write_libsvm(data)
    argv = ["sweep", "--out-dir", str(tmp_path / "runs"), "--datasets", str(data), "--algorithms", "ef21",
            "--k", "20", "--rounds", "5", "--workers", "4"]  # k > d = 8: the run rejects it
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "1 failed" in captured.out and "syn__ef21__top-20__x1__workers-4.h5 failed" in captured.err


GRID = {"datasets": ["a9a"], "algorithms": ["ef21"], "multipliers": [1.0], "k": [1], "rounds": 5, "tol": 0.0,
        "log_every": 1, "workers": 20}


@pytest.mark.parametrize("key, value, message", [
    ("algorithms", ["ef22"], "a9a__ef22__top-1__x1.h5: --algorithm 'ef22' is not known; expected one of ef21, "),
    ("log_every", 0, "--log-every must be at least 1, got 0"),
    ("multipliers", [-1.0], "--stepsize-multiplier must be a positive finite number, got -1.0"),
    ("tol", float("nan"), "--tol must be a non-negative finite number"),
    ("workers", 0, "--workers must be at least 1, got 0"),
    ("rounds", -1, "--rounds must be non-negative, got -1"),
    ("k", [0], "--k must be at least 1, got 0"),
    ("multipliers", ["x"], "stepsize multiplier 'x' must be a number"),
    ("k", [True], "k True must be an integer"),
    ("bits_budget", -1.0, "bits_budget must be a non-negative number"),
    ("k", [124], "k = 124 exceeds d = 123 of a9a"),
    ("algorithms", ["ef21-sgd"], "--algorithm ef21-sgd needs --batch-size TAU"),
])
def test_grid_values_are_checked_as_the_runs_they_become(key, value, message):
    validate_grid(GRID)
    with pytest.raises(InputError, match=re.escape(message)):
        validate_grid({**GRID, key: value})


@pytest.mark.parametrize("algorithm, k", [("ef21", 3), ("gd", 123)])
def test_run_args_say_what_run_config_is(tmp_path, algorithm, k):
    """The subprocess's flags, read by `ef21-mpi run`, give the configuration the sweep validated."""
    config = Config.of(30, tol=1e-6, log_every=5, dataset="a9a", algorithm=algorithm, k=k, stepsize_multiplier=2.0,
                       workers=4)
    out = tmp_path / config.name
    argv = command(config, out, "some/dir", None)
    args = build_parser().parse_args(argv[argv.index("run"):])
    parsed = RunConfig(**{name: getattr(args, name) for name in RunConfig.field_names() if hasattr(args, name)})
    assert parsed == replace(config.run_config(out, "some/dir"), backend="serial")


# --- issue 17: a sweep never reports a failure as a success; one log per configuration ---------------------


def _sweep_argv(out, data, rounds):
    return ["sweep", "--out-dir", str(out), "--datasets", str(data), "--algorithms", "ef21", "--k", "2",
            "--rounds", str(rounds), "--workers", "4", "--jobs", "1"]


def test_a_refused_run_over_an_older_complete_log_is_a_failure(tmp_path, capsys):
    """The run with 6 rounds fails on bad data; the 5-round log left from before must not make it 'completed'."""
    data = tmp_path / "syn.svm"
    write_libsvm(data)
    out = tmp_path / "runs"
    assert main(_sweep_argv(out, data, 5)) == 0
    log = out / "syn__ef21__top-2__x1__workers-4.h5"
    before = log.read_bytes()
    data.write_text("1 1:1\n1 2:x\n")  # unreadable data now
    capsys.readouterr()
    assert main(_sweep_argv(out, data, 6)) == 1
    captured = capsys.readouterr()
    assert "1 failed" in captured.out and "completed" not in captured.out.split("finished")[-1]
    assert "is not a number" in captured.err
    assert log.read_bytes() == before  # the refused run left the older log alone


def test_a_run_refused_by_the_lock_is_a_failure(tmp_path, capsys):
    data = tmp_path / "syn.svm"
    write_libsvm(data)
    out = tmp_path / "runs"
    assert main(_sweep_argv(out, data, 5)) == 0
    log = out / "syn__ef21__top-2__x1__workers-4.h5"
    with open(out / f".{log.name}.lock", "a") as held:  # another job is writing this log
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        capsys.readouterr()
        assert main(_sweep_argv(out, data, 6)) == 1
    captured = capsys.readouterr()
    assert "1 failed" in captured.out and "being written by a running job" in captured.err
    assert load_run(log).attrs["rounds_requested"] == 5


def test_log_names_are_one_per_configuration(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_libsvm(a / "set.train.svm")
    write_libsvm(b / "set.test.svm", seed=1)
    with pytest.raises(InputError, match="two configurations would share the log set__ef21__top-1__x1.h5"):
        validate_grid({**GRID, "datasets": [str(a / "set.train.svm"), str(b / "set.test.svm")]})
    write_libsvm(a / "phishing.t")
    with pytest.raises(InputError, match="would share the log phishing__ef21"):
        validate_grid({**GRID, "datasets": ["phishing", str(a / "phishing.t")]})
    multipliers = [1.0, 1.0000001, 1e-7, 1.00000001e-7]  # alike under %g
    names = [c.name for c in expand_grid(["a9a"], ["ef21"], multipliers, [1], 5)]
    assert len(set(names)) == 4 and names[0] == "a9a__ef21__top-1__x1.h5"
    validate_grid({**GRID, "multipliers": multipliers})


@pytest.mark.parametrize("key, value", [("multipliers", [True]), ("k", [False]), ("rounds", True), ("tol", False),
                                        ("workers", True), ("log_every", True), ("bits_budget", True),
                                        ("datasets", [True]), ("datasets", [7])])
def test_grid_refuses_booleans_and_non_strings(key, value):
    with pytest.raises(InputError):
        validate_grid({**GRID, key: value})


# --- issue 15: any run option is an axis; names show every varied option ------------------------------------

def test_any_run_option_is_an_axis_and_unused_options_are_dropped():
    configs = expand_grid(["a9a"], ["ef21", "gd", "ef21-hb"], [2], [1, 4], 10, compressors=["top-k", "rand-k"],
                          seeds=[0, 1], x0="normal", momentum=[0.5, 0.9])
    by_algorithm = {a: [c for c in configs if c.algorithm == a] for a in ("ef21", "gd", "ef21-hb")}
    # EF21: 2 compressors x 2 k x 2 seeds (momentum is not its option); GD: 2 seeds only; EF21-HB: 2 x 2 x 2 x 2
    assert [len(by_algorithm[a]) for a in ("ef21", "gd", "ef21-hb")] == [8, 2, 16]
    assert len(configs) == 26 and len({c.name for c in configs}) == 26
    assert all("momentum" not in c.options for c in by_algorithm["ef21"] + by_algorithm["gd"])
    assert all("compressor" not in c.options and c.k == 123 for c in by_algorithm["gd"])
    names = {c.name for c in configs}
    assert {"a9a__ef21__rand-4__x2__x0-normal__seed-1.h5", "a9a__gd__x2__x0-normal__seed-0.h5",
            "a9a__ef21-hb__top-1__x2__x0-normal__seed-0__momentum-0.9.h5"} <= names
    # a default value is named when its axis varies (seed-0 above), and left out when it does not
    (single,) = expand_grid(["a9a"], ["ef21"], [1], [1], 10, seeds=[0], lams=[0.1], workers=[20])
    assert single.name == "a9a__ef21__top-1__x1.h5"


def test_log_name_of_options():
    from ef21_mpi.analysis.grid import log_name

    base = {"dataset": "a9a", "algorithm": "ef21", "compressor": "top-k", "k": 1, "stepsize_multiplier": 4.0}
    assert log_name(base) == "a9a__ef21__top-1__x4.h5"
    assert log_name({**base, "seed": 3, "lam": 0.0, "problem": "least-squares"}) == \
        "a9a__ef21__top-1__x4__problem-least-squares__lam-0__seed-3.h5"
    assert log_name({**base, "compressor": "rand-k-unbiased", "k": 2}) == "a9a__ef21__rand-2-unbiased__x4.h5"
    assert log_name({**base, "compressor": "dithering", "levels": 4}) == "a9a__ef21__dithering__x4__levels-4.h5"
    assert log_name({**base, "stepsize": 0.5}) == "a9a__ef21__top-1__gamma-0.5.h5"
    assert log_name({**base, "dataset": "/data/sets/my.train.svm", "x0": "/tmp/start.npy"}) == \
        "my__ef21__top-1__x4__x0-start.h5"
    assert log_name({**base, "seed": 0}, varied=["seed"]) == "a9a__ef21__top-1__x4__seed-0.h5"


def test_sweep_flags_parse_typed_lists(tmp_path):
    args = build_parser().parse_args(["sweep", "--out-dir", str(tmp_path), "--datasets", "a9a", "--rounds", "5",
                                      "--algorithms", "ef21,ef21-pp", "--seeds", "0,1,2", "--lams", "0,0.1",
                                      "--participation", "0.5", "--x0", "zeros,normal", "--shuffle", "true"])
    g = grid_from_args(args)
    assert (g["seed"], g["lam"], g["participation"], g["x0"], g["shuffle"]) == (
        [0, 1, 2], [0.0, 0.1], [0.5], ["zeros", "normal"], [True])
    from ef21_mpi.analysis.grid import configs_of

    configs = configs_of(g)
    assert len(configs) == 2 * 3 * 2 * 2
    assert {c.get("participation") for c in configs} == {None, 0.5}
    bad = build_parser().parse_args(["sweep", "--out-dir", str(tmp_path), "--datasets", "a9a", "--rounds", "5",
                                     "--seeds", "0,one"])
    with pytest.raises(InputError, match=re.escape("sweep --seed 'one': expected an integer")):
        grid_from_args(bad)


@pytest.mark.parametrize("options", [
    {"algorithm": "ef21-hb", "momentum": 0.9, "x0": "normal", "seed": 3, "lam": 0.05, "shuffle": True},
    {"algorithm": "ef21", "compressor": "dithering", "levels": 2, "init": "zero", "problem": "least-squares"},
    {"algorithm": "ef21-bc", "down_compressor": "top-k", "down_k": 2, "k": 3, "stepsize": 0.25},
    {"algorithm": "ef21-sgdm", "batch_size": 8, "momentum": 0.5, "compressor": "rand-k", "k": 2},
])
def test_run_args_of_any_option_say_what_run_config_is(tmp_path, options):
    (config,) = expand_grid(["a9a"], [options.pop("algorithm")], [2.0], [options.pop("k", 1)], 30,
                            workers=5, **options)
    argv = command(config, tmp_path / config.name, None, None)
    args = build_parser().parse_args(argv[argv.index("run"):])
    parsed = RunConfig(**{name: getattr(args, name) for name in RunConfig.field_names() if hasattr(args, name)})
    assert parsed == replace(config.run_config(tmp_path / config.name), backend="serial")


def test_a_seed_sweep_gives_the_runs_of_simulate(tmp_path, capsys):
    """Each log of a sweep over seeds and compressors equals, bit for bit, the run made directly with its options."""
    import numpy as np

    import ef21_mpi

    data = tmp_path / "syn.svm"
    write_libsvm(data)
    out = tmp_path / "runs"
    argv = ["sweep", "--out-dir", str(out), "--datasets", str(data), "--algorithms", "ef21", "--compressors",
            "rand-k,top-k", "--k", "2", "--seeds", "0,1", "--x0", "normal", "--rounds", "15", "--workers", "3"]
    assert main(argv) == 0
    names = sorted(p.name for p in out.glob("*.h5"))
    assert names == [f"syn__ef21__{c}-2__x1__workers-3__x0-normal__seed-{s}.h5" for c in ("rand", "top") for s in (0, 1)]
    for compressor in ("rand-k", "top-k"):
        for seed in (0, 1):
            swept = load_run(out / f"syn__ef21__{compressor[:-2]}-2__x1__workers-3__x0-normal__seed-{seed}.h5")
            direct = ef21_mpi.simulate(dataset=str(data), algorithm="ef21", compressor=compressor, k=2, seed=seed,
                                       x0="normal", rounds=15, workers=3, out=tmp_path / "direct.h5", overwrite=True)
            assert swept.attrs["seed"] == seed and swept.attrs["compressor"] == compressor
            for field in ("grad_norm_sq", "bits_up", "x_final", "loss"):
                assert np.array_equal(getattr(swept, field), getattr(direct, field)), (compressor, seed, field)
    s0 = load_run(out / "syn__ef21__rand-2__x1__workers-3__x0-normal__seed-0.h5")
    s1 = load_run(out / "syn__ef21__rand-2__x1__workers-3__x0-normal__seed-1.h5")
    assert not np.array_equal(s0.grad_norm_sq, s1.grad_norm_sq)  # the seed reached the run
    capsys.readouterr()
    assert main(argv) == 0 and "4 skipped" in capsys.readouterr().out


def test_a_log_of_another_configuration_under_the_same_name_is_rerun(tmp_path):
    from ef21_mpi.analysis.sweep import log_state

    data = tmp_path / "syn.svm"
    write_libsvm(data)
    (config,) = expand_grid([str(data)], ["ef21"], [1], [2], 5, workers=3, lam=0.05)
    import ef21_mpi

    ef21_mpi.simulate(dataset=str(data), algorithm="ef21", k=2, rounds=5, workers=3, lam=0.05, out=tmp_path / config.name)
    assert log_state(tmp_path / config.name, config) == "completed"
    ef21_mpi.simulate(dataset=str(data), algorithm="ef21", k=2, rounds=5, workers=3, lam=0.05, init="zero",
                      out=tmp_path / config.name, overwrite=True)
    assert log_state(tmp_path / config.name, config) == "changed"


def test_a_pooled_sweep_writes_the_logs_of_a_subprocess_sweep(tmp_path, capsys):
    """--pool runs each configuration in a long-lived process: the same logs, bit for bit, and the same verdicts."""
    import numpy as np

    data = tmp_path / "syn.svm"
    write_libsvm(data)
    argv = ["--datasets", str(data), "--algorithms", "ef21,ef", "--compressors", "rand-k,top-k", "--k", "2",
            "--seeds", "0,1", "--rounds", "12", "--workers", "3", "--jobs", "2"]
    assert main(["sweep", "--out-dir", str(tmp_path / "sub"), *argv]) == 0
    assert main(["sweep", "--out-dir", str(tmp_path / "pool"), "--pool", *argv]) == 0
    names = sorted(p.name for p in (tmp_path / "sub").glob("*.h5"))
    assert len(names) == 8 and names == sorted(p.name for p in (tmp_path / "pool").glob("*.h5"))
    for name in names:
        a, b = load_run(tmp_path / "sub" / name), load_run(tmp_path / "pool" / name)
        assert a.status == b.status == "completed"
        for field in ("grad_norm_sq", "loss", "bits_up", "x_final"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (name, field)
    capsys.readouterr()
    bad = ["sweep", "--out-dir", str(tmp_path / "bad"), "--pool", "--datasets", str(data), "--algorithms", "ef21",
           "--k", "20", "--rounds", "5", "--workers", "3"]  # k > d: the run refuses it in the pool worker
    assert main(bad) == 1
    captured = capsys.readouterr()
    assert "1 failed" in captured.out
    assert "syn__ef21__top-20__x1__workers-3.h5 failed: --k 20 is out of range for this data set" in captured.err


def test_a_killed_pool_worker_is_a_failed_run_not_a_crash(tmp_path, capsys):
    """SIGKILL to the pool's worker processes: the sweep reports its runs failed (exit 1) and a rerun resumes."""
    import os
    import signal
    import subprocess
    import threading

    data = tmp_path / "syn.svm"
    write_libsvm(data)
    argv = ["sweep", "--out-dir", str(tmp_path / "runs"), "--pool", "--jobs", "1", "--datasets", str(data),
            "--algorithms", "ef21", "--seeds", "0,1,2", "--rounds", "200000", "--workers", "3", "--log-every", "1000"]

    def kill_workers():
        for _ in range(300):
            found = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "spawn_main"], capture_output=True,
                                   text=True, check=False)
            children = [int(pid) for pid in found.stdout.split()]
            if children and (tmp_path / "runs" / "syn__ef21__top-1__x1__workers-3__seed-0.h5").exists():
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
                return
            threading.Event().wait(0.1)

    killer = threading.Thread(target=kill_workers)
    killer.start()
    assert main(argv) == 1
    killer.join()
    captured = capsys.readouterr()
    assert "the pool's worker process died" in captured.err and "Traceback" not in captured.err

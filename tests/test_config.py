"""Configuration and first contact (issue 15, parts 6 and 7): ``run --config run.toml`` (flags win over the file,
the file over the defaults), ``rerun LOG`` (the stored configuration again, bit for bit), the output folder made
by ``run``, every default in ``run --help``, and a warning for each option the chosen method ignores."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import VOLATILE_ATTRS, assert_same_log, ef21, program_stderr, read_file, write_libsvm

import ef21_mpi
from ef21_mpi.cli.main import build_parser, main
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.config import RunConfig, ignored_options
from ef21_mpi.runtime.configfile import read_config_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PLUGIN_ENV = {"PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
WARNING = "ef21-mpi: warning: "


@pytest.fixture
def data(tmp_path):
    return write_libsvm(tmp_path / "small.svm", N=80, d=14, seed=9)


def flags(data, out, *extra: str) -> list[str]:
    return ["run", "--dataset", str(data), "--workers", "4", "--rounds", "30", "--k", "2", "--seed", "3", "--quiet",
            "--out", str(out), *extra]


def run_ok(command: list[str], **kw):
    done = ef21(command, **kw)
    assert done.returncode == 0, done.stderr
    return done


def toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def attrs(path) -> dict:
    return read_file(path)[1]


# --- run --config -----------------------------------------------------------------------------------------------


def test_a_config_file_writes_the_log_its_flags_write(data, tmp_path):
    """Hyphens or underscores, an integer where a number is expected: the same log, the same stored config."""
    config = toml(tmp_path / "run.toml", f'dataset = "{data}"\nworkers = 4\nrounds = 30\nk = 2\nseed = 3\n'
                  'quiet = true\nalgorithm = "ef21"\ncompressor = "rand-k"\nstepsize-multiplier = 4\n'
                  'x0 = "normal"\nlog_every = 3\n')
    run_ok(["run", "--config", str(config), "--out", str(tmp_path / "file.h5")])
    run_ok(flags(data, tmp_path / "flags.h5", "--compressor", "rand-k", "--stepsize-multiplier", "4",
                 "--x0", "normal", "--log-every", "3"))
    assert_same_log(tmp_path / "flags.h5", tmp_path / "file.h5")
    assert attrs(tmp_path / "file.h5")["config"] == attrs(tmp_path / "flags.h5")["config"]


def test_flags_win_over_the_file_and_the_file_over_the_defaults(data, tmp_path):
    config = toml(tmp_path / "run.toml", f'dataset = "{data}"\nworkers = 4\nrounds = 12\nk = 3\nseed = 5\n'
                  f'out = "{tmp_path / "from-file.h5"}"\nquiet = true\n')
    run_ok(["run", "--config", str(config), "--rounds", "7", "--seed", "0", "--out", str(tmp_path / "x.h5")])
    a = attrs(tmp_path / "x.h5")
    assert (a["rounds_requested"], a["seed"], a["k"], a["n_workers"]) == (7, 0, 3, 4)
    assert a["lam"] == 0.1 and a["algorithm"] == "ef21"  # defaults where neither sets them
    assert not (tmp_path / "from-file.h5").exists()


def test_a_compressor_arg_table_is_the_flags_compressor_args(tmp_path):
    data = write_libsvm(tmp_path / "small.svm", N=48, d=10, seed=4)
    config = toml(tmp_path / "run.toml", 'compressor = "block_top_k:BlockTopK"\ncompressor-arg = {block = 3}\n')
    common = ["--dataset", str(data), "--workers", "4", "--rounds", "20", "--quiet"]
    run_ok(["run", "--config", str(config), *common, "--out", str(tmp_path / "file.h5")], env=PLUGIN_ENV)
    run_ok(["run", *common, "--compressor", "block_top_k:BlockTopK", "--compressor-arg", "block=3",
            "--out", str(tmp_path / "flags.h5")], env=PLUGIN_ENV)
    assert_same_log(tmp_path / "flags.h5", tmp_path / "file.h5")
    assert attrs(tmp_path / "file.h5")["compressor_args"] == '{"block": 3}'
    assert read_config_file(config) == {"compressor": "block_top_k:BlockTopK", "compressor_args": {"block": 3}}


BAD_FILES = {
    "unknown-key": ('datasets = "a9a"\n', ["unknown key 'datasets'", "did you mean dataset?"]),
    "wrong-type": ('k = "5"\n', ["key 'k' expects an integer", "'5'"]),
    "float-for-int": ("rounds = 10.5\n", ["key 'rounds' expects an integer"]),
    "bool-for-int": ("seed = true\n", ["key 'seed' expects an integer"]),
    "table-for-text": ("dataset = {a = 1}\n", ["key 'dataset' expects a string"]),
    "bad-arg": ("compressor-arg = {block = [1, 2]}\n", ["key compressor-arg.block expects"]),
    "arg-not-a-table": ('compressor-arg = "block=3"\n', ["key 'compressor-arg' expects a table"]),
    "twice": ("log-every = 2\nlog_every = 3\n", ["key 'log_every' sets log-every a second time"]),
    "invalid-toml": ('dataset = "a9a\n', ["not valid TOML", "line 1"]),
    "not-utf8": (b"k = 1\n\xff\n", ["not UTF-8"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_config_files_are_one_line_errors(case, tmp_path, capsys):
    text, fragments = BAD_FILES[case]
    path = tmp_path / "run.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ef21-mpi: error: --config {path}: "), err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "x.h5").exists()


def test_missing_or_folder_config_files(tmp_path, capsys):
    for path, fragment in ((tmp_path / "none.toml", "no such file"), (tmp_path, "is a folder")):
        assert main(["run", "--config", str(path)]) == 2
        assert fragment in capsys.readouterr().err
    assert main(["run", "--config", str(toml(tmp_path / "a.toml", "")), "--resume", "x.h5"]) == 2
    assert "--config cannot be used with --resume" in capsys.readouterr().err


def test_simulate_takes_a_config_file(data, tmp_path):
    config = toml(tmp_path / "run.toml", f'dataset = "{data}"\nworkers = 4\nrounds = 50\nk = 2\nseed = 3\n'
                  'compressor = "rand-k"\n')
    result = ef21_mpi.simulate(config=config, rounds=30, quiet=True, out=tmp_path / "api.h5")
    run_ok(flags(data, tmp_path / "cli.h5", "--compressor", "rand-k", "--backend", "serial"))
    assert_same_log(tmp_path / "cli.h5", result.path)
    with pytest.raises(InputError, match="unknown key 'k-value'"):
        ef21_mpi.simulate(config=toml(tmp_path / "bad.toml", "k-value = 1\n"))


@pytest.mark.mpi
def test_a_config_file_under_mpi_equals_the_serial_run(data, tmp_path):
    config = toml(tmp_path / "run.toml", f'dataset = "{data}"\nworkers = 4\nrounds = 30\nk = 2\nseed = 3\n'
                  f'quiet = true\ncompressor = "rand-k"\nout = "{tmp_path / "mpi.h5"}"\n')
    run_ok(["run", "--config", str(config)], ranks=3)
    run_ok(flags(data, tmp_path / "serial.h5", "--compressor", "rand-k", "--backend", "serial"))
    assert_same_log(tmp_path / "serial.h5", tmp_path / "mpi.h5")
    assert attrs(tmp_path / "mpi.h5")["backend"] == "mpi"


# --- rerun ------------------------------------------------------------------------------------------------------

RERUN_CASES = {
    "ef21-top-k": [],
    "ef21-rand-k-x0-normal": ["--compressor", "rand-k", "--x0", "normal"],
    "ef21-sgd": ["--algorithm", "ef21-sgd", "--batch-size", "3", "--log-every", "4"],
}


@pytest.mark.parametrize("case", sorted(RERUN_CASES))
def test_rerun_reproduces_the_log_bit_for_bit(case, data, tmp_path):
    original = tmp_path / "logs" / "run.h5"
    run_ok(flags(data, original, *RERUN_CASES[case]))
    done = run_ok(["rerun", str(original)])
    again = tmp_path / "logs" / "run.rerun.h5"
    assert f"rerunning {original} into {again}" in done.stderr
    assert_same_log(original, again)
    refused = ef21(["rerun", str(original), "--quiet"])  # the default name is taken now
    assert refused.returncode == 2 and "already exists; pass --overwrite" in refused.stderr
    run_ok(["rerun", str(original), "--quiet", "--overwrite"])
    assert_same_log(original, again)


@pytest.mark.mpi
def test_rerun_of_a_serial_log_under_mpi(data, tmp_path):
    original = tmp_path / "run.h5"
    run_ok(flags(data, original, "--compressor", "rand-k", "--x0", "normal"))
    run_ok(["rerun", str(original), "--out", str(tmp_path / "new" / "mpi.h5"), "--quiet"], ranks=5)
    assert_same_log(original, tmp_path / "new" / "mpi.h5")


def test_rerun_refusals(data, tmp_path):
    original = tmp_path / "run.h5"
    run_ok(flags(data, original))
    before = original.read_bytes()
    for command, fragment in (
        (["rerun", str(original), "--out", str(original), "--overwrite"], "is the log itself"),
        (["rerun", str(original), "--k", "3", "--seed", "2"], "--k, --seed cannot be changed; a rerun repeats"),
        (["rerun", str(tmp_path / "missing.h5")], "rerun " + str(tmp_path / "missing.h5") + ": no such file"),
    ):
        done = ef21(command)
        assert done.returncode == 2 and fragment in done.stderr, done.stderr
    moved = tmp_path / "moved" / "small.svm"  # the data set found elsewhere: the same log
    moved.parent.mkdir()
    shutil.copy(data, moved)
    run_ok(["rerun", str(original), "--quiet", "--dataset", str(moved), "--out", str(tmp_path / "moved.h5")])
    (a, a_attrs), (b, b_attrs) = read_file(original, groups=True), read_file(tmp_path / "moved.h5", groups=True)
    assert a.keys() == b.keys()
    for key in a.keys() - {"wall_time"}:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    differ = {key for key in a_attrs.keys() | b_attrs.keys() if str(a_attrs.get(key)) != str(b_attrs.get(key))}
    assert differ - VOLATILE_ATTRS == {"config", "final_state/config", "dataset_path"}  # where the data was found
    data.write_text(data.read_text().replace("1:", "2:", 1))  # other data under the same name
    done = ef21(["rerun", str(original), "--quiet"])
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "the original run used" in lines[0], done.stderr
    assert original.read_bytes() == before and not (tmp_path / "run.rerun.h5").exists()


def test_rerun_finds_a_registry_data_set_with_data_dir(data_dir, tmp_path):
    original = tmp_path / "run.h5"
    env = {"EF21_DATA_DIR": ""}
    run_ok(["run", "--dataset", "phishing", "--data-dir", str(data_dir), "--workers", "2", "--rounds", "5",
            "--quiet", "--out", str(original)], env=env)
    missing = ef21(["rerun", str(original), "--quiet", "--data-dir", str(tmp_path)], env=env)
    assert missing.returncode == 2 and "phishing" in missing.stderr
    run_ok(["rerun", str(original), "--quiet", "--data-dir", str(data_dir)], env=env)
    assert_same_log(original, tmp_path / "run.rerun.h5")


# --- first contact: --help, warnings ------------------------------------------------------------------------------


def run_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["run"], sub.choices["rerun"]


def test_help_shows_every_default():
    run, rerun = run_parser()
    for parser in (run, rerun):
        for action in parser._actions:
            if action.dest in ("help", "config", "resume", "log") or action.help == argparse.SUPPRESS:
                continue
            assert "default: " in action.help or "required" in action.help, action.option_strings
    text = " ".join(run.format_help().split())
    for expected in ("(default: ef21)", "(default: top-k)", "multiplier * gamma_theory (default: 1)",
                     "0: never (default: 0)", "(default: 1000)", "(default: 20 in one process", "(default: full)"):
        assert expected in text, expected


def test_every_run_option_is_a_flag():
    """The flags, the config file's keys and RunConfig's fields are the same set of names."""
    run, _ = run_parser()
    dests = {a.dest for a in run._actions} - {"help", "config", "resume", "compressor_arg"}
    assert dests | {"compressor_args"} == set(RunConfig.field_names())


def warned(cfg: RunConfig, *given: str, backend: str = "serial") -> list[str]:
    return ignored_options(cfg, set(given), backend)


def test_ignored_options_follow_the_method_facts():
    base = {"dataset": "x", "out": "y.h5"}
    gd = RunConfig(**base, algorithm="gd", k=5, compressor="rand-k")
    assert warned(gd, "k", "compressor") == [
        "--compressor is ignored by --algorithm gd: it sends uncompressed vectors",
        "--k is ignored by --algorithm gd: it sends uncompressed vectors"]
    assert warned(gd) == [] and warned(RunConfig(**base, k=5), "k") == []
    assert warned(RunConfig(**base, compressor="natural", k=3), "k") == [
        "--k is ignored by --compressor natural: it takes no k"]
    assert warned(RunConfig(**base, algorithm="ef", init="zero"), "init") == [
        "--init is ignored by --algorithm ef: it does not initialise g_i"]
    assert warned(RunConfig(**base, init="zero"), "init") == []  # EF21 initialises g_i
    assert warned(RunConfig(**base, batch_size=4), "batch_size") == [
        "--batch-size is ignored by --algorithm ef21: its workers use full gradients"]
    assert warned(RunConfig(**base, algorithm="ef21-sgd", batch_size=4), "batch_size") == []
    assert warned(RunConfig(**base, stepsize=0.1, stepsize_multiplier=2.0), "stepsize", "stepsize_multiplier") == [
        "--stepsize-multiplier is ignored when --stepsize is given"]
    assert warned(RunConfig(**base, placement="spread"), "placement") == [
        "--placement is ignored by the serial backend (it is for MPI runs)"]
    assert warned(RunConfig(**base, placement="spread"), "placement", backend="mpi") == []


@pytest.mark.parametrize("ranks", [None, 3], ids=["serial", "mpi"])
def test_an_ignored_option_is_one_warning_on_rank_0(ranks, data, tmp_path):
    out = tmp_path / "gd.h5"
    done = run_ok(["run", "--dataset", str(data), "--algorithm", "gd", "--k", "5", "--workers", "2", "--rounds", "5",
                   "--quiet", "--out", str(out)], ranks=ranks)
    lines = [line for line in program_stderr(done.stderr).splitlines() if line.strip()]
    assert lines == [f"{WARNING}--k is ignored by --algorithm gd: it sends uncompressed vectors"]
    assert attrs(out)["status"] == "completed"


def test_no_warning_beside_an_error_or_for_options_used(data, tmp_path):
    done = ef21(["run", "--dataset", str(data), "--algorithm", "gd", "--k", "5", "--x0", str(tmp_path / "none.npy"),
                 "--quiet", "--out", str(tmp_path / "x.h5")])
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and WARNING not in done.stderr, done.stderr
    done = run_ok(flags(data, tmp_path / "ok.h5", "--init", "zero", "--compressor", "rand-k"))
    assert done.stderr == ""


def test_run_makes_the_output_folder_from_a_config_file(data, tmp_path):
    config = toml(tmp_path / "run.toml", f'dataset = "{data}"\nworkers = 2\nrounds = 3\nquiet = true\n'
                  'out = "runs/deep/x.h5"\n')
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(config, work / "run.toml")
    run_ok(["run", "--config", "run.toml"], cwd=work)
    with h5py.File(work / "runs" / "deep" / "x.h5", "r") as f:
        assert f.attrs["status"] == "completed"


@pytest.mark.parametrize("ranks", [None, 3], ids=["serial", "mpi"])
def test_without_out_the_log_goes_to_runs_under_the_sweeps_name(ranks, data, tmp_path):
    """``runs/<analysis.grid.log_name>``: the data set, method, compressor and multiplier, then every option that
    differs from its default (n = 20 is the default; under MPI n is the number of worker ranks)."""
    command = ["run", "--dataset", str(data), "--rounds", "5", "--stepsize-multiplier", "4", "--seed", "2"]
    name = "small__ef21__top-1__x4__seed-2.h5" if ranks is None else "small__ef21__top-1__x4__workers-2__seed-2.h5"
    done = run_ok(command, cwd=tmp_path, ranks=ranks)
    log = tmp_path / "runs" / name
    assert f"ef21-mpi: writing the log to runs/{name} (no --out given)" in done.stderr
    assert attrs(log)["status"] == "completed" and attrs(log)["n_workers"] == (20 if ranks is None else 2)
    again = ef21(command, cwd=tmp_path, ranks=ranks)  # the same name again: an existing log is not replaced
    assert again.returncode == 2 and f"--out runs/{name} already exists" in again.stderr
    run_ok(["run", "--dataset", str(data), "--rounds", "5", "--algorithm", "gd", "--quiet"], cwd=tmp_path)
    assert (tmp_path / "runs" / "small__gd__x1.h5").exists()  # GD: no compressor in its name


@pytest.mark.mpi
def test_a_bad_config_file_under_mpi_is_one_line(tmp_path):
    config = toml(tmp_path / "run.toml", 'k = "x"\n')
    done = ef21(["run", "--config", str(config), "--dataset", "a9a"], ranks=3)
    lines = [line for line in program_stderr(done.stderr).splitlines() if line.strip()]
    expected = f"ef21-mpi: error: --config {config}: key 'k' expects an integer, got 'x'"
    assert done.returncode == 2 and lines == [expected], done.stderr

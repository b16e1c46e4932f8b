"""``ef21-mpi plot`` on logs of short real runs: files, pixel sizes, panels, curves."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_pm1_libsvm as write_libsvm

from ef21_mpi.analysis import figures
from ef21_mpi.analysis.results import bits_per_worker, load_run
from ef21_mpi.cli.main import main

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """Two data sets (alpha, beta) x two methods x multipliers 1 and 4."""
    folder = tmp_path_factory.mktemp("plot")
    paths = []
    for seed, dataset in enumerate(("alpha", "beta")):
        write_libsvm(folder / f"{dataset}.svm", seed=seed)
        for algorithm in ("ef21", "ef"):
            for multiplier in ("1", "4"):
                out = folder / f"{dataset}-{algorithm}-{multiplier}.h5"
                assert main(["run", "--dataset", str(folder / f"{dataset}.svm"), "--workers", "4", "--rounds", "30",
                             "--algorithm", algorithm, "--stepsize-multiplier", multiplier, "--out", str(out),
                             "--quiet", "--backend", "serial"]) == 0
                paths.append(out)
    return paths


def png_size(path):
    import matplotlib.image

    return matplotlib.image.imread(path).shape[:2]  # (height, width)


def test_png_one_panel_per_dataset_and_dpi(logs, tmp_path, capsys):
    out, half = tmp_path / "fig.png", tmp_path / "half.png"
    assert main(["plot", *map(str, logs), "-o", str(out), "--title", "test"]) == 0
    assert "2 panels" in capsys.readouterr().out
    assert main(["plot", *map(str, logs), "-o", str(half), "--title", "test", "--dpi", "50"]) == 0
    height, width = png_size(out)
    assert png_size(half) == (height // 2, width // 2)  # the same figure at half the resolution
    assert width > 2 * height  # two panels side by side, and the legend beside them


def test_panels_by_multiplier_and_curves(logs):
    runs = [load_run(p) for p in logs]
    fig = figures.make_figure(runs, panels_by="multiplier")
    assert [ax.get_title() for ax in fig.axes] == ["stepsize 1x", "stepsize 4x"]
    first = fig.axes[0]
    assert [line.get_label() for line in first.lines] == ["EF21, top-1, alpha", "EF, top-1, alpha",
                                                          "EF21, top-1, beta", "EF, top-1, beta"]
    assert first.get_yscale() == "log"
    x, y = first.lines[0].get_data()
    np.testing.assert_allclose(x, bits_per_worker(runs[0], "paper"))  # default x: paper bits/n
    np.testing.assert_allclose(y, runs[0].grad_norm_sq)


def test_single_panel_rounds_and_loss(logs, tmp_path):
    runs = [load_run(p) for p in logs[:4]]
    fig = figures.make_figure(runs, panels_by="none", x="rounds", y="loss")
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 4
    x, y = fig.axes[0].lines[3].get_data()
    np.testing.assert_array_equal(x, np.arange(31))
    np.testing.assert_allclose(y, runs[3].loss)
    out = tmp_path / "fig.pdf"
    assert main(["plot", *map(str, logs[:4]), "-o", str(out), "--panels-by", "none", "--x", "time",
                 "--bits", "wire"]) == 0
    assert out.read_bytes().startswith(b"%PDF")


def test_wire_bits_and_missing_distortion(logs, capsys):
    runs = [load_run(logs[0]), load_run(logs[2])]  # EF21 has G^t, EF does not
    fig = figures.make_figure(runs, y="distortion", bits="wire")
    assert len(fig.axes[0].lines) == 1
    assert "no positive finite distortion" in capsys.readouterr().err
    x, y = fig.axes[0].lines[0].get_data()
    assert runs[0].distortion[0] == 0.0  # G^0 = 0 under --init full: not drawn on a log scale
    np.testing.assert_allclose(x, np.cumsum(runs[0].bits_up.mean(axis=1))[1:])  # the initialisation counts
    np.testing.assert_allclose(y, runs[0].distortion[1:])


def test_bad_output(logs, tmp_path, capsys):
    """Exit 2 with exactly one ``ef21-mpi: error:`` line naming the path and what was expected; no file made."""
    cases = [
        (["-o", str(tmp_path / "fig.jpeg")], [f"-o {tmp_path / 'fig.jpeg'}", "unknown figure format",
                                             "use one of .png, .pdf, .svg"]),
        (["-o", str(tmp_path / "nowhere" / "fig.png")], [f"-o {tmp_path / 'nowhere' / 'fig.png'}",
                                                         f"folder {tmp_path / 'nowhere'} does not exist"]),
    ]
    before = sorted(tmp_path.iterdir())
    for extra, fragments in cases:
        assert main(["plot", str(logs[0]), *extra]) == 2, extra
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("ef21-mpi: error: "), captured.err
        assert all(f in lines[0] for f in fragments), (lines[0], fragments)
        assert "Traceback" not in captured.err + captured.out and captured.out == ""
        assert sorted(tmp_path.iterdir()) == before  # no figure, no folder, no temporary file
    missing = tmp_path / "missing.h5"
    assert main(["plot", str(missing), "-o", str(tmp_path / "fig.png")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"ef21-mpi: error: {missing}: no such file\n" and captured.out == ""
    assert sorted(tmp_path.iterdir()) == before


def test_each_method_keeps_its_colour(logs):
    """One panel per data set shows each method once: its line has the method's fixed colour in every panel."""
    runs = [load_run(p) for p in logs[::2]]  # multiplier 1: EF21 and EF on alpha, then on beta
    assert [figures.method_color(r) for r in runs] == ["C0", "C2", "C0", "C2"]
    fig = figures.make_figure(runs)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        for line in ax.lines:
            assert line.get_color() == ("C0" if line.get_label().startswith("EF21") else "C2")


def _run(folder, name, *extra):
    out = folder / f"{name}.h5"
    assert main(["run", "--dataset", str(folder / "alpha.svm"), "--rounds", "25", "--out", str(out), "--quiet",
                 "--backend", "serial", *extra]) == 0
    return load_run(out)


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """EF21 and EF21+ at 1x and 8x, n = 4; EF21 with n = 5; EF21 with Rand-2 over three seeds."""
    folder = tmp_path_factory.mktemp("styles")
    write_libsvm(folder / "alpha.svm", seed=3)
    runs = {(a, m): _run(folder, f"{a}-{m}", "--algorithm", a, "--stepsize-multiplier", m, "--workers", "4")
            for a in ("ef21", "ef21-plus") for m in ("1", "8")}
    runs["n5"] = _run(folder, "n5", "--workers", "5")
    runs["seeds"] = [_run(folder, f"seed{s}", "--compressor", "rand-k", "--k", "2", "--workers", "4", "--seed", str(s))
                     for s in range(3)]
    return runs


def test_colour_is_the_method_and_line_style_the_stepsize(varied):
    runs = [varied[a, m] for a in ("ef21", "ef21-plus") for m in ("1", "8")]
    fig = figures.make_figure(runs, panels_by="none")
    lines = fig.axes[0].lines
    assert [line.get_label() for line in lines] == ["EF21, top-1, 1x", "EF21, top-1, 8x", "EF21+, top-1, 1x",
                                                    "EF21+, top-1, 8x"]
    assert [line.get_color() for line in lines] == ["C0", "C0", "C1", "C1"]
    assert [line.get_linestyle() for line in lines] == ["-", "--", "-", "--"]
    legend = fig.legends[0]  # one legend for the figure, right of the panels
    assert [t.get_text() for t in legend.get_texts()] == [line.get_label() for line in lines]
    fig.canvas.draw()
    assert legend.get_window_extent().x0 >= fig.axes[0].get_window_extent().x1


def test_n_and_backend_enter_the_label_only_when_they_differ(varied):
    same = figures.make_figure([varied["ef21", "1"], varied["ef21-plus", "1"]], panels_by="none")
    assert [line.get_label() for line in same.axes[0].lines] == ["EF21, top-1", "EF21+, top-1"]
    # nothing else varies: each method gets its own line style too, so coinciding curves stay visible
    assert [line.get_linestyle() for line in same.axes[0].lines] == ["-", "--"]
    mixed = figures.make_figure([varied["ef21", "1"], varied["n5"]], panels_by="none")
    assert [line.get_label() for line in mixed.axes[0].lines] == ["EF21, top-1, n=4", "EF21, top-1, n=5"]
    assert mixed.axes[0].lines[1].get_linestyle() == "--"


def test_runs_that_differ_only_by_seed_become_a_median_and_a_band(varied):
    seeds = varied["seeds"]
    fig = figures.make_figure(seeds, panels_by="none", x="rounds")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["EF21, rand-2, 3 seeds"]
    stack = np.stack([r.grad_norm_sq for r in seeds])
    x, y = ax.lines[0].get_data()
    np.testing.assert_array_equal(x, np.arange(26))
    np.testing.assert_array_equal(y, np.median(stack, axis=0))
    (band,) = ax.collections
    vertices = band.get_paths()[0].vertices
    np.testing.assert_allclose(vertices[1:27, 1], stack.min(axis=0))  # lower edge, left to right
    assert len({float(r.grad_norm_sq[-1]) for r in seeds}) == 3  # the seeds really differ
    unbanded = figures.make_figure(seeds, panels_by="none", bands=False)
    assert len(unbanded.axes[0].lines) == 3 and not unbanded.axes[0].collections


def test_axis_limits_and_legend_choices(varied, tmp_path):
    runs = [varied["ef21", "1"], varied["ef21-plus", "1"]]
    fig = figures.make_figure(runs, xlim=(0, 500), ylim=(1e-6, 1), legend="inside")
    assert fig.axes[0].get_xlim() == (0, 500) and fig.axes[0].get_ylim() == (1e-6, 1)
    assert not fig.legends and fig.axes[0].get_legend() is not None
    assert not figures.make_figure(runs, legend="none").legends
    out = tmp_path / "lim.png"
    assert main(["plot", str(runs[0].path), "-o", str(out), "--xlim", ",500", "--ylim", "1e-6,1"]) == 0
    assert out.exists()


def test_a_seed_that_converged_early_stays_at_its_last_value_in_the_band(tmp_path):
    """Seeds stopped by --tol at different rounds: the median runs to the longest seed, the stopped seeds held."""
    write_libsvm(tmp_path / "alpha.svm", seed=3)
    seeds = [_run(tmp_path, f"s{s}", "--compressor", "rand-k", "--k", "2", "--workers", "4", "--seed", str(s),
                  "--x0", "normal", "--tol", "1e-3", "--rounds", "400") for s in range(3)]
    lengths = [r.rows for r in seeds]
    assert all(r.status == "converged" for r in seeds) and len(set(lengths)) > 1
    longest = max(lengths)
    held = np.stack([np.concatenate([r.grad_norm_sq, np.full(longest - r.rows, r.grad_norm_sq[-1])]) for r in seeds])
    fig = figures.make_figure(seeds, panels_by="none", x="rounds")
    x, y = fig.axes[0].lines[0].get_data()
    np.testing.assert_array_equal(x, np.arange(longest))
    np.testing.assert_array_equal(y, np.median(held, axis=0))
    vertices = fig.axes[0].collections[0].get_paths()[0].vertices
    np.testing.assert_allclose(vertices[1:longest + 1, 1], held.min(axis=0))

"""Convergence figures from run logs, paper-like by default (x = bits/n, y = ||grad f||^2); ``ef21-mpi plot`` draws them."""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ef21_mpi.analysis.results import Run, bits_per_worker, label, method_facts, method_name, multiplier, stepsize_label
from ef21_mpi.errors import InputError

Y_CHOICES = ("grad_norm_sq", "loss", "distortion")
X_CHOICES = ("bits", "rounds", "time")
PANEL_CHOICES = ("dataset", "multiplier", "none")
FORMATS = (".png", ".pdf", ".svg")
PANEL_SIZE = (4.8, 3.6)  # inches per panel
DPI = 100
MAX_COLUMNS = 3

Y_LABELS = {"grad_norm_sq": r"$\|\nabla f(x^t)\|^2$", "loss": r"$f(x^t)$", "distortion": r"$G^t$"}
X_LABELS = {
    ("bits", "paper"): "bits/n (32 bits per coordinate, init. excluded)",
    ("bits", "wire"): "bits/n (wire bits, init. included)",
    ("rounds", None): "communication rounds",
    ("time", None): "wall time (s)",
}
# the paper's colours are not specified; keep each method's colour fixed across panels and figures
def method_color(run: Run) -> str | None:
    """The fixed colour of the run's method (from the method registry), or None for a method without one."""
    return method_facts(str(run.attrs.get("algorithm", "?"))).color


def check_output(output: str | os.PathLike, flag: str = "-o") -> None:
    """A figure path must have a known format suffix and an existing folder (checked before any work)."""
    output = Path(output)
    if output.suffix.lower() not in FORMATS:
        raise InputError(f"{flag} {output}: unknown figure format; use one of {', '.join(FORMATS)}")
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{flag} {output}: folder {folder} does not exist")
    if output.is_dir():
        raise InputError(f"{flag} {output} is a folder; expected the path of a figure file")
    try:  # os.access says yes to root everywhere; creating a file is the real test
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ef21-probe"):
            pass
    except OSError as err:
        raise InputError(f"{flag} {output}: cannot write in folder {folder} ({err.strerror})") from None


def matplotlib_figure():
    """(Figure, FigureCanvasAgg) without pyplot; InputError saying how to install matplotlib if it is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("plotting needs matplotlib: pip install 'ef21-mpi[plot]'") from None
    return Figure, FigureCanvasAgg


def panel_key(run: Run, panels_by: str) -> tuple[tuple, str]:
    """(sort key, title) of the panel a run belongs to."""
    if panels_by == "dataset":
        name = str(run.attrs.get("dataset", "?"))
        return (name,), name
    if panels_by == "multiplier":
        if bool(run.attrs.get("stepsize_override", False)):  # absolute stepsizes after the multiples
            return (1, float(run.attrs["gamma"])), stepsize_label(run)
        return (0, round(multiplier(run), 6)), f"stepsize {stepsize_label(run)}"
    return (), ""


def group_panels(runs: list[Run], panels_by: str) -> list[tuple[str, list[Run]]]:
    """Runs grouped into panels: data sets in order of appearance, multipliers in increasing order."""
    groups: dict = {}
    titles: dict = {}
    for run in runs:
        key, title = panel_key(run, panels_by)
        groups.setdefault(key, []).append(run)
        titles[key] = title
    keys = sorted(groups) if panels_by == "multiplier" else list(groups)
    return [(titles[k], groups[k]) for k in keys]


def x_values(run: Run, x: str, bits: str) -> np.ndarray:
    if x == "bits":
        return bits_per_worker(run, bits)
    if x == "rounds":
        return run.round.astype(np.float64)
    return run.wall_time


def make_figure(runs: list[Run], *, y: str = "grad_norm_sq", x: str = "bits", bits: str = "paper",
                title: str | None = None, panels_by: str = "dataset"):
    """A matplotlib Figure (not yet saved) with one axes per panel."""
    Figure, FigureCanvasAgg = matplotlib_figure()
    panels = group_panels(runs, panels_by)
    ncols = 2 if len(panels) == 4 else min(len(panels), MAX_COLUMNS)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows + (0.4 if title else 0.0)), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    omit = ("stepsize",) if panels_by == "multiplier" else ()
    with_dataset = panels_by != "dataset" and len({r.attrs.get("dataset") for r in runs}) > 1
    one_per_method = all(len({method_name(r) for r in group}) == len(group) for _, group in panels)
    colors = _colors(runs, omit, with_dataset, one_per_method)
    for ax, (panel_title, group) in zip(axes.flat, panels):
        for run in group:
            values = run.series(y).astype(np.float64)
            keep = np.isfinite(values) & (values > 0)
            if not keep.any():
                print(f"ef21-mpi plot: {run.path}: no positive finite {y} values to plot", file=sys.stderr)
                continue
            text = label(run, omit, with_dataset) + ("" if run.status != "diverged" else " (diverged)")
            key = method_name(run) if one_per_method else label(run, omit, with_dataset)
            ax.plot(x_values(run, x, bits)[keep], values[keep], label=text, color=colors[key], linewidth=1.4)
        ax.set_yscale("log")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.set_xlabel(X_LABELS[(x, bits if x == "bits" else None)])
        ax.set_ylabel(Y_LABELS[y])
        if panel_title:
            ax.set_title(panel_title)
        ax.grid(True, which="major", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height) if title else None)  # keep the title clear of the panels
    return fig


def _colors(runs: list[Run], omit: tuple[str, ...], with_dataset: bool, one_per_method: bool) -> dict[str, str]:
    """Fixed colours per method when each panel shows each method once, else one colour per label."""
    if one_per_method:
        spare = iter(f"C{i}" for i in range(6, 10))
        colors: dict[str, str] = {}
        for run in runs:
            if method_name(run) not in colors:
                colors[method_name(run)] = method_color(run) or next(spare, "k")
        return colors
    labels = list(dict.fromkeys(label(r, omit, with_dataset) for r in runs))
    return {text: f"C{i % 10}" for i, text in enumerate(labels)}


def save(fig, output: Path, dpi: int = DPI) -> None:
    try:
        fig.savefig(output, dpi=dpi)
    except OSError as err:
        raise InputError(f"-o {output}: cannot write the figure ({err.strerror or err})") from None

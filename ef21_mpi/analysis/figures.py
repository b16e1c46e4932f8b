"""Convergence figures from run logs, paper-like by default (x = bits/n, y = ||grad f||^2); ``ef21-mpi plot`` draws them."""

from __future__ import annotations

import math
import os
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ef21_mpi.analysis.results import (
    Run,
    bits_per_worker,
    compressor_name,
    method_facts,
    method_name,
    multiplier,
    stepsize_label,
)
from ef21_mpi.errors import InputError

Y_CHOICES = ("grad_norm_sq", "loss", "distortion", "loss_gap")  # loss_gap: f(x^t) - f*, least squares only
X_CHOICES = ("bits", "rounds", "time")
PANEL_CHOICES = ("dataset", "multiplier", "dataset+multiplier", "none")  # the last but one: a grid, a row per data set
FORMATS = (".png", ".pdf", ".svg")
PANEL_SIZE = (4.8, 3.6)  # inches per panel
DPI = 100
MAX_COLUMNS = 3

Y_LABELS = {"grad_norm_sq": r"$\|\nabla f(x^t)\|^2$", "loss": r"$f(x^t)$", "distortion": r"$G^t$",
            "loss_gap": r"$f(x^t) - f^\ast$"}
X_LABELS = {
    ("bits", "paper"): "bits/n (32 bits per coordinate, init. excluded)",
    ("bits", "wire"): "bits/n (wire bits, init. included)",
    ("bits", "total"): "bits/n, uplink + downlink (wire bits)",
    ("rounds", None): "communication rounds",
    ("time", None): "wall time (s)",
}
LEGEND_CHOICES = ("outside", "below", "inside", "none")
LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "v", "D", "P", "X")
SPARE_COLORS = tuple(f"C{i}" for i in range(6, 10))


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
    """Runs grouped into panels: data sets in order of appearance, multipliers in increasing order; for
    ``dataset+multiplier`` every (data set, multiplier) pair of the grid, row by row (empty where none ran)."""
    if panels_by == "dataset+multiplier":
        rows = group_panels(runs, "dataset")
        columns = [key for key, _ in sorted({panel_key(r, "multiplier") for r in runs})]
        titles = dict(sorted({panel_key(r, "multiplier") for r in runs}))
        return [(f"{name}, {titles[column]}", [r for r in group if panel_key(r, "multiplier")[0] == column])
                for name, group in rows for column in columns]
    groups: dict = {}
    titles: dict = {}
    for run in runs:
        key, title = panel_key(run, panels_by)
        groups.setdefault(key, []).append(run)
        titles[key] = title
    keys = sorted(groups) if panels_by == "multiplier" else list(groups)
    return [(titles[k], groups[k]) for k in keys]


def grid_shape(runs: list[Run], panels: list, panels_by: str) -> tuple[int, int]:
    """(rows, columns): a data set per row for ``dataset+multiplier``; else up to 3 columns (2 for 4 panels)."""
    if panels_by == "dataset+multiplier":
        columns = len({panel_key(r, "multiplier")[0] for r in runs})
        return len(panels) // columns, columns
    ncols = 2 if len(panels) == 4 else min(len(panels), MAX_COLUMNS)
    return math.ceil(len(panels) / ncols), ncols


def x_values(run: Run, x: str, bits: str) -> np.ndarray:
    if x == "bits":
        return bits_per_worker(run, bits)
    if x == "rounds":
        return run.round.astype(np.float64)
    return run.wall_time


@dataclass(frozen=True)
class Facet:
    """A property that can tell plotted runs apart, and how a legend names its value."""

    name: str
    value: Callable[[Run], object]
    text: Callable[[object], str]


FACETS = (  # in the order they get a line style, then a marker; seeds are drawn as bands instead
    Facet("compressor", compressor_name, str),
    Facet("stepsize", stepsize_label, str),
    Facet("n", lambda r: int(r.attrs.get("n_workers", r.bits_up.shape[1])), lambda v: f"n={v}"),
    Facet("backend", lambda r: str(r.attrs.get("backend", "?")), str),
    Facet("x0", lambda r: str(r.attrs.get("x0", "zeros")), lambda v: f"x0={v}"),
    Facet("lam", lambda r: float(r.attrs.get("lam", float("nan"))), lambda v: f"lam={v:g}"),
)


def _seed(run: Run) -> int:
    return int(run.attrs.get("seed", 0))


@dataclass
class Curve:
    """What one legend entry draws: a run, or the median and range of runs that differ only by seed."""

    runs: list[Run]
    label: str
    color: str
    linestyle: object = "-"
    marker: str | None = None


def curves(runs: list[Run], panels_by: str = "none", bands: bool = True) -> list[Curve]:
    """One curve per run, or per group of runs that differ only by their seed (``bands``); styled so that colour
    is the method and line style, then marker, the other properties that vary among ``runs``."""
    skip = {"stepsize"} if "multiplier" in panels_by else set()
    varying = [f for f in FACETS if f.name not in skip and len({f.value(r) for r in runs}) > 1]
    with_dataset = "dataset" not in panels_by and len({r.attrs.get("dataset") for r in runs}) > 1
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        key = (method_name(run), str(run.attrs.get("dataset")), *(f.value(run) for f in varying))
        if not bands:
            key += (_seed(run), str(run.path))
        groups.setdefault(key, []).append(run)
    styled = varying[:1], varying[1:2]
    style_values = [list(dict.fromkeys(f.value(r) for r in runs)) for f in varying[:2]]
    spare = iter(SPARE_COLORS)
    colors: dict[str, str] = {}
    out = []
    for members in groups.values():
        first = members[0]
        name = method_name(first)
        if name not in colors:
            colors[name] = method_color(first) or next(spare, "k")
        shown = compressor_name(first)
        parts = [name] + ([shown] if shown != "identity" else []) + [f.text(f.value(first)) for f in varying
                                                                       if f.name != "compressor"]
        if with_dataset:
            parts.append(str(first.attrs.get("dataset", "?")))
        seeds = sorted({_seed(r) for r in members})
        if len(seeds) > 1:
            parts.append(f"{len(seeds)} seeds")
        curve = Curve(members, ", ".join(parts), colors[name])
        if styled[0]:
            curve.linestyle = LINE_STYLES[style_values[0].index(styled[0][0].value(first)) % len(LINE_STYLES)]
        else:  # line style free: each method its own, so that methods whose curves coincide stay visible
            curve.linestyle = LINE_STYLES[list(colors).index(name) % len(LINE_STYLES)]
        if styled[1]:
            curve.marker = MARKERS[style_values[1].index(styled[1][0].value(first)) % len(MARKERS)]
        out.append(curve)
    return out


def make_figure(runs: list[Run], *, y: str = "grad_norm_sq", x: str = "bits", bits: str = "paper",
                title: str | None = None, panels_by: str = "dataset", legend: str = "outside",
                xlim: tuple[float | None, float | None] | None = None,
                ylim: tuple[float | None, float | None] | None = None, dpi: int = DPI, bands: bool = True):
    """A matplotlib Figure (not yet saved) with one axes per panel."""
    Figure, FigureCanvasAgg = matplotlib_figure()
    from matplotlib.ticker import EngFormatter

    panels = group_panels(runs, panels_by)
    nrows, ncols = grid_shape(runs, panels, panels_by)
    scale = 0.75 if panels_by == "dataset+multiplier" else 1.0  # a grid's panels are smaller
    fig = Figure(figsize=(PANEL_SIZE[0] * ncols * scale, PANEL_SIZE[1] * nrows * scale), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    same_data = len({r.attrs.get("dataset") for r in runs}) == 1  # panels of one data set compare on one y scale
    sharey = "row" if panels_by == "dataset+multiplier" else same_data and len(panels) > 1
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    drawn = curves(runs, panels_by, bands)
    by_run = {id(r): c for c in drawn for r in c.runs}
    for ax, (panel_title, group) in zip(axes.flat, panels):
        seen: set[int] = set()
        for run in group:
            curve = by_run[id(run)]
            if id(curve) in seen:
                continue
            seen.add(id(curve))
            _draw(ax, curve, [r for r in curve.runs if any(r is g for g in group)], y, x, bits)
        ax.set_yscale("log")
        if x == "bits":
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 200k, 1.5M: no offset text to collide with
        grid = panels_by == "dataset+multiplier"
        index = list(axes.flat).index(ax)
        if not grid or index // ncols == nrows - 1:  # a grid labels its bottom row and first column only
            ax.set_xlabel(X_LABELS[(x, bits if x == "bits" else None)])
        if not grid or index % ncols == 0:
            ax.set_ylabel(Y_LABELS[y])
        if xlim:
            ax.set_xlim(*xlim)
        if ylim:
            ax.set_ylim(*ylim)
        if panel_title:
            ax.set_title(panel_title)
        ax.grid(True, which="major", alpha=0.3)
        if ax.lines and legend == "inside":
            ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        fig.delaxes(ax)
    if legend in ("outside", "below") and any(ax.lines for ax in fig.axes):
        handles = {}
        for ax in fig.axes:
            for handle, text in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(text, handle)
        if legend == "below":
            fig.legend(list(handles.values()), list(handles), loc="outside lower center", fontsize="small",
                       ncols=min(len(handles), 6))
        else:
            fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small")
            fig.set_figwidth(fig.get_figwidth() + LEGEND_WIDTH)
    if title:  # centred over the panels, not over panels and legend, and wrapped to their width
        panels_width = fig.get_figwidth() - (LEGEND_WIDTH if legend == "outside" else 0.0)
        fig.suptitle("\n".join(textwrap.wrap(title, max(int(panels_width * 9), 20))),
                     x=0.5 * panels_width / fig.get_figwidth())
    return fig


LEGEND_WIDTH = 2.6  # inches added to the right for a legend outside the axes


def _padded(values: list[np.ndarray], runs: list[Run], hold: bool) -> np.ndarray:
    """Series of unequal length as rows of one array: a run that converged (stopped by --tol) keeps its last
    value when ``hold`` (it is below the tolerance from then on), every other gap is NaN."""
    rows = max(len(v) for v in values)
    out = np.full((len(values), rows), np.nan)
    for i, (v, run) in enumerate(zip(values, runs, strict=True)):
        out[i, :len(v)] = v
        if hold and len(v) and run.status == "converged":
            out[i, len(v):] = v[-1]
    return out


def _draw(ax, curve: Curve, runs: list[Run], y: str, x: str, bits: str) -> None:
    """One line (a run), or the median line and the min-max band of runs that differ only by seed (a seed that
    converged early stays at its last value; the x of a round is the longest run's)."""
    xs = [x_values(r, x, bits) for r in runs]
    longest = int(np.argmax([len(v) for v in xs]))
    stack = _padded([r.series(y).astype(np.float64) for r in runs], runs, hold=True)
    xv = _padded(xs, runs, hold=False)[longest] if x != "time" else np.nanmedian(_padded(xs, runs, False), axis=0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a round no run reached: all-NaN column
        yv = np.nanmedian(stack, axis=0) if len(runs) > 1 else stack[0]
        low, high = np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)
    keep = np.isfinite(yv) & (yv > 0) & np.isfinite(xv)
    if not keep.any():
        print(f"ef21-mpi plot: {runs[0].path}: no positive finite {y} values to plot", file=sys.stderr)
        return
    text = curve.label + ("" if all(r.status != "diverged" for r in runs) else " (diverged)")
    ax.plot(xv[keep], yv[keep], label=text, color=curve.color, linestyle=curve.linestyle, marker=curve.marker,
            markevery=max(int(keep.sum()) // 8, 1), markersize=4, linewidth=1.4)
    if len(runs) > 1:
        band = keep & np.isfinite(low) & np.isfinite(high) & (low > 0)
        ax.fill_between(xv[band], low[band], high[band], color=curve.color, alpha=0.18, linewidth=0)


def save(fig, output: Path, dpi: int | None = None) -> None:
    try:
        fig.savefig(output, dpi=dpi or fig.dpi)
    except OSError as err:
        raise InputError(f"-o {output}: cannot write the figure ({err.strerror or err})") from None

"""Stepsize tolerance at a glance: bits/n to reach a tolerance against the stepsize multiplier, a panel per data
set, a line per method (median over seeds, bars from the fastest to the slowest seed; a hollow marker at the
top of a panel where fewer than half of the seeds reached the tolerance)."""

from __future__ import annotations

import math

from ef21_mpi.analysis.figures import PANEL_SIZE, matplotlib_figure
from ef21_mpi.analysis.reproduce import SeedStats
from ef21_mpi.analysis.results import method_facts


def tolerance_figure(table: dict[str, dict[str, dict[float, SeedStats]]], tol: float, title: str | None = None):
    """``table[dataset][algorithm][multiplier]`` -> a Figure (not yet saved)."""
    Figure, FigureCanvasAgg = matplotlib_figure()
    datasets = list(table)
    ncols = 2 if len(datasets) == 4 else min(len(datasets), 3)
    nrows = math.ceil(len(datasets) / ncols)
    fig = Figure(figsize=(PANEL_SIZE[0] * ncols + 2.2, PANEL_SIZE[1] * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, dataset in zip(axes.flat, datasets):
        ceiling = max((b for methods in table[dataset].values() for s in methods.values() for b in s.bits
                       if b is not None), default=1.0) * 1.6  # above every seed that reached: where "not reached" bars end
        for algorithm, by_m in table[dataset].items():
            facts = method_facts(algorithm)
            ms = sorted(by_m)
            med = [by_m[m].median for m in ms]
            ok = [m for m, v in zip(ms, med) if not math.isinf(v)]
            values = [by_m[m].median for m in ok]
            low = [by_m[m].median - by_m[m].low for m in ok]
            high = [(ceiling if math.isinf(by_m[m].high) else by_m[m].high) - by_m[m].median for m in ok]
            ax.errorbar(ok, values, yerr=[low, high], color=facts.color, marker="o", markersize=4, capsize=2,
                        linewidth=1.4, label=facts.display_name)
            missed = [m for m, v in zip(ms, med) if math.isinf(v)]
            ax.plot(missed, [0.96] * len(missed), linestyle="none", marker="o", markersize=6, markerfacecolor="none",
                    color=facts.color, transform=ax.get_xaxis_transform(), clip_on=False)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        if ceiling <= 1.6:  # no seed reached the target anywhere in this panel
            ax.set_ylim(1e3, 1e6)
        else:  # head room above the data for the "not reached" markers
            ax.set_ylim(top=ceiling * 2.0)
        ax.set_title(dataset)
        ax.set_xlabel(r"stepsize multiplier ($\gamma / \gamma_{theory}$)")
        ax.set_ylabel(f"bits/n to reach $\\|\\nabla f\\|^2 \\leq$ {tol:g}")
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[len(datasets):]:
        fig.delaxes(ax)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small",
               title="median, range\n(o at the top: fewer\nthan half the seeds\nreach the target)", title_fontsize="small")
    if title:
        fig.suptitle(title)
    return fig

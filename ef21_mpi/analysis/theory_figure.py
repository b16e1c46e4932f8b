"""Theorems 2 and 3 drawn: per run, the theorem's bound over the observed curve (``plot --theory``, ``theory --plot``)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from ef21_mpi.analysis.figures import check_output, matplotlib_figure, save
from ef21_mpi.analysis.theory import theory_report
from ef21_mpi.errors import InputError

PANEL_SIZE = (4.8, 3.6)  # inches per panel
MAX_COLUMNS = 3


def _title(r: dict) -> str:
    comp = f"{r['compressor']}" + (f" k={r['k']}" if r["compressor"] in ("top-k", "rand-k") else "")
    return f"{r['dataset']}: {r['algorithm']}, {comp}, {r['constants']['multiplier']:.3g}x"


def _draw(ax, r: dict) -> None:
    """One run: observed curve (solid) and the theorem's bound (dashed), log scale."""
    if r["theorem2"] is not None:
        t = r["theorem2"]
        x, observed, bound = t["T"], t["observed"], t["bound"]
        ax.set_xlabel("T (rounds)")
        ax.set_ylabel(r"$\frac{1}{T}\sum_{t<T}\|\nabla f(x^t)\|^2$")
        bound_label = "Theorem 2 bound"
        observed_label = "observed" + ("" if t["exact"] else " (approx., thinned log)")
    else:
        t = r["theorem3"]
        x, observed, bound = t["round"], t["psi"], t["bound"]
        ax.set_xlabel("round t")
        ax.set_ylabel(r"$\Psi^t = f(x^t) - f^* + \frac{\gamma}{\theta} G^t$")
        bound_label, observed_label = r"Theorem 3 bound $(1-\gamma\mu)^t \Psi^0$", "observed"
    ax.plot(x, observed, color="C0", label=observed_label)
    ax.plot(x, bound, color="C3", linestyle="--", label=bound_label)
    ax.set_yscale("log")
    ax.set_title(_title(r), fontsize=9)
    ax.legend(fontsize=8)


def plot_theory(paths: Sequence[str | os.PathLike], out: str | os.PathLike, f_inf: float = 0.0) -> Path:
    """One panel per run with the theorem's bound over the observed curve; runs no theorem covers are skipped."""
    Figure, FigureCanvasAgg = matplotlib_figure()
    out = Path(out)
    check_output(out, "--plot")
    reports = [r for r in (theory_report(p, f_inf=f_inf, curves=True) for p in paths) if r["theorem"] is not None]
    reports = [r for r in reports if len((r["theorem2"] or r["theorem3"]).get("bound", [])) > 0]
    if not reports:
        raise InputError("--plot: none of the logs is a run Theorem 2 or 3 speaks about (EF21, EF21+, EF21-SGD, GD)")
    columns = min(MAX_COLUMNS, len(reports))
    rows = math.ceil(len(reports) / columns)
    fig = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, r in zip(axes, reports):
        _draw(ax, r)
    for ax in axes[len(reports):]:
        ax.set_visible(False)
    save(fig, out, dpi=100)
    return out

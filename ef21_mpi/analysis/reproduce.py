"""What the paper-reproduction scripts (``scripts/figure1``, ``figure2``, ``least_squares``, ``figure_family``)
share: running configurations in a resumable pooled sweep, the Figure 2 tuning rule, and the seed statistics
their tables print (median and range over seeds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ef21_mpi.analysis.grid import Config
from ef21_mpi.analysis.results import Run, load_run, summary, tuning_key
from ef21_mpi.analysis.sweep import run_sweep


class RunFailed(RuntimeError):
    """A configuration of a reproduction failed (not diverged: failed, or was interrupted)."""


class Runner:
    """Runs configurations (skipping those with a final log) and remembers each one's summary at ``tol``."""

    def __init__(self, out_dir: str | Path, tol: float, *, jobs: int | None = None, data_dir: str | None = None):
        self.out_dir = Path(out_dir)
        self.tol = tol
        self.jobs = jobs
        self.data_dir = data_dir
        self.done: dict[Config, dict] = {}
        self.started = time.monotonic()

    def run(self, configs: Iterable[Config]) -> list[dict]:
        """Run what is not done yet; the summaries of ``configs``, in order."""
        configs = list(configs)
        todo = list(dict.fromkeys(c for c in configs if c not in self.done))
        if todo:
            results = run_sweep(todo, self.out_dir, jobs=self.jobs, data_dir=self.data_dir, pool=True)
            failed = [r for r in results if r.status in ("failed", "interrupted")]
            if failed:
                raise RunFailed(f"{len(failed)} run(s) failed, e.g. {failed[0].config.name}: {failed[0].message}")
            for c in todo:
                self.done[c] = summary(self.load(c), tol=self.tol)
        return [self.done[c] for c in configs]

    def load(self, config: Config) -> Run:
        return load_run(self.out_dir / config.name)

    def minutes(self) -> float:
        return (time.monotonic() - self.started) / 60


def tune_multiplier(runner: Runner, chains: list, config: Callable[[object, float], Config],
                    max_multiplier: float, bits: str = "paper") -> dict:
    """The Figure 2 rule for each chain (any key; ``config(chain, m)`` is its run at multiplier m): multipliers
    1, 4, 16, ... up to ``max_multiplier`` (a chain stops early only when a run diverges), then the factor-2
    neighbours of the best; the best run by `tuning_key` (fewest bits/n to the tolerance, else the lowest final
    ``||grad f||^2``; bits counted in the convention ``bits``). Returns ``{chain: best Config}``."""
    def key(c: Config) -> tuple:
        return tuning_key(runner.done[c], bits)

    active = {chain: 1.0 for chain in chains}
    best: dict = {}
    while active:
        configs = {chain: config(chain, m) for chain, m in active.items()}
        runner.run(configs.values())
        for chain, c in configs.items():
            s = runner.done[c]
            if chain not in best or key(c) < key(best[chain]):
                best[chain] = c
            if s["status"] == "diverged" or active[chain] * 4 > max_multiplier:
                del active[chain]
            else:
                active[chain] *= 4
    neighbours = {chain: [config(chain, c.multiplier * f) for f in (0.5, 2.0) if c.multiplier * f <= max_multiplier]
                  for chain, c in best.items()}
    runner.run(c for cs in neighbours.values() for c in cs)
    for chain, cs in neighbours.items():
        for c in cs:
            if key(c) < key(best[chain]):
                best[chain] = c
    return best


def with_seeds(config: Config, seeds: Iterable[int]) -> list[Config]:
    """The same configuration with each seed: ``config`` itself for its own seed, the others named by their seed."""
    out = []
    for seed in seeds:
        if seed == config.seed:
            out.append(config)
            continue
        options = {**config.options, "seed": seed}
        out.append(Config.of(config.rounds, tol=config.tol, log_every=config.log_every,
                             varied=set(config.varied) | {"seed"}, **options))
    return out


@dataclass(frozen=True)
class SeedStats:
    """Bits/n to reach a tolerance over seeds: the median (runs that never reach it count as infinite) and range."""

    bits: tuple  # per seed, None where the run did not reach the tolerance
    final: tuple  # final ||grad f||^2 per seed

    @property
    def reached(self) -> int:
        return sum(b is not None for b in self.bits)

    @property
    def median(self) -> float:
        return float(np.median([math.inf if b is None else b for b in self.bits]))

    @property
    def low(self) -> float:
        return min((b for b in self.bits if b is not None), default=math.inf)

    @property
    def high(self) -> float:
        return max(math.inf if b is None else b for b in self.bits)

    @property
    def final_median(self) -> float:
        return float(np.median([math.nan if f is None else f for f in self.final]))

    def cell(self) -> str:
        """``16,640 (15,360-18,240)``; ``... (15,360-not reached; 3/5)``; ``not reached (0/5)``."""
        n = len(self.bits)
        if n == 1:
            return "not reached" if self.reached == 0 else f"{self.low:,.0f}"
        if self.reached == 0:
            return f"not reached (0/{n})"
        high = "not reached" if math.isinf(self.high) else f"{self.high:,.0f}"
        median = "not reached" if math.isinf(self.median) else f"{self.median:,.0f}"
        seeds = "" if self.reached == n else f"; {self.reached}/{n}"
        return f"{median} ({self.low:,.0f}-{high}{seeds})"

    def key(self) -> tuple:
        """Rank for tables: reached by more seeds first, then by median bits, then by final ||grad f||^2."""
        return (-self.reached, self.median, self.final_median)


def seed_stats(summaries: list[dict], bits: str = "paper") -> SeedStats:
    """Bits/n (convention ``bits``) to the runner's tolerance and the final ``||grad f||^2`` of each seed's run."""
    return SeedStats(tuple(s[f"tol_bits_{bits}"] for s in summaries), tuple(s["grad_norm_sq_last"] for s in summaries))


def cpu_line(name: str, runner: Runner, wrote: Iterable[Path]) -> str:
    """The scripts' last line: what was written and how long it took."""
    return f"{name}: {len(runner.done)} runs; wrote {', '.join(str(p) for p in wrote)} in {runner.minutes():.1f} min"

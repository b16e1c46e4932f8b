"""Theorems 2 and 3 of the paper held against a run log (SPEC 5, 7): pure functions, the log is only read.

- Theorem 2 (non-convex, eq. (16)): ``(1/T) sum_{t<T} ||grad f(x^t)||^2 <= 2 (f(x^0) - f_inf)/(gamma T) + G^0/(theta T)``.
- Theorem 3 (PL, eq. (18)): ``Psi^T <= (1 - gamma mu)^T Psi^0`` with ``Psi^t = f(x^t) - f* + (gamma/theta) G^t``;
  ``mu`` is the logged one: ``lambda_min + lam``, or at ``lam = 0`` on rank-deficient data the PL constant, the
  smallest positive eigenvalue of the mean Hessian (the log's ``mu_kind`` says which; SPEC 1.2).

Both proofs go through one inequality per round which, with full gradients and a deterministic compressor
(top-k, identity), holds at every round of every run, not only in expectation. The report checks it too, as the
sharper test of ``L``, ``gamma`` and the method: ``Phi^{t+1} <= Phi^t - (gamma/2) ||grad f(x^t)||^2`` with
``Phi^t = f(x^t) + gamma/(2 theta) G^t`` (Theorem 2), and ``Psi^{t+1} <= (1 - gamma mu) Psi^t`` (Theorem 3).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ef21_mpi.analysis.results import method_facts
from ef21_mpi.core import stepsizes
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.logschema import read_log

GAMMA_SLACK = 1e-12  # relative: gamma <= gamma_theory, and logged constants against their recomputation
BOUND_SLACK = 1e-10  # relative: rounding in the cumulative sums and powers that form the bounds
ROUNDING = 64 * np.finfo(np.float64).eps  # absolute, times |f|: rounding in the logged losses and f*

PL_PROBLEMS = ("least-squares",)
NEEDED_COLUMNS = ("round", "grad_norm_sq", "loss", "distortion")  # and loss_gap when the log has it
NEEDED_ATTRS = ("algorithm", "problem", "alpha", "gamma", "gamma_theory", "L", "L_tilde")


@dataclass(frozen=True)
class RunData:
    """The columns of a run log the theorems need, cut at the first non-finite row."""

    path: str
    attrs: dict
    round: np.ndarray
    grad_norm_sq: np.ndarray
    loss: np.ndarray
    G: np.ndarray  # G^t (zeros for GD)
    loss_gap: np.ndarray | None
    rows_dropped: int  # rows after a non-finite value (a diverged run)


def read_run(path: str | os.PathLike) -> RunData:
    """Read a run log; an unreadable file or a file that is not a run log is an `InputError`."""
    log = read_log(path, need=NEEDED_COLUMNS, need_attrs=NEEDED_ATTRS)
    path, attrs, columns = str(log.path), log.attrs, log.columns
    if len(columns["round"]) == 0 or columns["round"][0] != 0:
        raise InputError(f"{path}: the log has no row for round 0 (x^0), which both theorems start from")
    finite = np.isfinite(columns["grad_norm_sq"]) & np.isfinite(columns["loss"])
    rows = len(finite) if finite.all() else int(np.argmin(finite))
    # GD is EF21 with the identity compressor (g_i^t = grad_i(x^t), so G^t = 0); it logs no distortion.
    # a method the theorems cover without g_i (GD: EF21 with the identity, g_i^t = grad_i(x^t)) has G^t = 0
    G = columns["distortion"][:rows] if method_facts(attrs["algorithm"]).has_g else np.zeros(rows)
    gap = columns.get("loss_gap")
    return RunData(path, attrs, columns["round"][:rows], columns["grad_norm_sq"][:rows], columns["loss"][:rows], G,
                   None if gap is None else gap[:rows], len(finite) - rows)


# --- constants (SPEC 5) -----------------------------------------------------------------------------


def gamma_theorem2(alpha: float, L: float, L_tilde: float) -> float:
    return stepsizes.theory(alpha, L, L_tilde).gamma_theory


def gamma_theorem3(alpha: float, L: float, L_tilde: float, mu: float) -> float:
    return stepsizes.theory(alpha, L, L_tilde, mu).gamma_theory


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= GAMMA_SLACK * max(abs(a), abs(b))


def constants(attrs: dict) -> dict:
    """The constants of the run, whether ``gamma <= gamma_theory``, and whether the logged values are consistent."""
    alpha, L, L_tilde, gamma = (float(attrs[key]) for key in ("alpha", "L", "L_tilde", "gamma"))
    mu = float(attrs["mu"]) if "mu" in attrs else None
    theta, beta = stepsizes.theta_beta(alpha)
    logged_theory = float(attrs["gamma_theory"])
    recomputed = gamma_theorem3(alpha, L, L_tilde, mu) if mu is not None else gamma_theorem2(alpha, L, L_tilde)
    return {
        "alpha": alpha, "theta": theta, "beta": beta, "L": L, "L_tilde": L_tilde, "mu": mu,
        "mu_kind": str(attrs["mu_kind"]) if "mu_kind" in attrs else None,  # logs before lam = 0 was PL have none
        "f_star": float(attrs["f_star"]) if "f_star" in attrs else None,
        "gamma": gamma, "gamma_theory": logged_theory, "multiplier": gamma / logged_theory,
        "gamma_within_theory": 0 < gamma <= logged_theory * (1.0 + GAMMA_SLACK),
        "gamma_theory_recomputed": recomputed,
        "consistent": (_close(recomputed, logged_theory) and _close(theta, float(attrs.get("theta", theta)))
                       and _close(beta, float(attrs.get("beta", beta)))),
    }


def theorem_for(attrs: dict) -> str:
    """The theorem about the run's problem: 3 on a PL problem, 2 otherwise."""
    return "3" if attrs["problem"] in PL_PROBLEMS else "2"


def covered(attrs: dict) -> bool:
    """Whether that theorem is about the run's method (EF21, EF21+, GD; EF21-SGD with full batches)."""
    return theorem_for(attrs) in method_facts(attrs["algorithm"]).theorems


def applicability(attrs: dict) -> tuple[bool, str, str | None]:
    """(does a theorem cover this run, what it guarantees ("every run" or "in expectation"), why not / caveat)."""
    algorithm = attrs["algorithm"]
    if not covered(attrs):
        return False, "none", (f"{algorithm} is not covered: Theorems 2 and 3 are about EF21 (and EF21+, and GD as "
                               "EF21 with no compression)")
    if algorithm == "ef21-sgd":
        sizes = np.atleast_1d(attrs.get("shard_sizes", [0]))
        if not (attrs.get("batch_size") == sizes.min() == sizes.max()):
            return False, "none", ("not applicable (stochastic gradients): the theorems assume full gradients; "
                                   "EF21-SGD is analysed in the paper's Section H. Numbers below are for information")
    if attrs.get("compressor") == "rand-k":
        return True, "in expectation", ("rand-k is random: the theorems bound an expectation over its draws, so one "
                                        "run may exceed the bound without a bug")
    return True, "every run", None


# --- Theorem 2 ---------------------------------------------------------------------------------------


def every_round_logged(run: RunData) -> bool:
    return bool(np.array_equal(run.round, np.arange(len(run.round))))


def theorem2(run: RunData, c: dict, f_inf: float = 0.0) -> dict:
    """Theorem 2's bound against the running mean of ``grad_norm_sq``, at every ``T`` the log allows."""
    gamma, theta = c["gamma"], c["theta"]
    gamma_max = gamma_theorem2(c["alpha"], c["L"], c["L_tilde"])
    f0, G0, g = float(run.loss[0]), float(run.G[0]), run.grad_norm_sq
    exact = every_round_logged(run)
    if exact:  # T = 1..R: the mean over rows 0..T-1
        T = np.arange(1, len(g) + 1)
        sums = np.cumsum(g)
    else:  # left-point rule: a logged value stands for every round until the next logged row
        T = run.round[1:]
        sums = np.cumsum(g[:-1] * np.diff(run.round))
    out = {
        "f_inf": f_inf, "f_inf_valid": bool(f_inf <= run.loss.min()), "f0": f0, "G0": G0,
        "gamma_max": gamma_max, "hypothesis": bool(gamma <= gamma_max * (1.0 + GAMMA_SLACK)), "exact": exact,
        "how": "every round logged" if exact else "APPROXIMATE: thinned log, sum over skipped rounds by the left-point "
                                                  "rule (cannot be checked exactly)",
    }
    if len(T) == 0:
        return {**out, "T": [], "observed": [], "bound": [], "holds": None, "T_last": None}
    observed = sums / T
    bound = (2.0 * (f0 - f_inf) / gamma + G0 / theta) / T  # eq. (16)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = observed / bound
    violated = np.flatnonzero(observed > bound * (1.0 + BOUND_SLACK))
    worst = int(np.nanargmax(ratio)) if np.isfinite(ratio).any() else 0
    out.update({
        "T": T, "observed": observed, "bound": bound,
        "T_last": int(T[-1]), "observed_last": float(observed[-1]), "bound_last": float(bound[-1]),
        "ratio_last": float(ratio[-1]), "ratio_max": float(ratio[worst]), "T_ratio_max": int(T[worst]),
        "first_violation_T": int(T[violated[0]]) if len(violated) else None,
        "holds": len(violated) == 0,
        "descent": descent_check(run, c) if exact else None,
    })
    return out


def descent_check(run: RunData, c: dict) -> dict:
    """``Phi^{t+1} <= Phi^t - (gamma/2) ||grad f(x^t)||^2`` at every round (the step of Theorem 2's proof)."""
    gamma, theta = c["gamma"], c["theta"]
    phi = run.loss + gamma / (2.0 * theta) * run.G
    excess = phi[1:] - (phi[:-1] - 0.5 * gamma * run.grad_norm_sq[:-1])
    allowance = ROUNDING * (np.abs(phi[1:]) + np.abs(phi[:-1]))
    failed = np.flatnonzero(excess > allowance)
    return {"rounds": len(excess), "first_failure_round": int(run.round[failed[0] + 1]) if len(failed) else None,
            "failures": len(failed), "worst_excess": float(excess.max()) if len(excess) else None,
            "holds": len(failed) == 0}


# --- Theorem 3 ---------------------------------------------------------------------------------------


def theorem3(run: RunData, c: dict) -> dict:
    """``Psi^t`` against ``(1 - gamma mu)^t Psi^0`` at every logged row, per step, and the linear rates."""
    gamma, theta, mu, f_star = c["gamma"], c["theta"], c["mu"], c["f_star"]
    gamma_max = gamma_theorem3(c["alpha"], c["L"], c["L_tilde"], mu)
    t = run.round.astype(np.float64)
    gap = run.loss_gap if run.loss_gap is not None else run.loss - f_star
    allowance = ROUNDING * max(abs(f_star), float(np.abs(run.loss).max()))
    psi = gap + (gamma / theta) * run.G
    log_rate = math.log1p(-gamma * mu)
    bound = np.exp(t * log_rate) * psi[0]  # eq. (18)
    violated = np.flatnonzero(psi > bound * (1.0 + BOUND_SLACK) + allowance)
    step_bound = np.exp(np.diff(t) * log_rate) * psi[:-1]
    step_failed = np.flatnonzero(psi[1:] > step_bound * (1.0 + BOUND_SLACK) + allowance)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = psi / bound
    out = {
        "mu": mu, "f_star": f_star, "gamma_max": gamma_max, "hypothesis": bool(gamma <= gamma_max * (1 + GAMMA_SLACK)),
        "gap_source": "loss_gap" if run.loss_gap is not None else "loss - f_star",
        "f_star_is_min": bool(gap.min() >= -allowance),
        "round": run.round, "psi": psi, "bound": bound,
        "psi0": float(psi[0]), "round_last": int(run.round[-1]), "psi_last": float(psi[-1]),
        "bound_last": float(bound[-1]), "ratio_last": float(ratio[-1]),
        "ratio_max": float(np.nanmax(ratio[1:])) if len(ratio) > 1 else None,  # row 0 is 1 by definition
        "first_violation_round": int(run.round[violated[0]]) if len(violated) else None,
        "holds": len(violated) == 0,
        "per_step": {"first_failure_round": int(run.round[step_failed[0] + 1]) if len(step_failed) else None,
                     "failures": len(step_failed), "holds": len(step_failed) == 0},
        "rate_predicted": 1.0 - gamma * mu,
    }
    out.update(observed_rates(run.round, psi))
    out["rate_within_prediction"] = (out["rate_observed"] is not None
                                     and out["rate_observed"] <= out["rate_predicted"] * (1.0 + BOUND_SLACK))
    return out


def observed_rates(rounds: np.ndarray, psi: np.ndarray) -> dict:
    """Per-round linear rate: geometric mean ``(Psi^T/Psi^0)^(1/T)`` and ``exp`` of the slope of ``log Psi`` on ``t``."""
    positive = psi > 0
    if rounds[-1] == 0 or not (positive[0] and positive[-1]):
        return {"rate_observed": None, "rate_fit": None}
    geometric = math.exp(math.log(psi[-1] / psi[0]) / rounds[-1])
    fit = None
    if positive.sum() >= 2:
        fit = math.exp(np.polyfit(rounds[positive].astype(np.float64), np.log(psi[positive]), 1)[0])
    return {"rate_observed": geometric, "rate_fit": fit}


# --- the report ----------------------------------------------------------------------------------------


CURVE_KEYS = ("T", "observed", "bound", "round", "psi")


def theory_report(path: str | os.PathLike, f_inf: float = 0.0, *, curves: bool = False) -> dict:
    """Everything the theorems say about one run log, as plain JSON-ready values (curves only when asked)."""
    run = read_run(path)
    a = run.attrs
    c = constants(a)
    applicable, guarantee, note = applicability(a)
    report = {
        "file": run.path, "algorithm": a["algorithm"], "compressor": a.get("compressor"), "k": a.get("k"),
        "problem": a["problem"], "dataset": a.get("dataset"), "n_workers": a.get("n_workers"), "d": a.get("d"),
        "init": a.get("init"), "batch_size": a.get("batch_size"), "status": a.get("status"),
        "rows": len(run.round), "rows_dropped_nonfinite": run.rows_dropped, "last_round": int(run.round[-1]),
        "every_round_logged": every_round_logged(run), "constants": c,
        "applicable": applicable, "guarantee": guarantee, "note": note,
        "theorem": None, "theorem2": None, "theorem3": None, "violation": None,
    }
    if not covered(a):
        return _plain_tree(report, curves)
    if theorem_for(a) == "3":
        if c["mu"] is None or c["f_star"] is None:
            raise InputError(f"{run.path}: a {a['problem']} log without the attributes mu and f_star")
        if not c["mu"] > 0:
            report["applicable"], report["guarantee"] = False, "none"
            report["note"] = f"mu = {c['mu']:.3g} <= 0: f is not PL with a positive constant, Theorem 3 does not apply"
            return _plain_tree(report, curves)
        t3 = theorem3(run, c)
        report["theorem"], report["theorem3"] = 3, t3
        failed = not (t3["holds"] and t3["per_step"]["holds"]) or not t3["f_star_is_min"]
    else:
        t2 = theorem2(run, c, f_inf)
        report["theorem"], report["theorem2"] = 2, t2
        # only an exact log can fail for sure; the averaged bound also needs a true lower bound f_inf
        descent_failed = t2.get("descent") is not None and not t2["descent"]["holds"]
        failed = t2["exact"] and ((t2["holds"] is False and t2["f_inf_valid"]) or descent_failed)
    # A violation is a bound that must hold for this very run and does not: a bug in L, gamma or the method.
    guaranteed = applicable and guarantee == "every run" and report[f"theorem{report['theorem']}"]["hypothesis"]
    report["violation"] = bool(guaranteed and failed)
    return _plain_tree(report, curves)


def _plain_tree(value, curves: bool):
    """numpy -> Python values, NaN -> None; the curve arrays are dropped unless ``curves``."""
    if isinstance(value, dict):
        return {k: _plain_tree(v, curves) for k, v in value.items() if curves or k not in CURVE_KEYS}
    if isinstance(value, np.ndarray):
        return value.tolist() if value.dtype.kind in "iu" else [_plain_tree(float(v), curves) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _g(value, spec: str = ".3e") -> str:
    return "-" if value is None else format(value, spec)


def _yes(flag) -> str:
    return {True: "yes", False: "NO", None: "-"}[flag]


def format_report(r: dict) -> str:
    """The report as a readable block."""
    c = r["constants"]
    logged = "every round" if r["every_round_logged"] else "thinned"
    lines = [
        r["file"],
        (f"  run          {r['algorithm']}, {r['compressor']} (k = {r['k']}), {r['problem']} on {r['dataset']}, "
         f"n = {r['n_workers']}, rounds 0..{r['last_round']} ({r['rows']} rows, {logged}), status {r['status']}"),
        f"  constants    alpha = {c['alpha']:.6g}  theta = {c['theta']:.6g}  beta = {c['beta']:.6g}",
        (f"               L = {c['L']:.10g}  L~ = {c['L_tilde']:.10g}  mu = {_g(c['mu'], '.10g')}"
         + (f" ({c['mu_kind']})" if c["mu_kind"] else "")),
        (f"  stepsize     gamma = {c['gamma']:.10g} = {c['multiplier']:.4g} x gamma_theory ({c['gamma_theory']:.10g}); "
         f"gamma <= gamma_theory: {_yes(c['gamma_within_theory'])}"),
    ]
    if not c["consistent"]:
        lines.append(f"  WARNING      logged gamma_theory/theta/beta differ from SPEC 5's formulas "
                     f"(recomputed gamma_theory = {c['gamma_theory_recomputed']:.10g})")
    if r["rows_dropped_nonfinite"]:
        lines.append(f"  note         {r['rows_dropped_nonfinite']} rows after a non-finite value were left out")
    if r["note"]:
        lines.append(f"  note         {r['note']}")
    if r["theorem2"] is not None:
        lines += _format_theorem2(r["theorem2"], r)
    elif r["theorem3"] is not None:
        lines += _format_theorem3(r["theorem3"], r)
    return "\n".join(lines)


def _verdict(holds, r: dict, hypothesis: bool) -> str:
    """A failed comparison is a violation only when the theorem guarantees it for this very run."""
    if holds is None:
        return "-"
    if holds:
        return "holds"
    if not r["applicable"]:
        return "exceeded (the theorem does not cover this run)"
    if not hypothesis:
        return "exceeded (gamma is above the theorem's stepsize: no guarantee)"
    if r["guarantee"] != "every run":
        return "exceeded (allowed: the guarantee is in expectation)"
    return "VIOLATED"


def _format_theorem2(t: dict, r: dict) -> list[str]:
    lines = [
        (f"  Theorem 2    mean_(t<T) ||grad f(x^t)||^2 <= 2 (f(x^0) - f_inf)/(gamma T) + G^0/(theta T); "
         f"f(x^0) = {t['f0']:.10g}, f_inf = {t['f_inf']:.6g}, G^0 = {t['G0']:.3e}"),
        (f"               stepsize of eq. (15): {t['gamma_max']:.10g}; gamma within it: {_yes(t['hypothesis'])}; "
         f"{t['how']}"),
    ]
    if not t["f_inf_valid"]:
        lines.append("               WARNING: f_inf is above a logged loss, so it is not a lower bound")
    if t["T_last"] is None:
        return lines + ["               no rounds after the initialisation"]
    first = t["first_violation_T"]
    lines += [
        (f"               at T = {t['T_last']}: observed {t['observed_last']:.4e}, bound {t['bound_last']:.4e}, "
         f"ratio {t['ratio_last']:.4e}"),
        f"               largest ratio {t['ratio_max']:.4e} (T = {t['T_ratio_max']}); "
        f"{_verdict(t['holds'], r, t['hypothesis'])}"
        + (f", first at T = {first}" if first is not None else " at every T"),
    ]
    d = t["descent"]
    if d is not None:
        lines.append(f"               per-round descent Phi^(t+1) <= Phi^t - gamma/2 ||grad f(x^t)||^2: "
                     f"{_verdict(d['holds'], r, t['hypothesis'])}"
                     + (f" at {d['failures']} rounds, first at round {d['first_failure_round']}"
                        if not d["holds"] else f" at all {d['rounds']} rounds"))
    return lines


def _format_theorem3(t: dict, r: dict) -> list[str]:
    first = t["first_violation_round"]
    step = t["per_step"]
    lines = [
        (f"  Theorem 3    Psi^t = f(x^t) - f* + (gamma/theta) G^t <= (1 - gamma mu)^t Psi^0; f* = {t['f_star']:.10g} "
         f"(gap from {t['gap_source']}), Psi^0 = {t['psi0']:.6e}"),
        f"               stepsize of eq. (17): {t['gamma_max']:.10g}; gamma within it: {_yes(t['hypothesis'])}",
        (f"               at round {t['round_last']}: Psi {t['psi_last']:.4e}, bound {t['bound_last']:.4e}, "
         f"ratio {t['ratio_last']:.4e} (largest after round 0: {_g(t['ratio_max'], '.4e')})"),
        f"               bound: {_verdict(t['holds'], r, t['hypothesis'])}"
        + (f", first at round {first}" if first is not None else " at every logged row")
        + f"; per step: {_verdict(step['holds'], r, t['hypothesis'])}"
        + (f", first at round {step['first_failure_round']}" if not step["holds"] else ""),
        (f"               linear rate per round: predicted 1 - gamma mu = {t['rate_predicted']:.8f}, observed "
         f"{_g(t['rate_observed'], '.8f')} (geometric mean), {_g(t['rate_fit'], '.8f')} (fit of log Psi)"),
    ]
    if not t["f_star_is_min"]:
        lines.append("               WARNING: f(x^t) < f* at some row: f* is not the minimum")
    return lines

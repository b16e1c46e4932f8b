"""The bench's printed table: every figure of `ef21_mpi.bench.bench` with its ratio, target and verdict."""

from __future__ import annotations

from ef21_mpi.bench.naive import N_WORKERS


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f} ms"


def _size(nbytes: int) -> str:
    for unit, scale in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.0f} kB"


def _verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def _audit_lines(ranks: list[dict]) -> list[str]:
    """One line per group of ranks with the same large blocks (workers are usually all alike)."""
    groups: dict[str, list[dict]] = {}
    for rank in ranks:
        where = ", ".join(f"{b['where']} {_size(b['bytes'])}" for b in rank["large_blocks"]) or "none"
        groups.setdefault(where, []).append(rank)
    lines = []
    for where, members in groups.items():
        ids = [m["rank"] for m in members]
        label = f"rank {ids[0]}" if len(ids) == 1 else f"ranks {ids[0]}-{ids[-1]}"
        peak = max(m["traced_peak_mb"] for m in members)
        lines.append(f"  {label}: traced peak {peak:.1f} MB; {where}")
    return lines


def format_report(result: dict) -> str:
    m = result["machine"]
    load = " ".join(f"{v:.1f}" for v in m["load_average"])
    library = result.get("mpi", {}).get("library", "MPI not measured")
    versions = (f"python {m['python']}, numpy {m['numpy']} ({m['blas']}, threads: {m['blas_threads']}), "
                f"scipy {m['scipy']}, mpi4py {m['mpi4py']}, {library}")
    lines = [f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), load average {load} at start",
             versions, f"command: {result['command']}", ""]
    row = "{:<62} {:>14} {:>12} {:>10} {:>8}"
    lines.append(row.format("measurement", "figure", "ratio", "target", "verdict"))
    lines.append("-" * 110)
    s = result.get("serial")
    if s:
        lines.append(f"[1,2] {result['dataset']}: N={s['N']}, d={s['d']}, nnz={s['nnz']}, n={N_WORKERS} workers, "
                     f"EF21 Top-1; medians of {s['repeats']} interleaved repeats")
        lines.append(row.format("compute floor: A x + A^T s, whole data set as one CSR", ms(s["floor"]), "1.00x",
                                "", ""))
        lines.append(row.format("serial backend, every round logged", ms(s["serial_log1"]),
                                f"{s['serial_log1_over_floor']:.2f}x floor", "<= 1.5x",
                                _verdict(s["serial_log1_over_floor"] <= 1.5)))
        lines.append(row.format(f"serial backend, --log-every {result['sparse_log_every']}", ms(s["serial_sparse"]),
                                f"{s['serial_sparse_over_floor']:.2f}x floor", "<= 1.5x",
                                _verdict(s["serial_sparse_over_floor"] <= 1.5)))
        lines.append(row.format("naive: dense shards, loop over workers, argsort Top-k", ms(s["naive"]), "", "", ""))
        lines.append(row.format("  naive / serial (every round logged)", "",
                                f"{s['naive_over_serial_log1']:.2f}x", ">= 25x",
                                _verdict(s["naive_over_serial_log1"] >= 25)))
        lines.append(row.format(f"  naive / serial (--log-every {result['sparse_log_every']})", "",
                                f"{s['naive_over_serial_sparse']:.2f}x", ">= 25x",
                                _verdict(s["naive_over_serial_sparse"] >= 25)))
        lines.append(row.format("  dense floor: A_i x + A_i^T s_i on the dense shards", ms(s["dense_floor"]),
                                f"{s['dense_floor_over_floor']:.2f}x floor", "", ""))
        lines.append(row.format("  uplink per worker per round (bits, coordinates)", f"{s['bits']} {s['coords']}",
                                "", "96 / 1", _verdict(s["bits"] == [96.0] and s["coords"] == [1.0])))
    p = result.get("mpi")
    if p:
        lines.append(f"[3] MPI backend, {p['ranks']} ranks on {m['cores']} cores, {result['dataset']}, EF21 Top-1; "
                     f"each run preceded by its own floor measurement")
        for mode, label in (("log1", "every round logged"), ("sparse", f"--log-every {result['sparse_log_every']}")):
            q = p[mode]
            floor_name = "Bcast d+1 + Gatherv 12 B/worker" + (" + monitor row" if mode == "log1" else "")
            lines.append(row.format(f"communication floor: {floor_name}", ms(q["floor"]), "", "", ""))
            lines.append(row.format("  per-rank compute, isolated (max over workers)", ms(q["compute_max"]),
                                    "", "", ""))
            lines.append(row.format("  per-rank compute, isolated, sum over workers", ms(q["compute_sum"]),
                                    "", "", ""))
            lines.append(row.format("  per-rank compute during the run (CPU time, median)",
                                    ms(q["compute_in_run_cpu"]), "", "", ""))
            lines.append(row.format(f"MPI backend, {label}", ms(q["round"]),
                                    f"{q['overhead']:+.0%} vs floor+max", "< +25%", _verdict(q["overhead"] < 0.25)))
            lines.append(row.format("  against floor + max(max, sum/cores) compute", ms(q["model_shared"]),
                                    f"{q['overhead_shared']:+.0%}", "", ""))
            if s:
                ratio = s["naive"] / q["round"]
                lines.append(row.format(f"  naive / MPI ({label})", "", f"{ratio:.2f}x", ">= 8x", _verdict(ratio >= 8)))
            lines.append(row.format("  uplink per worker per round (bits, coordinates)", f"{q['bits']} {q['coords']}",
                                    "", "96 / 1", _verdict(q["bits"] == [96.0] and q["coords"] == [1.0])))
    g = (p or {}).get("grouped")
    if g:
        n = p["ranks"] - 1
        lines.append(f"[3b] the same {n} workers on {g['ranks']} ranks ({g['ranks'] - 1} worker ranks holding blocks "
                     f"of workers), {result['dataset']}, EF21 Top-1; logs identical to one worker per rank")
        for mode, label in (("log1", "every round logged"), ("sparse", f"--log-every {result['sparse_log_every']}")):
            q, one_each = g[mode], p[mode]
            lines.append(row.format(f"communication floor ({label})", ms(q["floor"]), "", "", ""))
            lines.append(row.format(f"MPI backend, {g['ranks']} ranks, {label}", ms(q["round"]),
                                    f"{q['overhead']:+.0%} vs floor+max", "< +25%", _verdict(q["overhead"] < 0.25)))
            lines.append(row.format(f"  against {p['ranks']} ranks", "", f"{one_each['round'] / q['round']:.2f}x faster",
                                    "", ""))
            if s:
                ratio = s["naive"] / q["round"]
                lines.append(row.format(f"  naive / MPI ({label})", "", f"{ratio:.2f}x", ">= 8x", _verdict(ratio >= 8)))
    scale = result.get("scale")
    if scale:
        lines += ["", (f"[4] scale: synthetic data, {scale[0]['rows']} rows, n={N_WORKERS}, EF21 Top-k; MPI with "
                       f"{result['scale_ranks']} ranks; rounds logged every {result['scale_log_every']}")]
        head = "{:>8} {:>5} {:>9} {:>8} {:>9} {:>11} {:>11} {:>10} {:>9} {:>9} {:>10} {:>7}"
        lines.append(head.format("d", "k", "nnz", "load s", "startup s", "serial/rnd", "ns/(nnz+nd)", "mpi/rnd",
                                 "floor", "RSS r0 MB", "RSS wrk MB", "bits"))
        for r in scale:
            if "trace" in r:
                continue
            per_unit = r["serial_round"] / (r["nnz"] + N_WORKERS * r["d"]) * 1e9
            bits_ok = r["bits"] == [float(r["expected_bits"])] and r["serial_bits"] == [float(r["expected_bits"])]
            lines.append(head.format(r["d"], r["k"], r["nnz"], f"{r['load_s']:.1f}", f"{r['startup_s']:.1f}",
                                     ms(r["serial_round"]), f"{per_unit:.2f}", ms(r["mpi_round"]),
                                     ms(r["mpi_floor"]), f"{r['rss_master_mb']:.0f}", f"{r['rss_worker_mb']:.0f}",
                                     f"{r['bits'][0]:.0f}" + ("" if bits_ok else "!")))
        dims = sorted({r["d"] for r in scale if "trace" not in r})
        lines.append("naive baseline's dense shards would need: " + ", ".join(
            f"d={d}: {_size(scale[0]['rows'] * d * 8)}" for d in dims))
        big = [r for r in scale if "trace" not in r and r["d"] == dims[-1]]
        if big:
            worst = max(r["startup_s"] for r in big)
            lines.append(f"start-up (ef21-mpi run until round 0: load, shard, all L_i and L, workers) at "
                         f"d={big[0]['d']}: "
                         f"{worst:.1f} s; target < 60 s "
                         f"at d=10^6, 200k rows: {_verdict(worst < 60) if big[0]['d'] >= 10**6 else 'not measured'}")
        for r in scale:
            if "trace" in r:
                algorithm = r.get("algorithm", "ef21")
                lines.append(f"live blocks >= 0.9 n d x 8 bytes, {algorithm}, d={r['d']} (round 2, tracemalloc):")
                lines += _audit_lines(r["trace"])
    return "\n".join(lines)

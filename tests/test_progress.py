"""The progress line and the final line of ``ef21-mpi run``: the paper's bits/n and the wire's, an ETA."""

from __future__ import annotations

import io
import re

import h5py
from helpers import ef21, write_exact_libsvm

from ef21_mpi.runtime.observers import Progress


def test_final_progress_line_gives_both_bit_counts_as_the_log_has_them(tmp_path):
    write_exact_libsvm(tmp_path / "d.svm", N=40, d=6)
    out = tmp_path / "run.h5"
    done = ef21(["run", "--dataset", str(tmp_path / "d.svm"), "--workers", "4", "--rounds", "30", "--k", "2",
                 "--log-every", "7", "--out", str(out), "--backend", "serial"])
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == f"ef21-mpi: run completed after 30 rounds; 6 rows in {out}"
    final = re.fullmatch(r"round 30/30  grad_norm_sq (\S+)  bits/n ([\d,]+) \(paper\), ([\d,]+) \(wire\)  "
                         r"[\d,]+ rounds/s", lines[-2])
    assert final, lines[-2]
    with h5py.File(out, "r") as f:  # independent count: 32 bits per coordinate without row 0 (g_i^0); all wire bits
        paper = 32 * f["coords_up"][1:].sum(axis=0).mean()
        wire = f["bits_up"][()].sum(axis=0).mean()
        last = f["grad_norm_sq"][-1]
    assert int(final.group(2).replace(",", "")) == round(paper) == 30 * 2 * 32
    assert int(final.group(3).replace(",", "")) == round(wire)
    assert float(final.group(1)) == float(f"{last:.3e}")


def test_time_left_is_the_remaining_rounds_at_the_current_rate():
    progress = Progress(total=1000, initialises=True, stream=io.StringIO())
    assert progress.line(250, 1e-3, 5.0, final=False).endswith("50 rounds/s  15 s left")
    assert progress.line(100, 1e-3, 1.0, final=False).endswith("100 rounds/s  9 s left")
    assert progress.line(10, 1e-3, 1.0, final=False).endswith("10 rounds/s  1 min 39 s left")
    assert "left" not in progress.line(1000, 1e-3, 10.0, final=True)

"""Where the workers run (runtime/placement.py): the plan on made-up nodes, cleaned library strings, and real
launches: packed, spread and network-only runs are bit-identical to the serial backend, parked ranks exit."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from helpers import MPI_LIBRARY, NETWORK_ONLY, assert_same_log, ef21, read_log, write_libsvm

from ef21_mpi.runtime.placement import RankInfo, plan, printable


def ranks_on(nodes: list[tuple[int, int]]) -> list[RankInfo]:
    """RankInfo of consecutive ranks: ``nodes`` = [(ranks on the node, cores), ...], every rank unbound."""
    infos, first = [], 0
    for count, cores in nodes:
        infos += [RankInfo(first, tuple(range(cores)), f"node{first}")] * count
        first += count
    return infos


def test_21_ranks_on_2_cores_pack_onto_one_worker_rank():
    where = plan(ranks_on([(21, 2)]), 20, "auto")
    assert where.packed and where.active == [0, 1] and where.parked == list(range(2, 21))
    assert where.blocks[0] == range(20) and all(len(b) == 0 for b in where.blocks[1:])
    assert list(where.worker_rank()) == [1] * 20
    record = json.loads(where.attrs()["placement"])
    assert record["nodes"] == [{"host": "node0", "ranks": 21, "cores": 2, "active": 2}]
    assert "19 ranks wait idle" in where.notice() and "20 workers run on 1 worker rank," in where.notice()


def test_spread_and_unoversubscribed_keep_one_block_per_rank():
    for infos, mode in ((ranks_on([(21, 2)]), "spread"), (ranks_on([(4, 8)]), "auto"), (ranks_on([(4, 8)]), "pack")):
        where = plan(infos, len(infos) - 1, mode)
        assert not where.packed and where.parked == [] and where.notice() is None
        assert list(where.worker_rank()) == list(range(1, len(infos)))


def test_two_nodes_each_keep_as_many_ranks_as_cores():
    # node A: ranks 0-5 on 4 cores -> ranks 0-3 work; node B: ranks 6-10 on 2 cores -> ranks 6, 7 work
    where = plan(ranks_on([(6, 4), (5, 2)]), 23, "auto")
    assert where.active == [0, 1, 2, 3, 6, 7]
    sizes = [len(b) for b in where.blocks]
    assert sizes == [5, 5, 5, 0, 0, 4, 4, 0, 0, 0]  # 23 workers over 5 worker ranks, contiguous, balanced
    assert list(where.worker_rank()) == [1] * 5 + [2] * 5 + [3] * 5 + [6] * 4 + [7] * 4


def test_bound_ranks_count_the_union_of_their_cpus():
    infos = [RankInfo(0, (r % 4,), "n") for r in range(8)]  # 8 ranks bound round-robin to 4 cores
    assert plan(infos, 7, "auto").active == [0, 1, 2, 3]
    one_core = [RankInfo(0, (0,), "n")] * 3  # the master alone fills the core: one worker rank all the same
    assert plan(one_core, 2, "auto").active == [0, 1]


def test_library_strings_are_cleaned():
    raw = "Open MPI v5.0.11, package: Open MPI user@localhost Distribution\x00garbage\x00"
    assert printable(raw) == "Open MPI v5.0.11, package: Open MPI user@localhost Distribution"
    assert printable("\n  MPICH Version:\t5.0.2  \nMPICH Release date: x\n") == "MPICH Version: 5.0.2"
    assert printable("a\x07b\x1b[0m  ") == "a b [0m"
    assert printable("\x00anything") == "unknown" and printable(" \n\t") == "unknown"
    assert len(printable("x" * 1000)) == 200


# --- real launches ------------------------------------------------------------------------------------------


def common_args(data, *extra):
    return ["run", "--dataset", str(data), "--algorithm", "ef21", "--k", "2", "--rounds", "40", "--seed", "3",
            "--log-every", "3", "--quiet", *extra]


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm,extra", [("ef21", ["--compressor", "rand-k"]), ("ef21-plus", []),
                                             ("ef21-sgd", ["--batch-size", "3"])])
def test_packed_run_equals_serial_and_records_where_workers_ran(algorithm, extra, tmp_path):
    """5 ranks, --placement pack: on any machine with fewer than 5 cores some ranks park; the log is serial's."""
    data = write_libsvm(tmp_path / "small.svm", N=70, seed=2)
    args = [*common_args(data), "--algorithm", algorithm, *extra]
    serial = ef21([*args, "--backend", "serial", "--workers", "4", "--out", str(tmp_path / "s.h5")])
    assert serial.returncode == 0, serial.stderr
    started = time.monotonic()
    mpi = ef21([*args, "--placement", "pack", "--out", str(tmp_path / "m.h5")], ranks=5, timeout=90)
    assert mpi.returncode == 0, mpi.stderr
    assert time.monotonic() - started < 60  # parked ranks left when the run ended
    assert_same_log(tmp_path / "s.h5", tmp_path / "m.h5")
    _, attrs = read_log(tmp_path / "m.h5")
    record = json.loads(attrs["placement"])
    cores = len(os.sched_getaffinity(0))
    active = record["active_ranks"]
    assert active == list(range(min(max(cores, 2), 5)))  # rank 0 counts as one of the node's cores
    assert record["parked_ranks"] == 5 - len(active)
    holders = np.asarray(attrs["worker_rank"])
    assert holders.shape == (4,) and set(holders) == set(active[1:]) and (np.diff(holders) >= 0).all()


@pytest.mark.mpi
def test_auto_prints_one_notice_and_quiet_does_not(tmp_path):
    data = write_libsvm(tmp_path / "small.svm", N=40)
    cores = len(os.sched_getaffinity(0))
    ranks = cores + 2  # one node, more ranks than cores: auto packs
    loud = ef21([*common_args(data)[:-1], "--rounds", "5", "--out", str(tmp_path / "a.h5")], ranks=ranks)
    quiet = ef21([*common_args(data), "--rounds", "5", "--out", str(tmp_path / "b.h5")], ranks=ranks)
    assert loud.returncode == 0 and quiet.returncode == 0, loud.stderr + quiet.stderr
    notices = [line for line in loud.stderr.splitlines() if "wait idle" in line]
    assert len(notices) == 1 and notices[0].startswith("ef21-mpi: more ranks than cores")
    assert "wait idle" not in quiet.stderr
    assert json.loads(read_log(tmp_path / "a.h5")[1]["placement"])["packed"]


@pytest.mark.mpi
def test_fault_on_a_packed_rank_fails_the_run_without_a_hang(tmp_path):
    data = write_libsvm(tmp_path / "small.svm")
    fault = {"EF21_MPI_FAULT": "rank=3,round=6,action=raise", "EF21_MPI_FAULT_ARMED": "yes, crash this run on purpose"}
    started = time.monotonic()
    failed = ef21([*common_args(data), "--log-every", "1", "--placement", "pack", "--out", str(tmp_path / "f.h5")],
                  ranks=5, env=fault, timeout=60)
    assert time.monotonic() - started < 45
    assert failed.returncode == 1, failed.stderr
    logged, attrs = read_log(tmp_path / "f.h5")
    assert f"worker 2 (rank {attrs['worker_rank'][2]}) failed in round 6" in failed.stderr
    assert attrs["status"] == "failed" and list(logged["round"]) == list(range(6))


@pytest.mark.mpi
def test_network_transport_only_equals_serial(tmp_path):
    """Shared memory off (MPICH: MPIR_CVAR_NOLOCAL + UCX over TCP; Open MPI: TCP BTL, ob1, no coll/sm): the
    messages cross the loopback network; the launch prints which transport was chosen, and it is TCP."""
    if MPI_LIBRARY not in NETWORK_ONLY:
        pytest.fail(f"no network-only recipe for the launcher's library ({MPI_LIBRARY})")
    launcher_args, env = NETWORK_ONLY[MPI_LIBRARY]
    verbose = ({"UCX_LOG_LEVEL": "info"}, []) if MPI_LIBRARY == "MPICH" else ({}, ["--mca", "btl_base_verbose", "30"])
    data = write_libsvm(tmp_path / "small.svm", N=50, seed=7)
    args = common_args(data)
    serial = ef21([*args, "--backend", "serial", "--workers", "3", "--out", str(tmp_path / "s.h5")])
    mpi = ef21([*args, "--placement", "spread", "--out", str(tmp_path / "m.h5")], ranks=4,
               env={**env, **verbose[0]}, mpi_args=[*launcher_args, *verbose[1]], timeout=120)
    assert serial.returncode == 0 and mpi.returncode == 0, serial.stderr + mpi.stderr
    assert_same_log(tmp_path / "s.h5", tmp_path / "m.h5")
    if MPI_LIBRARY == "MPICH":
        paths = [line for line in (mpi.stdout + mpi.stderr).splitlines() if "intra-node" in line]  # UCX logs to stdout
        assert paths and all("tcp/" in line and "memory" not in line for line in paths), mpi.stderr[-2000:]
    else:
        assert "init of component tcp returned success" in mpi.stderr, mpi.stderr[-2000:]
        assert "init of component sm returned success" not in mpi.stderr

"""The EF21 family beyond the paper (SPEC 8) and the unbiased compressors inside methods, through the real
``ef21-mpi run`` command: every logged number against a dense re-implementation written here, the degenerate
cases bit for bit against EF21, the wire's bit counts, and the start-up checks of the new flags."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import ef21, read_file, read_log, write_exact_libsvm

RTOL = 1e-12
N, D, N_WORKERS, LAM, SEED, ROUNDS = 60, 8, 4, 0.1, 7, 25


# --- the reference, dense, from SPEC 1.1, 2, 3, 4 and 8 -----------------------------------------------------------


def grad(A: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    sigma = 0.5 * (1.0 - np.tanh(0.5 * y * (A @ x)))
    return -(A.T @ (y * sigma)) / len(y) + LAM * 2.0 * x / (1.0 + x**2) ** 2


def loss(A: np.ndarray, y: np.ndarray, x: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, -y * (A @ x))) + LAM * np.sum(x**2 / (1.0 + x**2)))


def top_k(v: np.ndarray, k: int) -> np.ndarray:
    keep = np.lexsort((np.arange(len(v)), -np.abs(v)))[:k]
    out = np.zeros_like(v)
    out[keep] = v[keep]
    return out


def natural(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(len(v))
    out = np.zeros_like(v)
    for j, vj in enumerate(v):
        if vj != 0:
            low = 2.0 ** math.floor(math.log2(abs(vj)))
            out[j] = math.copysign(2 * low if u[j] < (abs(vj) - low) / low else low, vj)
    return out


def rand_k_unbiased(v: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    keep = np.sort(rng.choice(len(v), k, replace=False))
    out = np.zeros_like(v)
    out[keep] = v[keep] * len(v) / k
    return out


def reference(method: str, A, y, gamma: float, k: int, opt: dict) -> dict[str, np.ndarray]:
    """Rows of grad_norm_sq, loss, distortion and the bits, for x^0 = 0, --init full, the run's seed."""
    n, m = N_WORKERS, N // N_WORKERS
    shards = [(A[i * m:(i + 1) * m], y[i * m:(i + 1) * m]) for i in range(n)]
    seeds = np.random.SeedSequence(SEED).spawn(n + 1)
    rngs = [np.random.default_rng(s) for s in seeds[1:]]
    master = np.random.default_rng(seeds[0].spawn(1)[0])  # the master's loop stream: a child of its seed
    C = {"top-k": lambda v, i: top_k(v, k), "natural": lambda v, i: natural(v, rngs[i]) / (1 + 1 / 8),
         "rand-k-unbiased": lambda v, i: rand_k_unbiased(v, k, rngs[i])}[opt.get("compressor", "top-k")]
    x = np.zeros(D)
    g = [grad(Ai, yi, x) for Ai, yi in shards]
    v_i = [gi.copy() for gi in g]  # EF21-SGDM
    G = np.mean(g, axis=0)
    v, gm = G.copy(), G.copy()  # EF21-HB's v, EF21-BC's g
    rows = {"grad_norm_sq": [], "loss": [], "distortion": [], "senders": []}

    def record(sent):
        full = [grad(Ai, yi, x) for Ai, yi in shards]
        rows["grad_norm_sq"].append(float(np.sum(np.mean(full, axis=0) ** 2)))
        rows["loss"].append(np.mean([loss(Ai, yi, x) for Ai, yi in shards]))
        rows["distortion"].append(np.mean([np.sum((gi - fi) ** 2) for gi, fi in zip(g, full)]))
        rows["senders"].append(sent)

    record(np.ones(n, bool))
    for _ in range(ROUNDS):
        if method == "dcgd":
            x = x - gamma * np.mean([C(grad(Ai, yi, x), i) for i, (Ai, yi) in enumerate(shards)], axis=0)
            record(np.ones(n, bool))
            continue
        x = x - gamma * {"ef21-hb": v, "ef21-bc": gm}.get(method, G)
        sent = np.ones(n, bool)
        if method == "ef21-pp":
            sent[:] = False
            sent[master.choice(n, round(opt["participation"] * n), replace=False)] = True
        for i, (Ai, yi) in enumerate(shards):
            if not sent[i]:
                continue
            target = grad(Ai, yi, x)
            if method == "ef21-sgdm":
                batch = np.sort(rngs[i].choice(len(yi), opt["batch"], replace=False))
                v_i[i] = (1 - opt["eta"]) * v_i[i] + opt["eta"] * grad(Ai[batch], yi[batch], x)
                target = v_i[i]
            g[i] = g[i] + C(target - g[i], i)
        G = np.mean(g, axis=0)
        if method == "ef21-hb":
            v = opt["eta"] * v + G
        if method == "ef21-bc":
            gm = gm + top_k(G - gm, opt["down_k"])
        record(sent)
    return {key: np.array(value) for key, value in rows.items()}


CASES = {
    "ef21-pp": (["--participation", "0.5"], {"participation": 0.5}),
    "ef21-bc": (["--down-compressor", "top-k", "--down-k", "2"], {"down_k": 2}),
    "ef21-hb": (["--momentum", "0.6"], {"eta": 0.6}),
    "ef21-sgdm": (["--momentum", "0.3", "--batch-size", "4"], {"eta": 0.3, "batch": 4}),
    "ef21": (["--compressor", "natural"], {"compressor": "natural"}),
    "dcgd": (["--compressor", "rand-k-unbiased"], {"compressor": "rand-k-unbiased"}),
}


def run(tmp_path, name: str, args: list[str], k: int = 1) -> tuple[dict, dict]:
    out = tmp_path / f"{name}.h5"
    done = ef21(["run", "--dataset", str(tmp_path / "exact.svm"), "--workers", str(N_WORKERS), "--rounds",
                 str(ROUNDS), "--k", str(k), "--seed", str(SEED), "--stepsize-multiplier", "8", "--backend", "serial",
                 "--quiet", "--out", str(out), *args])
    assert done.returncode == 0, done.stderr
    return read_log(out)


@pytest.mark.parametrize("method", list(CASES))
def test_every_logged_number_equals_the_dense_reference(method, tmp_path):
    A, y = write_exact_libsvm(tmp_path / "exact.svm", N=N, d=D, seed=2)
    args, opt = CASES[method]
    k = 3 if method == "dcgd" else 1
    logged, attrs = run(tmp_path, method, ["--algorithm", method, *args], k=k)
    ref = reference(method, A, y, float(attrs["gamma"]), k, opt)
    for key in ("grad_norm_sq", "loss", "distortion"):
        if method == "dcgd" and key == "distortion":
            continue
        np.testing.assert_allclose(logged[key], ref[key], rtol=RTOL, atol=1e-300, err_msg=key)
    per_message = {"natural": 8 * math.ceil(9 * D / 8), "rand-k-unbiased": k * 96}.get(opt.get("compressor"), k * 96)
    np.testing.assert_array_equal(logged["bits_up"][1:], per_message * ref["senders"][1:])
    assert (logged["bits_up"][0] == (64 * D if method != "dcgd" else per_message)).all()
    down = logged["bits_down"]
    if method == "ef21-pp":  # x, then the participation mask, one bit per worker packed into a byte
        assert down[0] == 64 * D and (down[1:] == 64 * D + 8).all()
        assert (ref["senders"][1:].sum(axis=1) == 2).all()
    elif method == "ef21-bc":  # x^0, then g^0 dense, then C_M's (index, value) pairs
        assert list(down[:2]) == [64 * D, 64 * D] and (down[2:] == 2 * 96).all()
    else:
        assert (down == 64 * D).all()
    if opt.get("compressor") in ("natural", "rand-k-unbiased"):
        omega = 1 / 8 if opt["compressor"] == "natural" else D / k - 1
        assert attrs["omega"] == omega
        assert attrs["compressor_scaling"] == (1 / (omega + 1) if method == "ef21" else 1.0)
        assert attrs["alpha"] == 1 / (omega + 1)
    assert attrs["stepsize_rule"] == ("theorem-2" if method == "ef21" else "ef21-theorem-2")


DEGENERATE = {
    "ef21-pp p=1": ["--algorithm", "ef21-pp", "--participation", "1"],
    "ef21-bc identity downlink": ["--algorithm", "ef21-bc", "--down-compressor", "identity"],
    "ef21-hb eta=0": ["--algorithm", "ef21-hb", "--momentum", "0"],
    "ef21-sgdm eta=1 full batches": ["--algorithm", "ef21-sgdm", "--momentum", "1", "--batch-size", str(N // N_WORKERS)],
}


@pytest.mark.parametrize("compressor", ["top-k", "rand-k"])
def test_degenerate_cases_are_ef21_bit_for_bit(compressor, tmp_path):
    write_exact_libsvm(tmp_path / "exact.svm", N=N, d=D, seed=2)
    run(tmp_path, "ef21", ["--compressor", compressor], k=2)
    ef21_data, _ = read_file(tmp_path / "ef21.h5")
    for name, args in DEGENERATE.items():
        run(tmp_path, "other", ["--compressor", compressor, "--overwrite", *args], k=2)
        data, _ = read_file(tmp_path / "other.h5")
        assert set(data) == set(ef21_data)
        for key in set(data) - {"wall_time"}:
            np.testing.assert_array_equal(data[key], ef21_data[key], err_msg=f"{name}: {key}")
            assert data[key].tobytes() == ef21_data[key].tobytes(), f"{name}: {key}"  # +0.0 and -0.0 differ here


BAD = [
    (["--algorithm", "ef21-pp"], "--algorithm ef21-pp needs --participation"),
    (["--algorithm", "ef21-pp", "--participation", "1.5"], "--participation 1.5 is out of range: expected 0 < p <= 1"),
    (["--algorithm", "ef21-pp", "--participation", "0.01"], "selects round(p n) = 0 of the 4 workers"),
    (["--algorithm", "ef21-hb", "--momentum", "1"], "--momentum 1.0 is out of range for ef21-hb: expected 0 <= eta < 1"),
    (["--algorithm", "ef21-sgdm", "--momentum", "0.5"], "--algorithm ef21-sgdm needs --batch-size TAU"),
    (["--momentum", "0.5"], "--momentum is only used by --algorithm ef21-hb, ef21-sgdm, not ef21"),
    (["--algorithm", "ef21-bc"], "--algorithm ef21-bc needs --down-compressor"),
    (["--algorithm", "ef21-bc", "--down-compressor", "top-k", "--down-k", "99"], "k = 99 is out of range"),
    (["--compressor", "dithering"], "the dithering compressor needs --levels s"),
    (["--levels", "3"], "--levels is only used by the dithering compressor"),
    (["--compressor", "dithering", "--levels", "0"], "--levels must be at least 1, got 0"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m for _, m in BAD])
def test_bad_options_are_one_line_errors(args, message, tmp_path):
    write_exact_libsvm(tmp_path / "exact.svm", N=N, d=D, seed=2)
    out = tmp_path / "x.h5"
    done = ef21(["run", "--dataset", str(tmp_path / "exact.svm"), "--workers", "4", "--quiet", "--out", str(out),
                 *args])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ef21-mpi: error: ") and message in lines[0], done.stderr
    assert not out.exists()

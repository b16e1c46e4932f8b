"""The run log's one schema: RunLog writes it, read_log / read_attrs read it, with one-line errors for bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from helpers import write_pm1_libsvm

from ef21_mpi.cli.main import main
from ef21_mpi.errors import InputError
from ef21_mpi.runtime import logschema, resume
from ef21_mpi.runtime.logschema import COLUMNS, STATUSES, RunLog, read_attrs, read_log, schema_problems


def small_log(path, *, status="running", extra=("loss_gap",)) -> RunLog:
    """Three rows of a 2-worker, 3-coordinate run, written and flushed by the package's writer."""
    log = RunLog(path, {"algorithm": "ef21", "k": np.int64(1), "shard_sizes": np.array([4, 5]), "status": status,
                        "label": b"bytes", "n_workers": 2, "d": 3}, n=2, d=3, extra_series=extra)
    for t in range(3):
        log.append(t, bits_up=np.array([64 * t, 96 * t]), coords_up=np.array([t, t]), bits_down=192,
                   grad_norm_sq=1.0 / (t + 1), loss=0.5 - t / 10, distortion=0.25 * t, wall_time=0.1 * t,
                   **{name: 0.01 * t for name in extra})
    log.flush(np.array([1.0, -2.0, 0.5]))
    return log


def test_read_log_gives_back_what_the_writer_wrote(tmp_path):
    log = small_log(tmp_path / "run.h5")
    data = read_log(tmp_path / "run.h5")
    assert data.rows == 3 and list(data.columns) == [*COLUMNS, "loss_gap"] and list(data.extra) == ["loss_gap"]
    for name in (*COLUMNS, "loss_gap"):
        np.testing.assert_array_equal(data[name], log.column(name), err_msg=name)
        assert data[name].dtype == log.column(name).dtype, name
    np.testing.assert_array_equal(data.x_final, [1.0, -2.0, 0.5])
    assert data["bits_up"].shape == (3, 2) and data["bits_up"].dtype == np.int64
    # attributes as plain Python values: numpy scalars unwrapped, bytes decoded, arrays kept
    a = data.attrs
    assert type(a["k"]) is int and a["k"] == 1 and a["label"] == "bytes" and a["rows"] == 3
    assert isinstance(a["shard_sizes"], np.ndarray) and a["shard_sizes"].tolist() == [4, 5]
    attrs = read_attrs(tmp_path / "run.h5")
    assert attrs.keys() == a.keys() and attrs["label"] == "bytes" and type(attrs["rows"]) is int


def test_a_real_run_log_meets_spec_7_in_full(tmp_path):
    write_pm1_libsvm(tmp_path / "syn.svm")
    out = tmp_path / "run.h5"
    assert main(["run", "--dataset", str(tmp_path / "syn.svm"), "--workers", "4", "--rounds", "5", "--out", str(out),
                 "--quiet", "--backend", "serial", "--problem", "least-squares"]) == 0
    data = read_log(out, need=logschema.DATASETS)
    assert schema_problems(data) == []
    assert data.attrs["status"] in STATUSES and list(data.extra) == ["loss_gap"]
    # what the check finds in a log written without the run's attributes
    problems = schema_problems(read_log(small_log(tmp_path / "bare.h5").path, need_attrs=()))
    assert "no attribute gamma" in problems and "no attribute command_line" in problems
    assert not any(p.startswith(("no dataset ", "dataset ")) for p in problems)


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as err:
        read_log(tmp_path / "missing.h5")
    assert str(err.value) == f"{tmp_path / 'missing.h5'}: no such file"
    with pytest.raises(InputError, match="no such file"):
        read_attrs(tmp_path / "missing.h5")


def test_a_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("not hdf5\nat all\n")
    for read in (read_log, read_attrs):
        with pytest.raises(InputError) as err:
            read(path)
        message = str(err.value)
        assert message.startswith(f"{path}: not an HDF5 file, or it cannot be read (")
        assert "signature" in message and "\n" not in message


def test_an_hdf5_file_that_is_not_a_run_log_names_what_is_missing(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(3)
    with pytest.raises(InputError) as err:
        read_log(path)
    assert str(err.value) == (f"{path}: not an ef21-mpi run log (missing datasets round, grad_norm_sq, loss, "
                              "distortion, wall_time, bits_up, coords_up, bits_down; attributes algorithm)")
    small_log(path)
    with h5py.File(path, "a") as f:
        del f["coords_up"], f["x_final"]
    with pytest.raises(InputError) as err:
        read_log(path, need=logschema.DATASETS, need_attrs=("algorithm", "gamma"))
    assert str(err.value) == (f"{path}: not an ef21-mpi run log (missing datasets coords_up, x_final; "
                              "attributes gamma)")
    with pytest.raises(InputError) as err:
        read_attrs(path, need=("config", "status"))
    assert str(err.value) == f"{path}: not an ef21-mpi run log (missing attributes config)"
    assert read_log(path, need=("round", "loss")).x_final is None  # what a reader does not need may be absent


def test_wrong_shapes_bad_status_and_links_are_refused(tmp_path):
    path = small_log(tmp_path / "run.h5").path
    with h5py.File(path, "a") as f:
        del f["bits_up"]
        f["bits_up"] = np.zeros(3, dtype=np.int64)
    with pytest.raises(InputError) as err:
        read_log(path)
    assert str(err.value) == f"{path}: dataset bits_up is int64 [3], a run log has int64 [R, n] with R = 3 rows " \
                             "(the length of round)"
    path = small_log(tmp_path / "status.h5", status="running").path
    with h5py.File(path, "a") as f:
        f.attrs["status"] = "finished"
    with pytest.raises(InputError, match="status 'finished' is not one of running, completed, converged"):
        read_log(path)
    path = small_log(tmp_path / "link.h5").path
    with h5py.File(path, "a") as f:
        del f["loss"]
        f["loss"] = h5py.SoftLink("/grad_norm_sq")
    with pytest.raises(InputError, match="loss is an HDF5 SoftLink; a run log's datasets are not links"):
        read_log(path)
    with pytest.raises(ValueError, match="status 'done' is not one of"):
        small_log(tmp_path / "w.h5").flush(np.zeros(3), status="done")


def test_one_retry_after_an_oserror(tmp_path, monkeypatch):
    """A reader that opens the file while the writer renames a snapshot over it tries once more."""
    path = small_log(tmp_path / "run.h5").path
    real, calls = h5py.File, []

    def flaky(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise OSError("Unable to synchronously open file (truncated file)")
        return real(*args, **kwargs)

    monkeypatch.setattr(logschema.h5py, "File", flaky)
    assert read_log(path).rows == 3 and len(calls) == 2


def test_resume_words_its_errors_with_the_flag(tmp_path):
    with pytest.raises(InputError) as err:
        resume.read_attrs(tmp_path / "missing.h5")
    assert str(err.value) == f"--resume {tmp_path / 'missing.h5'}: no such file"
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(InputError, match=r"^--resume .*text\.h5: not an HDF5 file"):
        resume.read_attrs(tmp_path / "text.h5")
    small_log(tmp_path / "noconfig.h5")
    with pytest.raises(InputError, match=r"noconfig\.h5: not an ef21-mpi run log \(missing attributes config\)"):
        resume.read_attrs(tmp_path / "noconfig.h5")


def test_netcdf_tools_see_named_dimensions_round_as_coordinate_and_units(tmp_path):
    """xarray (h5netcdf engine) reads the log with its axes named by the HDF5 dimension scales."""
    import xarray as xr

    write_pm1_libsvm(tmp_path / "d.svm", N=60, d=7)
    out = tmp_path / "run.h5"
    assert main(["run", "--dataset", str(tmp_path / "d.svm"), "--workers", "3", "--rounds", "20", "--log-every", "5",
                 "--out", str(out), "--quiet", "--backend", "serial", "--problem", "least-squares"]) == 0
    with xr.open_dataset(out, engine="h5netcdf") as ds, h5py.File(out, "r") as f:
        assert dict(ds.sizes) == {"round": 5, "worker": 3, "coordinate": 7}
        assert ds["bits_up"].dims == ("round", "worker") and ds["x_final"].dims == ("coordinate",)
        for name in ("grad_norm_sq", "loss", "distortion", "wall_time", "bits_down", "loss_gap"):
            assert ds[name].dims == ("round",)
        np.testing.assert_array_equal(ds["round"].values, [0, 5, 10, 15, 20])
        np.testing.assert_array_equal(ds["grad_norm_sq"].values, f["grad_norm_sq"][()])
        assert ds["wall_time"].attrs["units"] == "s" and ds["bits_up"].attrs["units"] == "bit"
    assert read_log(out).extra.keys() == {"loss_gap"}  # the axes are not mistaken for per-row series

"""Tests for the data-set registry: lookup order, checksums, listing and (offline) fetching."""

import bz2
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ef21_mpi.cli.main import main
from ef21_mpi.core import datasets as registry
from ef21_mpi.core.datasets import DatasetInfo, data_dirs, fetch, find_dataset_file, list_datasets, load

TINY = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "tiny.svm"
A9A_SHA = "f5d5ffd8d865ff41328e7ee043e4b020816914ff6843ff15b98905ddbedce906"
SMALL = b"+1 1:1 3:1\n-1 2:1\n"  # a valid LibSVM file that is not a9a


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No env var, an empty project data folder, and a fresh current directory."""
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    monkeypatch.setattr(registry, "PROJECT_DATA_DIR", tmp_path / "project_data")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


# SPEC section 2's table, copied by hand (N, declared d, sha256 of the uncompressed text), in SPEC's order
SPEC_TABLE = {
    "phishing": (11055, 68, "0cf66ef36604c393da9359b2e5d894a2df8aee31fd184633cefa138add2ef08a"),
    "mushrooms": (8124, 112, "f39a4eb628dc61a7d43760815b061c9e497aa728ce1ad8bde57a09ef6043b538"),
    "a9a": (32561, 123, "f5d5ffd8d865ff41328e7ee043e4b020816914ff6843ff15b98905ddbedce906"),
    "w8a": (49749, 300, "6a9fa8fd5f524303240a5db07d4b3d4a51e8b7b4b20a914105d8e3e8c81640f2"),
}
SPEC_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/"


def test_registry_matches_spec():
    assert list(registry.REGISTRY) == list(SPEC_TABLE)  # the order error messages list them in
    for name, (N, d, sha256) in SPEC_TABLE.items():
        info = registry.REGISTRY[name]
        assert (info.name, info.N, info.d, info.sha256) == (name, N, d, sha256), name
        assert (info.url, info.filename) == (SPEC_URL + name, f"{name}.bz2"), name
    assert A9A_SHA == SPEC_TABLE["a9a"][2]


def test_data_dirs_order(isolated, monkeypatch):
    explicit, env = isolated / "explicit", isolated / "env"
    monkeypatch.setenv(registry.ENV_VAR, str(env))
    assert data_dirs(str(explicit)) == [explicit, env, isolated / "project_data", isolated / "cwd" / "data"]
    assert data_dirs(None) == [env, isolated / "project_data", isolated / "cwd" / "data"]
    assert data_dirs(str(env)) == [env, isolated / "project_data", isolated / "cwd" / "data"]  # no duplicates


def test_project_data_dir_is_repo_data_folder():
    """The default folder is the repository's real data/ folder: its README documents the same four sets."""
    folder = registry.PROJECT_DATA_DIR
    assert folder.is_dir() and folder.samefile(Path(__file__).resolve().parents[1] / "data")
    assert (folder / "fixtures" / "tiny.svm").is_file()
    readme = (folder / "README.md").read_text(encoding="utf-8")
    for name, (N, d, sha256) in SPEC_TABLE.items():
        assert f"| {name} | {N} | {d} |" in readme and sha256 in readme and SPEC_URL + name in readme, name


def test_lookup_order_first_folder_wins(isolated, monkeypatch):
    explicit, env = isolated / "explicit", isolated / "env"
    cwd_data = isolated / "cwd" / "data"
    for folder in (explicit, env, cwd_data):
        folder.mkdir()
    monkeypatch.setenv(registry.ENV_VAR, str(env))
    (cwd_data / "a9a.txt").write_bytes(SMALL)
    assert find_dataset_file("a9a", str(explicit)) == cwd_data / "a9a.txt"
    (env / "a9a.xz").write_bytes(b"")
    assert find_dataset_file("a9a", str(explicit)) == env / "a9a.xz"
    (explicit / "a9a.gz").write_bytes(b"")
    assert find_dataset_file("a9a", str(explicit)) == explicit / "a9a.gz"
    (explicit / "a9a.bz2").write_bytes(b"")
    assert find_dataset_file("a9a", str(explicit)) == explicit / "a9a.bz2"
    (explicit / "a9a").write_bytes(b"")
    assert find_dataset_file("a9a", str(explicit)) == explicit / "a9a"


def test_path_is_returned_as_is(isolated):
    assert find_dataset_file(str(TINY), None) == TINY


def test_unknown_name_lists_known_names(isolated):
    with pytest.raises(ValueError) as err:
        find_dataset_file("a8a", None)
    assert str(err.value) == "unknown data set 'a8a': no such file, and not one of phishing, mushrooms, a9a, w8a"


def test_directory_is_not_a_data_file(isolated):
    with pytest.raises(ValueError, match="is a directory"):
        find_dataset_file(str(isolated), None)


def test_known_but_missing_says_where_it_looked(isolated):
    with pytest.raises(ValueError) as err:
        find_dataset_file("w8a", str(isolated / "explicit"))
    message = str(err.value)
    assert message.startswith("data set w8a not found: looked for w8a[.bz2|.gz|.xz|.txt] in ")
    for folder in (isolated / "explicit", isolated / "project_data", isolated / "cwd" / "data"):
        assert str(folder) in message
    assert "ef21-mpi data fetch w8a" in message


def test_checksum_mismatch_of_tampered_copy(isolated):
    path = isolated / "a9a.bz2"
    path.write_bytes(bz2.compress(SMALL))
    got = hashlib.sha256(SMALL).hexdigest()
    with pytest.raises(ValueError) as err:
        load("a9a", str(isolated))
    assert str(err.value).startswith(f"checksum mismatch for a9a ({path}): expected {A9A_SHA}, got {got}")
    ds = load("a9a", str(isolated), verify=False)  # unchecked, but still read with a9a's declared d
    assert (ds.name, ds.N, ds.d, ds.sha256) == ("a9a", 2, 123, got)


def test_load_arbitrary_path(isolated):
    ds = load(str(TINY))
    assert (ds.name, ds.N, ds.d) == ("tiny", 12, 6)
    assert load(str(TINY), d=9).d == 9


def test_file_identical_to_registered_set_gets_its_dimension(isolated, monkeypatch):
    sha = hashlib.sha256(TINY.read_bytes()).hexdigest()
    info = DatasetInfo("tinyset", 12, 10, sha, "https://example.invalid/tinyset", "tinyset.bz2")
    monkeypatch.setitem(registry._BY_SHA256, sha, info)
    ds = load(str(TINY))
    assert (ds.name, ds.d, ds.A.shape) == ("tiny", 10, (12, 10))


def test_list_datasets_reports_state(isolated, capsys):
    (isolated / "a9a.bz2").write_bytes(bz2.compress(SMALL))
    (isolated / "w8a.bz2").write_bytes(b"corrupt")
    rows = {r["name"]: r for r in list_datasets(str(isolated))}
    assert rows["a9a"] == {
        "name": "a9a",
        "N": 32561,
        "d": 123,
        "path": str(isolated / "a9a.bz2"),
        "checksum": "MISMATCH",
    }
    assert rows["w8a"]["checksum"] == "MISMATCH"
    assert rows["phishing"] == {"name": "phishing", "N": 11055, "d": 68, "path": None, "checksum": "missing"}
    assert main(["data", "list", "--data-dir", str(isolated)]) == 0
    out = capsys.readouterr().out
    assert "a9a" in out and "MISMATCH" in out and "missing" in out and "ef21-mpi data fetch" in out


def test_normalise():
    assert registry.normalise(b"1 1:1 \r\n-1 2:1\r\n\r\n\n") == b"1 1:1 \n-1 2:1\n"
    assert registry.normalise(b"1 1:1") == b"1 1:1\n"


def _offline(*args, **kwargs):
    raise urllib.error.URLError("Temporary failure in name resolution")


def test_fetch_offline_gives_clear_error(isolated, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    target = isolated / "dl"
    with pytest.raises(ValueError) as err:
        fetch("a9a", str(target))
    assert str(err.value) == (
        "cannot download a9a from https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/a9a: "
        f"Temporary failure in name resolution; copy the file into {target} by hand (see data/README.md)"
    )
    assert not target.exists()


def test_fetch_http_error(isolated, monkeypatch):
    def not_found(url, timeout):
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)

    monkeypatch.setattr(urllib.request, "urlopen", not_found)
    with pytest.raises(ValueError, match="cannot download w8a from .*: HTTP 404 Not Found; copy the file"):
        fetch("w8a", str(isolated))


def test_fetch_default_target_is_env_then_project_folder(isolated, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    with pytest.raises(ValueError, match=f"into {isolated / 'project_data'} by hand"):
        fetch("a9a", None)
    monkeypatch.setenv(registry.ENV_VAR, str(isolated / "env"))
    with pytest.raises(ValueError, match=f"into {isolated / 'env'} by hand"):
        fetch("a9a", None)


@pytest.fixture
def tiny_entry(monkeypatch):
    """Register the fixture (normalised) as a fetchable data set, so fetch can succeed offline."""
    text = registry.normalise(TINY.read_bytes().replace(b"\n", b"\r\n"))
    info = DatasetInfo("tiny", 12, 6, hashlib.sha256(text).hexdigest(), "https://example.invalid/tiny", "tiny.bz2")
    monkeypatch.setitem(registry.REGISTRY, "tiny", info)
    return info, text


def test_fetch_normalises_verifies_and_writes_atomically(isolated, monkeypatch, tiny_entry, capsys):
    info, text = tiny_entry
    crlf = text.replace(b"\n", b"\r\n") + b"\r\n\r\n"  # what a server might send
    calls = []
    monkeypatch.setattr(registry, "_download", lambda url, timeout: calls.append((url, timeout)) or crlf)
    path = fetch("tiny", str(isolated / "dl"))
    assert path == isolated / "dl" / "tiny.bz2"
    assert calls == [(info.url, registry.DOWNLOAD_TIMEOUT)]
    assert bz2.decompress(path.read_bytes()) == text
    assert os.listdir(isolated / "dl") == ["tiny.bz2"]  # no temporary file left behind
    ds = load("tiny", str(isolated / "dl"))
    assert (ds.N, ds.d, ds.sha256) == (12, 6, info.sha256)
    # a verified copy is kept: no second download
    monkeypatch.setattr(registry, "_download", _offline)
    assert main(["data", "fetch", "tiny", "--data-dir", str(isolated / "dl")]) == 0
    assert capsys.readouterr().out == f"tiny: {path} (sha256 ok)\n"


def test_fetch_checksum_mismatch_writes_nothing(isolated, monkeypatch, tiny_entry):
    monkeypatch.setattr(registry, "_download", lambda url, timeout: SMALL)
    with pytest.raises(ValueError, match=r"checksum mismatch for tiny downloaded from .*; nothing written$"):
        fetch("tiny", str(isolated / "dl"))
    assert not (isolated / "dl").exists()


def test_fetch_unknown_name(isolated):
    with pytest.raises(ValueError, match="cannot fetch 'a8a': not a registered data set"):
        fetch("a8a", str(isolated))


# the real data sets: the conftest's data_dir fixture skips without them, or fails under EF21_REQUIRE_DATA=1


@pytest.mark.parametrize("name", ["phishing", "mushrooms", "a9a", "w8a"])
def test_real_data_sets_load_with_checksum(data_dir, isolated, name):
    N, d, sha256 = SPEC_TABLE[name]
    ds = load(name, str(data_dir))
    assert (ds.name, ds.N, ds.d, ds.sha256) == (name, N, d, sha256)
    assert ds.path == str(data_dir / f"{name}.bz2")


def test_real_data_sets_list_ok(data_dir, isolated):
    assert {r["name"]: r["checksum"] for r in list_datasets(str(data_dir))} == dict.fromkeys(SPEC_TABLE, "ok")

"""The paper's four LibSVM data sets: where to find them locally, how to check and fetch them.

A data set is named either by its registry name (``a9a``), which is looked up in the data folders
and checked against the sha256 of its uncompressed text, or by a path to any LibSVM file.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import hashlib
import http.client
import os
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ef21_mpi.core.data import Dataset, file_stem, parse_libsvm, read_uncompressed

ENV_VAR = "EF21_DATA_DIR"
PROJECT_DATA_DIR = Path(__file__).resolve().parents[2] / "data"
BASE_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/"
SUFFIXES = ("", ".bz2", ".gz", ".xz", ".txt")
DOWNLOAD_TIMEOUT = 20.0  # seconds


@dataclass(frozen=True)
class DatasetInfo:
    """A registered data set: its shape, the sha256 of its normalised uncompressed text, its origin."""

    name: str
    N: int
    d: int  # declared dimension (SPEC 1.1), not the largest index that happens to occur
    sha256: str
    url: str  # the official plain-text original
    filename: str  # what ``fetch`` writes into the data folder


def _info(name: str, N: int, d: int, sha256: str) -> DatasetInfo:
    return DatasetInfo(name, N, d, sha256, BASE_URL + name, name + ".bz2")


# SPEC section 2. The checksums are of the normalised text (LF line endings, no trailing empty
# lines, one final newline); the official files may differ in line endings, so ``fetch``
# normalises before hashing.
REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        _info("phishing", 11055, 68, "0cf66ef36604c393da9359b2e5d894a2df8aee31fd184633cefa138add2ef08a"),
        _info("mushrooms", 8124, 112, "f39a4eb628dc61a7d43760815b061c9e497aa728ce1ad8bde57a09ef6043b538"),
        _info("a9a", 32561, 123, "f5d5ffd8d865ff41328e7ee043e4b020816914ff6843ff15b98905ddbedce906"),
        _info("w8a", 49749, 300, "6a9fa8fd5f524303240a5db07d4b3d4a51e8b7b4b20a914105d8e3e8c81640f2"),
    )
}
_BY_SHA256 = {info.sha256: info for info in REGISTRY.values()}


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for registered data sets, in order: ``--data-dir``, ``$EF21_DATA_DIR``,
    the project's ``data/``, then ``./data``."""
    candidates = [data_dir, os.environ.get(ENV_VAR) or None, PROJECT_DATA_DIR, Path.cwd() / "data"]
    dirs: list[Path] = []
    for c in candidates:
        if c is None:
            continue
        p = Path(c).expanduser()
        if all(p.resolve() != q.resolve() for q in dirs):
            dirs.append(p)
    return dirs


def find_dataset_file(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The file holding data set ``name`` (registry name or path); ValueError says where it looked."""
    if name in REGISTRY:
        dirs = data_dirs(data_dir)
        for folder in dirs:
            for suffix in SUFFIXES:
                candidate = folder / (name + suffix)
                if candidate.is_file():
                    return candidate
        if Path(name).is_file():
            return Path(name)
        looked = ", ".join(str(p) for p in dirs)
        raise ValueError(
            f"data set {name} not found: looked for {name}[{'|'.join(SUFFIXES[1:])}] in {looked}; "
            f"run 'ef21-mpi data fetch {name}' or copy the file there by hand (see data/README.md)"
        )
    path = Path(name).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"data set path {path} is a loop of symbolic links") from None
        if err.errno == errno.ENAMETOOLONG:
            raise ValueError(f"data set path {path}: a name in it is too long for the file system") from None
    else:
        if stat.S_ISREG(mode):
            return path
        if stat.S_ISDIR(mode):
            raise ValueError(f"data set path is a directory, expected a LibSVM file: {path}")
        raise ValueError(f"data set path {path} is not a regular file (a FIFO, socket or device)")
    raise ValueError(f"unknown data set {name!r}: no such file, and not one of {', '.join(REGISTRY)}")


def load(
    name_or_path: str,
    data_dir: str | os.PathLike | None = None,
    verify: bool = True,
    d: int | None = None,
) -> Dataset:
    """Load a registered data set (checking its sha256 if ``verify``) or any LibSVM file.

    A registered set is read with its declared ``d``. An arbitrary file is read with ``d`` if
    given; otherwise, if its content is byte-identical to a registered set, with that set's ``d``
    (a copy of a9a under another name still has d = 123), else with its largest index.
    """
    path = find_dataset_file(name_or_path, data_dir)
    data = read_uncompressed(path)
    sha256 = hashlib.sha256(data).hexdigest()
    info = REGISTRY.get(name_or_path)
    if info is not None:
        if verify and sha256 != info.sha256:
            raise ValueError(
                f"checksum mismatch for {info.name} ({path}): expected {info.sha256}, got {sha256}; "
                f"re-fetch it with 'ef21-mpi data fetch {info.name}'"
            )
        name = info.name
    else:
        info = _BY_SHA256.get(sha256)
        name = file_stem(path)
    if d is None and info is not None:
        d = info.d
    return parse_libsvm(data, str(path), d=d, name=name)


def list_datasets(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """One row per registered data set: name, N, d, path (or None) and checksum ok/MISMATCH/missing."""
    rows = []
    for info in REGISTRY.values():
        row = {"name": info.name, "N": info.N, "d": info.d, "path": None, "checksum": "missing"}
        try:
            path = find_dataset_file(info.name, data_dir)
        except ValueError:
            rows.append(row)
            continue
        row["path"] = str(path)
        try:
            ok = hashlib.sha256(read_uncompressed(path)).hexdigest() == info.sha256
        except ValueError:  # unreadable or corrupt compressed file
            ok = False
        row["checksum"] = "ok" if ok else "MISMATCH"
        rows.append(row)
    return rows


def normalise(text: bytes) -> bytes:
    """The canonical byte form the checksums refer to: LF endings, no trailing empty lines, one final LF."""
    return text.replace(b"\r\n", b"\n").rstrip(b"\n") + b"\n"


def _download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def fetch(name: str, data_dir: str | os.PathLike | None = None, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Download a registered data set into the first data folder as ``NAME.bz2``, checksum-verified.

    Nothing is written unless the normalised download matches the registry; the file appears
    atomically (written to a temporary name, then renamed). A verified copy already there is kept.
    """
    info = REGISTRY.get(name)
    if info is None:
        raise ValueError(f"cannot fetch {name!r}: not a registered data set; expected one of {', '.join(REGISTRY)}")
    folder = data_dirs(data_dir)[0]
    target = folder / info.filename
    if target.is_file():
        try:
            if hashlib.sha256(read_uncompressed(target)).hexdigest() == info.sha256:
                return target
        except ValueError:
            pass  # corrupt: download again
    try:
        text = normalise(_download(info.url, timeout))
    except (OSError, http.client.HTTPException, ValueError) as err:
        if isinstance(err, urllib.error.HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        else:
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise ValueError(
            f"cannot download {name} from {info.url}: {reason}; "
            f"copy the file into {folder} by hand (see data/README.md)"
        ) from None
    sha256 = hashlib.sha256(text).hexdigest()
    if sha256 != info.sha256:
        raise ValueError(
            f"checksum mismatch for {name} downloaded from {info.url}: expected {info.sha256}, "
            f"got {sha256}; nothing written"
        )
    tmp = folder / f".{info.filename}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(bz2.compress(text, 9))
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ValueError(f"cannot write {target}: {err.strerror or err}") from None
    return target

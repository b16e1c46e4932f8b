"""Parsed data sets kept for the life of the process, so that a long-lived process running many configurations
(a sweep's pool of workers, a notebook calling `ef21_mpi.simulate`) reads and parses each file once.

A file is recognised by its path, size, modification time and inode: a file changed on disk is read again (and
its checksum checked again). The cached arrays are made read-only, so a run cannot change the data of the next.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from ef21_mpi.core.data import Dataset
from ef21_mpi.core.datasets import find_dataset_file, load

KEEP = 4  # data sets held at a time (the paper's four)
_loaded: OrderedDict[tuple, Dataset] = OrderedDict()


def load_dataset(name_or_path: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """`core.datasets.load`, from memory when this process has already read the same, unchanged file."""
    path = find_dataset_file(name_or_path, data_dir)
    st = os.stat(path)
    key = (name_or_path, str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _loaded:
        _loaded.move_to_end(key)
        return _loaded[key]
    dataset = load(name_or_path, data_dir)
    for array in (dataset.A.data, dataset.A.indices, dataset.A.indptr, dataset.y):
        array.flags.writeable = False
    _loaded[key] = dataset
    while len(_loaded) > KEEP:
        _loaded.popitem(last=False)
    return dataset

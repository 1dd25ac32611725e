"""Read a weights file written by ``torch.save`` without torch: its tensors come back as numpy arrays.

A ``torch.save`` file is a zip archive: ``<name>/data.pkl`` (a pickle whose tensors refer to storages by key)
and ``<name>/data/<key>`` (each storage's raw bytes, little-endian). The pickle is read with an unpickler that
knows only what a weights file holds: dicts, lists, numbers, strings, ``OrderedDict`` and tensors of the
dtypes below. Anything else (code, a class of its own) is refused, as ``torch.load(weights_only=True)`` does.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class WeightsFileError(ValueError):
    """The file is not a ``torch.save`` archive of plain data and tensors."""


def _rebuild_tensor(
    storage: npt.NDArray[Any], offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> npt.NDArray[Any]:
    """``torch._utils._rebuild_tensor_v2``: a view of ``storage`` (strides in elements), copied out."""
    if offset < 0 or any(s < 0 for s in stride) or any(n < 0 for n in size):
        raise WeightsFileError("a tensor with a negative offset, size or stride")
    if not size:
        return np.array(storage[offset])
    end = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
    if min(size) > 0 and end > len(storage):
        raise WeightsFileError("a tensor reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * storage.itemsize for s in stride), writeable=False
    )
    return np.array(view)


class _Unpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(archive.open(f"{prefix}/data.pkl"))
        self._archive, self._prefix = archive, prefix
        self._storages: dict[str, npt.NDArray[Any]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        raise WeightsFileError(f"a weights file may not hold {module}.{name}")

    def persistent_load(self, pid: Any) -> npt.NDArray[Any]:
        """``('storage', storage type, key, location, numel)``: the storage's bytes as a flat array."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise WeightsFileError(f"unknown persistent reference {pid!r}")
        dtype, key = pid[1], str(pid[2])
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}/data/{key}")
            self._storages[key] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        return self._storages[key]


def load(path: str | Path) -> Any:
    """The object ``torch.save`` wrote to ``path``, its tensors as (writable) numpy arrays."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise WeightsFileError(f"{path} is not a torch.save archive (no single data.pkl)")
            prefix = pickles[0].split("/")[0]
            order = f"{prefix}/byteorder"
            if order in archive.namelist() and archive.read(order).strip() != b"little":
                raise WeightsFileError(f"{path} is big-endian")
            return _Unpickler(archive, prefix).load()
    except WeightsFileError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, EOFError, ValueError, TypeError, IndexError) as exc:
        # a damaged archive, or a pickle whose calls do not fit what they call
        raise WeightsFileError(f"{path} is not a readable torch.save archive: {exc}") from exc

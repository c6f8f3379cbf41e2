"""Measurements that cannot change, reused across runs: a model's outputs and accuracy on a data set, its gzip
size, its memory probe.

A value is stored as a small cache record (``<kind>-<key>``) whose key is everything it depends on: the
artifact's sha256, the backend, the runtime and library versions, the runtime threads and the hardware
fingerprint (:meth:`MeasurementStore.scope`), plus what was measured (data hash, output, metric, batch).
Change any one byte of them and the key changes, so nothing reused is stale. Latency, throughput and load
are never stored: they are measured every run.

A record that cannot be decoded is ignored with a warning and measured again; ``remeasure=True`` reads no
record (but still writes). Outputs larger than :data:`MAX_OUTPUT_BYTES` are not stored (nor kept: top-k
metrics stream them, see :class:`pytest_tfopt.runnable.RunnableModel`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..hardware import hardware_id
from .memory import MemoryStats

#: outputs (all arrays of one data set, bytes) up to this size are kept in memory and stored; larger ones stream
MAX_OUTPUT_BYTES = 16 * 2**20
#: dtypes outputs may be stored in (no object arrays: records are data, never code)
_DTYPES = {"float16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"}


class Records(Protocol):
    """Where records live (:class:`pytest_tfopt.cache.ArtifactCache`): signed, trusted small JSON documents."""

    def read_record(self, name: str) -> dict[str, Any] | None: ...

    def write_record(self, name: str, doc: dict[str, Any]) -> None: ...


@dataclass
class ReuseStats:
    """How many measurements this process took from records (``reused``) and took itself (``measured``)."""

    reused: int = 0
    measured: int = 0


class MeasurementStore:
    """Reads and writes measurement records; counts what was reused and what was measured.

    ``remeasure``: read nothing (``--tfopt-remeasure``), measure everything again and store the new values.
    """

    def __init__(self, records: Records, remeasure: bool = False) -> None:
        self.records = records
        self.remeasure = remeasure
        self.stats = ReuseStats()

    @staticmethod
    def scope(artifact_sha256: str, backend: str, versions: Any, runtime: Any, threads: int) -> dict[str, Any]:
        """What every measurement of one loaded artifact depends on (besides what is measured)."""
        return {"artifact": artifact_sha256, "backend": backend, "versions": versions, "runtime": runtime,
                "threads": threads, "hardware": hardware_id()}

    @staticmethod
    def name(kind: str, scope: Mapping[str, Any], what: Mapping[str, Any]) -> str:
        """The record name of measurement ``kind`` (letters only) of ``what`` in ``scope``: ``kind-<32 hex>``."""
        blob = json.dumps({"kind": kind, "scope": scope, "what": what}, sort_keys=True, separators=(",", ":"),
                          default=str)
        return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:32]}"

    def get_or_measure(self, kind: str, scope: Mapping[str, Any], what: Mapping[str, Any],
                       measure: Callable[[], Any], encode: Callable[[Any], Any] | None,
                       decode: Callable[[Any], Any]) -> tuple[Any, bool]:
        """``(value, reused)``: the stored value of ``kind``/``what``, else ``measure()`` (stored unless
        ``encode`` is ``None`` or returns ``None``: too large to keep)."""
        value = self.lookup(kind, scope, what, decode)
        if value is not None:
            return value, True
        value = measure()
        self.store(kind, scope, what, value, encode)
        return value, False

    def lookup(self, kind: str, scope: Mapping[str, Any], what: Mapping[str, Any],
               decode: Callable[[Any], Any]) -> Any:
        """The stored value (counted as reused), or ``None``: absent, ``remeasure``, or damaged (warned)."""
        if self.remeasure:
            return None
        name = self.name(kind, scope, what)
        doc = self.records.read_record(name)  # an unreadable record: warned there, None here
        if doc is None:
            return None
        try:
            if doc.get("kind") != kind or "value" not in doc:
                raise ValueError("not a measurement")
            value = decode(doc["value"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            warnings.warn(f"pytest-tfopt: measurement record {name} is damaged ({exc}); measuring again", stacklevel=3)
            return None
        self.stats.reused += 1
        return value

    def store(self, kind: str, scope: Mapping[str, Any], what: Mapping[str, Any], value: Any,
              encode: Callable[[Any], Any] | None) -> None:
        """Count ``value`` as measured and store it (when ``encode`` gives something to store)."""
        self.stats.measured += 1
        encoded = encode(value) if encode is not None else None
        if encoded is not None:
            self.records.write_record(self.name(kind, scope, what), {"kind": kind, "what": dict(what),
                                                                     "value": encoded})


# ---- codecs: JSON-able forms of the values, checked on the way back ---------------------------------------
def encode_float(value: float) -> float:
    return float(value)


def decode_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def encode_int(value: int) -> int:
    return int(value)


def decode_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a size: {value!r}")
    return value


def encode_bools(value: np.ndarray) -> dict[str, Any]:
    """Per-sample booleans, 8 to a byte (base64)."""
    bits = np.asarray(value, bool).reshape(-1)
    return {"n": int(bits.size), "bits": base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")}


def decode_bools(value: Any) -> np.ndarray:
    n, raw = int(value["n"]), base64.b64decode(value["bits"], validate=True)
    if n < 0 or len(raw) != -(-n // 8):
        raise ValueError(f"{len(raw)} bytes for {n} samples")
    bits = np.unpackbits(np.frombuffer(raw, np.uint8), count=n).astype(bool)
    bits.flags.writeable = False
    return bits


def encode_array(value: np.ndarray) -> dict[str, Any]:
    arr = np.ascontiguousarray(value)
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode("ascii")}


def decode_array(value: Any) -> np.ndarray:
    if value["dtype"] not in _DTYPES:
        raise ValueError(f"dtype {value['dtype']!r}")
    shape = tuple(int(d) for d in value["shape"])
    arr = np.frombuffer(base64.b64decode(value["data"], validate=True), np.dtype(value["dtype"]))
    return arr.reshape(shape)  # raises ValueError when the bytes do not fill the shape


def encode_outputs(value: Any) -> dict[str, Any] | None:
    """A model's outputs (an array, or a dict name → array) when at most :data:`MAX_OUTPUT_BYTES`; else ``None``."""
    items = value.items() if isinstance(value, Mapping) else [(None, value)]
    if sum(np.asarray(v).nbytes for _, v in items) > MAX_OUTPUT_BYTES:
        return None
    if not isinstance(value, Mapping):
        return {"array": encode_array(value)}
    return {"outputs": {k: encode_array(v) for k, v in value.items()}}


def decode_outputs(value: Any) -> Any:
    """:func:`encode_outputs` undone: read-only arrays."""
    out = {k: decode_array(v) for k, v in value["outputs"].items()} if "outputs" in value else decode_array(value["array"])
    for arr in out.values() if isinstance(out, dict) else [out]:
        arr.flags.writeable = False
    return out


def decode_memory(value: Any) -> MemoryStats:
    """A stored memory probe (``dataclasses.asdict`` of it) back as :class:`MemoryStats` (``TypeError`` if bad)."""
    stats = MemoryStats(**value)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) or v is None
               for v in dataclasses.asdict(stats).values()):
        raise TypeError("not numbers")
    return stats

"""``tfopt cache ls|prune|verify``: housekeeping of an artifact cache, a local directory or a remote URL.

- ``ls``: every entry (key, variant, size, age), then counts of records and of temp files left by writers that
  died;
- ``prune --older-than 30d``: remove entries, records, temp files and unreferenced payloads older than that;
- ``verify``: re-hash every entry's bytes against its recorded sha256; damaged entries are reported and removed
  (exit 1 when there were any), so the next run rebuilds them.

Works on the same layout the caches write (see :mod:`pytest_tfopt.cache` and :mod:`pytest_tfopt.remote_cache`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import time
from typing import Any

from ..cache import RECORDS, TMP_PREFIX, parse_entry
from ..errors import UsageError, first_line
from ..remote_cache import RemoteStore, describe, is_url, payload_name, redact
from ..report.table import table
from .console import EXIT_FAILED, EXIT_OK, Console

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ENTRY = re.compile(r"([0-9a-f]{32})\.json")


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` as seconds; a :class:`UsageError` for anything else."""
    match = _AGE.fullmatch(text.strip())
    if not match:
        raise UsageError(f"--older-than={text!r}: give a number and a unit (s, m, h, d, w), e.g. 30d")
    return float(match.group(1)) * _UNITS[match.group(2)]


class LocalStore:
    """A local cache directory seen as the objects a :class:`~pytest_tfopt.remote_cache.RemoteStore` offers."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.display = describe(root)

    def get(self, name: str, limit: int | None = None) -> bytes | None:
        try:
            with open(os.path.join(self.root, name), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def listing(self) -> list[dict[str, Any]]:
        found = []
        for sub in ("", RECORDS):
            try:
                scan = list(os.scandir(os.path.join(self.root, sub)))
            except FileNotFoundError:
                continue
            for item in scan:
                if item.is_file(follow_symlinks=False):
                    st = item.stat(follow_symlinks=False)
                    found.append({"name": f"{sub}/{item.name}".lstrip("/"), "size": st.st_size, "mtime": st.st_mtime})
        return sorted(found, key=lambda o: o["name"])

    def remove(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.root, name))
        except FileNotFoundError:
            pass


def open_store(cache_dir: str) -> Any:
    """The store of ``--cache-dir``: a :class:`RemoteStore` for a URL (it must answer), else a :class:`LocalStore`."""
    if not is_url(cache_dir):
        if not os.path.isdir(cache_dir):
            raise UsageError(f"no artifact cache at {cache_dir}: give --cache-dir DIR_OR_URL")
        return LocalStore(cache_dir)
    store = RemoteStore(cache_dir)
    try:
        store.probe()
    except Exception as exc:  # any SDK's error: missing, denied, unreachable
        raise UsageError(f"remote cache {store.display} unreachable ({redact(first_line(exc))}): check its URL, "
                         "bucket and credentials") from None
    return store


def inventory(store: Any) -> dict[str, list[dict[str, Any]]]:
    """The store's objects by kind: ``entries`` (each with ``key``, ``entry`` (or ``None`` when damaged),
    ``payload`` (its name), ``size`` and ``mtime``), ``records``, ``temp`` files and ``orphans`` (payloads no
    entry names)."""
    objects = store.listing()
    by_name = {o["name"]: o for o in objects}
    kinds: dict[str, list[dict[str, Any]]] = {"entries": [], "records": [], "temp": [], "orphans": []}
    named: set[str] = set()
    for obj in objects:
        base = obj["name"].rsplit("/", 1)[-1]
        if base.startswith(TMP_PREFIX):
            kinds["temp"].append(obj)
        elif obj["name"].startswith(f"{RECORDS}/"):
            kinds["records"].append(obj)
        elif _ENTRY.fullmatch(obj["name"]):
            key = obj["name"][:32]
            entry = parse_entry(store.get(obj["name"]) or b"", key)
            payload = None if entry is None else (key + entry["suffix"] if isinstance(store, LocalStore) else payload_name(key, entry))
            named.add(payload or "")
            size = obj["size"] + (by_name.get(payload, {}).get("size") or 0)
            kinds["entries"].append({**obj, "key": key, "entry": entry, "payload": payload, "size": size})
    if not isinstance(store, LocalStore):  # a local cache's payloads are KEY<suffix>, always replaced with their JSON
        kinds["orphans"] = [o for o in objects if re.fullmatch(r"[0-9a-f]{32}-[0-9a-f]{16}\..+", o["name"])
                            and o["name"] not in named]
    return kinds


def old(objects: list[dict[str, Any]], age_s: float, now: float) -> list[dict[str, Any]]:
    """The objects last modified more than ``age_s`` seconds before ``now`` (an unknown time counts as old)."""
    return [o for o in objects if o.get("mtime") is None or now - o["mtime"] > age_s]


def cmd_cache(args: argparse.Namespace, console: Console) -> int:
    """Run ``tfopt cache ACTION``."""
    if args.action == "prune":
        parse_age(args.older_than)  # a bad age is the first thing to say, before asking a remote
    store = open_store(args.cache_dir)
    if args.action == "ls":
        return _ls(store, console)
    if args.action == "prune":
        return _prune(store, args.older_than, time.time(), console)
    return _verify(store, console)


def _ls(store: Any, console: Console) -> int:
    kinds = inventory(store)
    now = time.time()
    rows = [[e["key"], str((e["entry"] or {}).get("metadata", {}).get("variant", "?")) if e["entry"] else "damaged",
             f"{e['size'] / 1024:.1f} KiB", _age(now, e["mtime"])] for e in kinds["entries"]]
    for line in table(["key", "variant", "size", "age"], rows, right=[False, False, True, True]):
        console.out(line)
    total = sum(e["size"] for e in kinds["entries"])
    console.out(f"{store.display}: {len(rows)} entries ({total / 1024:.1f} KiB), {len(kinds['records'])} records, "
                f"{len(kinds['temp'])} temp files, {len(kinds['orphans'])} unreferenced payloads")
    return EXIT_OK


def _prune(store: Any, older_than: str, now: float, console: Console) -> int:
    age_s = parse_age(older_than)
    kinds = inventory(store)
    entries = old(kinds["entries"], age_s, now)
    for e in entries:  # the JSON first: a key is unpublished before its bytes go
        store.remove(e["name"])
        if e["payload"]:
            store.remove(e["payload"])
    rest = [o for kind in ("records", "temp", "orphans") for o in old(kinds[kind], age_s, now)]
    for obj in rest:
        store.remove(obj["name"])
    freed = sum(e["size"] for e in entries) + sum(o["size"] for o in rest)
    console.out(f"{store.display}: pruned {len(entries)} entries and {len(rest)} other files older than "
                f"{older_than} ({freed / 1024:.1f} KiB); {len(kinds['entries']) - len(entries)} entries kept")
    return EXIT_OK


def _verify(store: Any, console: Console) -> int:
    kinds = inventory(store)
    damaged = 0
    for e in kinds["entries"]:
        content = store.get(e["payload"]) if e["payload"] else None
        if e["entry"] is None:
            why = "its JSON is not a cache entry"
        elif content is None:
            why = "its artifact is missing"
        elif hashlib.sha256(content).hexdigest() != e["entry"]["sha256"]:
            why = "its artifact does not match the recorded sha256"
        else:
            continue
        damaged += 1
        console.out(f"damaged {e['key']}: {why}; removed (the next run rebuilds it)")
        store.remove(e["name"])
        if e["payload"]:
            store.remove(e["payload"])
    console.out(f"{store.display}: verified {len(kinds['entries'])} entries, {damaged} damaged")
    return EXIT_FAILED if damaged else EXIT_OK


def _age(now: float, mtime: float | None) -> str:
    if mtime is None:
        return "?"
    seconds = max(0.0, now - mtime)
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit]:
            return f"{seconds / _UNITS[unit]:.0f}{unit}"
    return f"{seconds:.0f}s"

"""``tfopt merge``: the results documents of several runs (CI shards, machines) as one run's document.

The merged document is what one run of the whole suite would have written: every shard's rows, keyed by
(test, variant, backend) as everywhere; the schema, commit, hardware block, library versions and data-set
hashes said once where the shards agree. ``tfopt report``, ``tfopt compare`` and ``--tfopt-baseline`` read
it as they read a single run's. Where the shards disagree the document stays faithful instead:

- a key in two shards with different rows is a usage error naming both files (identical rows merge);
- different hardware: each row keeps its own ``hardware_id``, every block is recorded under
  ``hardware_blocks`` (id -> block), and ``hardware`` becomes a *mixed* block whose ``id`` digests which
  row ran on which hardware, so it equals no single machine's block (timing thresholds are skipped
  against it, see ``docs/sharding.md``);
- different commits: a note and ``commit`` null (an error under ``--require-same-commit``);
- any other top-level field that differs (``versions``, a bench's ``model``): a note, and the field is
  kept per shard only.

``shards`` lists where the rows came from: each input's file, row count, creation time, commit and
hardware id, plus the fields it disagreed on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from typing import Any

from ..errors import UsageError
from ..hardware import hardware_id
from .console import EXIT_OK, Console
from .files import check_writable, load_results, write_atomic

Shard = tuple[str, dict[str, Any]]  # (the path as given, its checked results document)
#: top-level fields merged by their own rule; every other field is kept when all shards agree on it
_MERGED_FIELDS = ("schema", "schema_version", "rows", "created", "commit", "hardware", "hardware_blocks",
                  "hashes", "shards")


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    """``tfopt merge SHARD... -o PATH``: every input checked before anything is written; notes after the write."""
    check_writable(args.output, "-o")
    for index, path in enumerate(args.shards):
        if _same_file(path, args.output):
            raise UsageError(f"-o {args.output!r} is the input {path!r}: write the merged document to a new file")
        for earlier in args.shards[:index]:
            if _same_file(path, earlier):
                raise UsageError(f"SHARD {path!r} is given twice ({earlier!r}): name each shard's file once")
    shards = [(path, load_results(path, "SHARD")) for path in args.shards]
    doc, notes = merge(shards, require_same_commit=args.require_same_commit)
    text = json.dumps(doc, indent=1, sort_keys=True, default=str)  # what baseline.save writes
    written = write_atomic(args.output, text.encode())
    console.out(f"wrote {written} ({len(doc['rows'])} rows from {len(shards)} shards)")
    for note in notes:  # after the write: a failed merge is one error line
        console.note(note)
    return EXIT_OK


def merge(shards: list[Shard], require_same_commit: bool = False) -> tuple[dict[str, Any], list[str]]:
    """One results document from the checked documents of ``shards``, and the notes to show about it.

    A usage error when a (test, variant, backend) key has different rows in two shards, or (with
    ``require_same_commit``) when the shards record different commits.
    """
    from .. import baseline

    rows = _merged_rows(shards)
    notes: list[str] = []
    agreed, differing = _agreed_fields(shards, notes)
    hardware, blocks = _hardware(shards, rows, notes)
    created = [d["created"] for _, d in shards if isinstance(d.get("created"), str)]
    doc = {
        **agreed,
        "schema": baseline.SCHEMA,
        "schema_version": baseline.SCHEMA_VERSION,
        "created": max(created) if created else None,  # ISO 8601 UTC: the latest shard's end
        "commit": _commit(shards, notes, require_same_commit),
        "hardware": hardware,
        "hardware_blocks": blocks,
        "hashes": sorted({h for _, d in shards for h in d.get("hashes") or [] if isinstance(h, str)}),
        "shards": [_provenance(path, d, differing) for path, d in shards],
        "rows": sorted(rows, key=baseline.row_key),
    }
    return doc, notes


def _merged_rows(shards: list[Shard]) -> list[dict[str, Any]]:
    """Every shard's rows, one per key; a key with two different rows is a usage error naming both files."""
    from ..baseline import row_key

    seen: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}
    for path, doc in shards:
        for row in doc["rows"]:
            key = row_key(row)
            if key not in seen:
                seen[key] = (path, row)
            elif seen[key][1] != row:
                first = seen[key][0]
                where = f"twice in {path!r}" if first == path else f"in both {first!r} and {path!r}"
                raise UsageError(f"result {key[0]} [{key[1]}, {key[2]}] is {where} with different values: run "
                                 "each test in one shard only (check the shards' -k, paths or --splits/--group)")
    return [row for _, row in seen.values()]


def _agreed_fields(shards: list[Shard], notes: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The other top-level fields all shards agree on, and the names of those they do not (with a note each)."""
    names = sorted({k for _, d in shards for k in d if k not in _MERGED_FIELDS})
    agreed: dict[str, Any] = {}
    differing = []
    for name in names:
        values = [d.get(name) for _, d in shards]
        if all(v == values[0] for v in values):
            agreed[name] = values[0]
        else:
            differing.append(name)
            notes.append(f"the shards differ in {name!r}: the merged document keeps each shard's value under "
                         "'shards' only")
    return agreed, differing


def _commit(shards: list[Shard], notes: list[str], required: bool) -> Any:
    """The shards' common commit; else None, with a note (or a usage error) when two known commits differ."""
    commits = [d.get("commit") for _, d in shards]
    if all(c == commits[0] for c in commits):
        return commits[0]
    known = {str(c) for c in commits if c}
    if len(known) > 1:
        listed = ", ".join(f"{str(d.get('commit'))[:12]} in {path!r}" for path, d in shards if d.get("commit"))
        message = f"the shards come from different commits ({listed})"
        if required:
            raise UsageError(f"{message}: rerun every shard on one commit (--require-same-commit)")
        notes.append(f"{message}: the merged document records none")
    return None


def _hardware(shards: list[Shard], rows: list[dict[str, Any]],
              notes: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The merged ``hardware`` block and every block by id (of the shards that measured something).

    One block: it, unchanged, as a single run records it. Several: a *mixed* block (the CPUs named, the
    ids listed) whose ``id`` digests the rows' (key, hardware_id) pairs, so it equals another document's
    block only when that one placed every row on the same hardware.
    """
    measuring = [d for _, d in shards if d["rows"]] or [d for _, d in shards]
    blocks: dict[str, dict[str, Any]] = {}
    for doc in measuring:
        blocks.update(_blocks(doc))
    if len(blocks) <= 1:
        return next(iter(blocks.values()), {}), blocks
    placement = sorted([*map(str, (r["test"], r["variant"], r["backend"])), str(r.get("hardware_id"))] for r in rows)
    digest = hashlib.sha256(json.dumps(placement).encode()).hexdigest()[:12]
    named = lambda field: " + ".join(sorted({str(b.get(field) or "?") for b in blocks.values()}))  # noqa: E731
    mixed = {"mixed": True, "cpu": named("cpu"), "machine": named("machine"), "system": named("system"),
             "ids": sorted(blocks), "id": f"mixed-{digest}"}
    notes.append(f"the shards ran on {len(blocks)} kinds of hardware ({mixed['cpu']}): each row keeps its "
                 "hardware_id; compared with this document, latency thresholds are skipped (see docs/sharding.md)")
    return mixed, blocks


def _blocks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The hardware blocks a document records, by id: its ``hardware_blocks`` (a merged one), else its block."""
    recorded = doc.get("hardware_blocks")
    if isinstance(recorded, dict):
        return {str(k): v for k, v in recorded.items() if isinstance(v, dict)}
    block = doc.get("hardware")
    if not isinstance(block, dict) or not block:
        return {}
    return {_block_id(block): block}


def _block_id(block: dict[str, Any]) -> str:
    """A hardware block's id: the one it records, else its fingerprint as :func:`hardware_id` computes it."""
    recorded = block.get("id")
    return recorded if isinstance(recorded, str) else hardware_id({k: v for k, v in block.items() if k != "id"})


def _provenance(path: str, doc: dict[str, Any], differing: list[str]) -> dict[str, Any]:
    """Where some rows came from: the file as given, its row count, time, commit, hardware and disagreements."""
    block = doc.get("hardware")
    entry = {
        "file": path,
        "rows": len(doc["rows"]),
        "created": doc.get("created"),
        "commit": doc.get("commit"),
        "hardware_id": _block_id(block) if isinstance(block, dict) and block else None,
        **{name: doc.get(name) for name in differing},
    }
    if isinstance(doc.get("shards"), list):  # an input that was itself merged
        entry["shards"] = doc["shards"]
    return entry


def _same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (links, ``./`` and case-insensitive file systems included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)

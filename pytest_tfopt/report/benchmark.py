"""pytest-benchmark-compatible JSON, so dashboards that ingest it (e.g. github-action-benchmark) work.

One benchmark per result that measured latency (batch 1); times in seconds as
pytest-benchmark writes them.
"""

from __future__ import annotations

import json
from typing import Any


def render(doc: dict[str, Any]) -> str:
    benchmarks = []
    for r in doc.get("rows", []):
        if r.get("latency_b1_p50_ms") is None:
            continue
        ms = {k: r.get(f"latency_b1_{k}_ms") for k in ("min", "max", "mean", "stdev", "p50", "p90", "p95", "p99")}
        to_s = {k: (v / 1000 if v is not None else None) for k, v in ms.items()}
        name = f"{r['test'].split('::')[-1]}"
        benchmarks.append({
            "group": r["backend"],
            "name": name,
            "fullname": r["test"],
            "params": {"variant": r["variant"], "backend": r["backend"]},
            "param": f"{r['variant']}-{r['backend']}",
            "extra_info": {k: r.get(k) for k in ("accuracy", "size_bytes", "gzip_size_bytes") if r.get(k) is not None},
            "options": {"timer": "perf_counter_ns", "disable_gc": True},
            "stats": {
                "min": to_s["min"], "max": to_s["max"], "mean": to_s["mean"], "stddev": to_s["stdev"],
                "median": to_s["p50"], "rounds": r.get("latency_b1_n"), "iterations": 1,
                "ops": (1 / to_s["mean"]) if to_s["mean"] else None, "q1": None, "q3": None, "iqr": None,
                "outliers": "", "ld15iqr": to_s["min"], "hd15iqr": to_s["max"], "total": None,
            },
        })
    return json.dumps({
        "machine_info": {"node": "", "processor": doc.get("hardware", {}).get("cpu", ""),
                         "machine": doc.get("hardware", {}).get("machine", ""), "cpu": doc.get("hardware", {})},
        "commit_info": {"id": doc.get("commit")},
        "benchmarks": benchmarks,
        "datetime": doc.get("created"),
        "version": "5.1.0",
    }, indent=1)

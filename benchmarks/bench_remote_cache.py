"""Remote artifact cache: a cold build vs a remote hit into an empty local cache vs a local hit.

Starts moto's S3 server on localhost (a subprocess, fake credentials), then for each repeat, with a fresh
bucket prefix and fresh local copies:

- ``local cold``: build the variants with a plain local cache (the baseline: no remote);
- ``remote cold``: build them with ``--tfopt-cache-dir=s3://...`` (build + upload);
- ``remote hit``: a fresh Workbench and an empty local copy on the same URL (download + verify + publish);
- ``local hit``: the same Workbench's URL again, now served by the local copy.

Each case times ``Workbench.build`` of every variant of the shipped digits CNN (a fresh Workbench per case;
``$TFOPT_CACHE_SECRET`` is set so the model's identity record is shared too, as a team would). A second table
times the cache layer alone for synthetic payloads of growing size (remote hit into an empty local copy).

Caveat: moto on localhost has no network latency and no real S3 throughput limits: real remotes add about
one round trip per object (two objects per artifact, plus one for the identity record) and the transfer time.

Run:  python benchmarks/bench_remote_cache.py [--repeats 3] [--variants int8,float16,dynamic]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Any

import _common as c

FAKE_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
            "TFOPT_CACHE_SECRET": "bench-secret", "TF_CPP_MIN_LOG_LEVEL": "2"}
BUCKET = "tfopt-bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="fresh prefix + local copies per repeat (default 3)")
    p.add_argument("--variants", default="int8,float16,dynamic", help="variants built per case (default: %(default)s)")
    p.add_argument("--sizes-kb", default="64,1024,16384", help="synthetic payload sizes, KiB (default: %(default)s)")
    return p.parse_args(argv)


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("moto's server did not start")


def timed_builds(cache_dir: str, variants: list[str], local_home: str) -> tuple[float, Any]:
    """Seconds to build every variant through a fresh Workbench on ``cache_dir`` (its local copy under
    ``local_home``), and the cache it used."""
    from pytest_tfopt import Workbench

    os.environ["XDG_CACHE_HOME"] = local_home  # where a URL's private local copy lives
    wb = Workbench(str(c.DIGITS_MODEL), str(c.DIGITS_DATA), cache_dir=cache_dir, threads=1)
    t0 = time.perf_counter()
    for v in variants:
        wb.build(v)
    return time.perf_counter() - t0, wb.cache


def model_cases(args: argparse.Namespace, tmp: str) -> list[list[str]]:
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    times: dict[str, list[float]] = {k: [] for k in ("local cold", "remote cold", "remote hit", "local hit")}
    counts: dict[str, str] = {}
    for r in range(args.repeats):
        url = f"s3://{BUCKET}/run-{r}-{time.time_ns()}"
        cases = [("local cold", os.path.join(tmp, f"plain-{r}"), f"home-plain-{r}"),
                 ("remote cold", url, f"home-a-{r}"), ("remote hit", url, f"home-b-{r}"),
                 ("local hit", url, f"home-b-{r}")]
        for name, cache_dir, home in cases:
            seconds, cache = timed_builds(cache_dir, variants, os.path.join(tmp, home))
            times[name].append(seconds)
            counts[name] = f"{cache.stats.built} built, {cache.stats.reused} reused, " \
                           f"{getattr(cache, 'fetched', 0)} fetched, {getattr(cache, 'uploaded', 0)} uploaded"
    return [[name, f"{c.median(t):.3f}", f"{min(t):.3f}", counts[name]] for name, t in times.items()]


def size_cases(args: argparse.Namespace, tmp: str) -> list[list[str]]:
    from pytest_tfopt.artifact import Artifact
    from pytest_tfopt.remote_cache import RemoteArtifactCache

    rows = []
    for kb in [int(s) for s in args.sizes_kb.split(",") if s.strip()]:
        url = f"s3://{BUCKET}/size-{kb}-{time.time_ns()}"
        payload = os.urandom(kb * 1024)
        key = f"{kb:032x}"
        up, hit = [], []
        for r in range(args.repeats):
            writer = RemoteArtifactCache(url, rebuild=True, local_dir=os.path.join(tmp, f"w{kb}-{r}"))
            t0 = time.perf_counter()
            writer.get_or_build(key, lambda data=payload: Artifact(data, {"variant": "synthetic"}))
            up.append(time.perf_counter() - t0)
            reader = RemoteArtifactCache(url, local_dir=os.path.join(tmp, f"r{kb}-{r}"))
            t0 = time.perf_counter()
            reader.get_or_build(key, lambda: Artifact(b"", {}))
            hit.append(time.perf_counter() - t0)
            assert reader.fetched == 1
        rows.append([f"{kb} KiB", f"{c.median(up) * 1000:.1f}", f"{c.median(hit) * 1000:.1f}"])
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.update(FAKE_ENV)
    proc, endpoint = start_moto()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        import s3fs

        s3fs.S3FileSystem().mkdir(BUCKET)
        warnings.simplefilter("ignore")
        with tempfile.TemporaryDirectory(prefix="tfopt-bench-remote-") as tmp:
            model = model_cases(args, tmp)
            sizes = size_cases(args, tmp)
    finally:
        proc.kill()
        proc.wait()
    print(c.machine_line())
    print(f"remote: moto S3 server on localhost; {args.repeats} repeats; model {c.DIGITS_MODEL.name}, "
          f"variants {args.variants}\n")
    print(c.table(["case", "median s", "min s", "cache (last repeat)"], model))
    print()
    print(c.table(["payload", "build+upload ms", "remote hit ms"], sizes))


if __name__ == "__main__":
    main()

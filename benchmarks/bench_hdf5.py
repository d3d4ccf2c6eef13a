#!/usr/bin/env python
"""Benchmark fastsim's CaloChallenge HDF5 I/O and ``prep-train`` against bare h5py, side by side.

Every number is measured in this one run on the same synthetic file (``--n`` showers of the
``--geometry``'s voxel count, 70 % empty voxels, MeV), and printed with its ratio to a baseline:

1. writing: :class:`ShowerWriter` appending blocks of ``--block`` rows (atomic, resizable) vs one
   bare ``h5py`` ``create_dataset(data=...)`` of the whole array with the same filter and chunks;
   per filter (gzip 4, lzf, none), with the file sizes;
2. reading: :meth:`CaloFile.iter_chunks` over the whole file vs bare ``f["showers"][...]``, time
   and peak resident memory (each in a fresh child process, ``ru_maxrss``), showing the streamed
   read stays flat while the bare read holds the whole array;
3. validation (:func:`validate_calochallenge`) throughput, against the bare read;
4. ``prepare_training_tensors`` (validate, fit, scatter, shuffle, write) throughput and peak
   memory, against the bare read+write of the same bytes, with a bucket budget of ``--bucket-mb``.

    OMP_NUM_THREADS=1 python benchmarks/bench_hdf5.py                 # 200 000 dataset-1 showers
    OMP_NUM_THREADS=1 python benchmarks/bench_hdf5.py --n 20000       # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

from fastsim.data.hdf5 import ShowerWriter, default_chunk_rows
from fastsim.geometry import Geometry


def synthetic(n: int, n_voxels: int, seed: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start:start+n`` of a reproducible synthetic data set: E_inc (n,) MeV, showers (n, V) MeV."""
    rng = np.random.default_rng([seed, start])
    e = np.exp(rng.uniform(np.log(256.0), np.log(4.2e6), n))
    s = rng.exponential(1.0, size=(n, n_voxels)).astype(np.float32)
    s[rng.random(s.shape) < 0.7] = 0.0
    s *= (0.9 * e / np.maximum(s.sum(1), 1e-6))[:, None].astype(np.float32)
    return e, s


def child(code: str, **env_extra: str) -> dict:
    """Run ``code`` in a fresh interpreter (it sets ``out``); add its peak resident memory in MB.

    The peak is VmHWM of /proc/self/status, which starts afresh at exec; ``ru_maxrss`` would
    inherit the parent's peak through fork.
    """
    wrapper = (
        "import json, time\n"
        + code
        + "\nhwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "out['max_rss_mb'] = int(hwm.split()[1]) / 1024\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **env_extra}
    r = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="showers in the test file")
    parser.add_argument("--geometry", default="1-photons")
    parser.add_argument("--block", type=int, default=10_000, help="rows per ShowerWriter.append")
    parser.add_argument("--bucket-mb", type=float, default=32.0, help="prep-train shuffle bucket budget")
    parser.add_argument("--workdir", default=None, help="where the temporary files go (default: $TMPDIR)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    geo = Geometry.resolve(args.geometry)
    v = geo.n_voxels
    raw_mb = args.n * v * 4 / 2**20
    print(
        f"# {args.n} showers x {v} voxels ({geo.name}) = {raw_mb:.0f} MiB float32; block {args.block}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load avg {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        e_all, s_all = [], []
        for lo in range(0, args.n, args.block):
            e, s = synthetic(min(args.block, args.n - lo), v, args.seed, lo)
            e_all.append(e)
            s_all.append(s)
        e_all, s_all = np.concatenate(e_all), np.concatenate(s_all)
        rows = default_chunk_rows(v)

        print("\n1. write: ShowerWriter (blocks, atomic) vs bare h5py (one call), same filter and chunks")
        print(f"   {'filter':8s} {'fastsim s':>10s} {'bare s':>8s} {'ratio':>6s} {'size MiB':>9s}")
        paths = {}
        for comp, opts in (("gzip", 4), ("lzf", None), (None, None)):
            p = os.path.join(tmp, f"fs_{comp}.h5")
            t0 = time.perf_counter()
            with ShowerWriter(p, v, compression=comp, compression_opts=opts) as w:
                for lo in range(0, args.n, args.block):
                    w.append(e_all[lo : lo + args.block], s_all[lo : lo + args.block])
            t_fs = time.perf_counter() - t0
            pb = os.path.join(tmp, f"bare_{comp}.h5")
            t0 = time.perf_counter()
            with h5py.File(pb, "w") as f:
                kw = {"compression": comp, "compression_opts": opts} if comp else {}
                f.create_dataset("incident_energies", data=e_all[:, None], chunks=(max(rows, 4096), 1), **kw)
                f.create_dataset("showers", data=s_all, chunks=(rows, v), **kw)
            t_bare = time.perf_counter() - t0
            os.remove(pb)
            paths[comp] = p
            print(
                f"   {comp or 'none':8s} {t_fs:10.2f} {t_bare:8.2f} {t_fs / t_bare:6.2f} "
                f"{os.path.getsize(p) / 2**20:9.1f}"
            )
        del e_all, s_all

        print(
            "\n2. read the whole file: iter_chunks (streamed) vs bare f['showers'][...]; fresh process each"
        )
        print(
            f"   {'filter':8s} {'stream s':>9s} {'bare s':>7s} {'ratio':>6s} {'stream MB':>10s} {'bare MB':>8s}"
        )
        base_rss = child("import h5py, numpy\nimport fastsim.data.hdf5\nout = {}")["max_rss_mb"]
        torch_rss = child("import h5py, numpy, torch\nimport fastsim.data.tensors\nout = {}")["max_rss_mb"]
        for comp, p in paths.items():
            stream = child(
                "import numpy as np\nfrom fastsim.data.hdf5 import open_calochallenge\n"
                f"t0 = time.perf_counter(); tot = 0.0\nwith open_calochallenge({p!r}) as cf:\n"
                "    for e, s in cf.iter_chunks():\n        tot += float(s.sum(dtype=np.float64))\n"
                "out = {'s': time.perf_counter() - t0, 'sum': tot}"
            )
            bare = child(
                "import h5py, numpy as np\nimport fastsim.data.hdf5\n"
                f"t0 = time.perf_counter()\nwith h5py.File({p!r}) as f:\n"
                "    e = f['incident_energies'][...]; s = f['showers'][...]\n"
                "tot = float(s.sum(dtype=np.float64))\nout = {'s': time.perf_counter() - t0, 'sum': tot}"
            )
            assert abs(stream["sum"] - bare["sum"]) <= 1e-6 * abs(bare["sum"])
            print(
                f"   {comp or 'none':8s} {stream['s']:9.2f} {bare['s']:7.2f} {stream['s'] / bare['s']:6.2f} "
                f"{stream['max_rss_mb'] - base_rss:10.0f} {bare['max_rss_mb'] - base_rss:8.0f}"
            )
        print(
            f"   (MB: peak RSS above an interpreter that only imported h5py, numpy and fastsim.data.hdf5, "
            f"{base_rss:.0f} MB; data {raw_mb:.0f} MiB)"
        )

        print("\n3. validate_calochallenge (all rules, streamed) vs the bare read above")
        for comp in ("gzip", None):
            p = paths[comp]
            val = child(
                f"from fastsim.data.hdf5 import validate_calochallenge\nt0 = time.perf_counter()\n"
                f"probs = validate_calochallenge({p!r}, {args.geometry!r})\n"
                "out = {'s': time.perf_counter() - t0, 'problems': probs}"
            )
            bare = child(
                f"import h5py\nt0 = time.perf_counter()\nwith h5py.File({p!r}) as f:\n    s = f['showers'][...]\n"
                "out = {'s': time.perf_counter() - t0}"
            )
            assert val["problems"] == [], val["problems"]
            print(
                f"   {comp or 'none':8s} validate {val['s']:.2f} s ({args.n / val['s']:,.0f} showers/s), "
                f"bare read {bare['s']:.2f} s, ratio {val['s'] / bare['s']:.2f}, "
                f"peak {val['max_rss_mb'] - base_rss:.0f} MB"
            )

        print(
            f"\n4. prepare_training_tensors (gzip input, bucket budget {args.bucket_mb:g} MiB) vs bare read+write"
        )
        for transform in ("divide", "log-standardize"):
            out_p = os.path.join(tmp, f"train_{transform}.h5")
            code = (
                "import torch\nfrom fastsim.data.tensors import prepare_training_tensors\nt0 = time.perf_counter()\n"
                f"summ = prepare_training_tensors([{paths['gzip']!r}], {out_p!r}, {args.geometry!r}, "
                f"transform_config={transform!r}, progress=False, bucket_bytes={int(args.bucket_mb * 2**20)}, "
                "overwrite=True)\n"
                "out = {'s': time.perf_counter() - t0, 'buckets': summ['n_buckets'], 'n': summ['n_written']}"
            )
            prep = child(code)
            # glibc raises its mmap threshold after large frees, so freed numpy buffers stay in the
            # heap and RSS overstates what is live; a fixed threshold shows the working set
            prep_fixed = child(code, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
            bare = child(
                f"import h5py\nt0 = time.perf_counter()\nwith h5py.File({paths['gzip']!r}) as f:\n"
                "    s = f['showers'][...]; e = f['incident_energies'][...]\n"
                f"with h5py.File({out_p + '.bare'!r}, 'w') as g:\n"
                "    g['x'] = s / e; g['e_inc'] = e[:, 0]\nout = {'s': time.perf_counter() - t0}"
            )
            os.remove(out_p + ".bare")
            os.remove(out_p)
            print(
                f"   {transform:16s} {prep['s']:.2f} s ({prep['n'] / prep['s']:,.0f} showers/s, {prep['buckets']} buckets), "
                f"bare {bare['s']:.2f} s, ratio {prep['s'] / bare['s']:.2f}; peak memory "
                f"{prep['max_rss_mb'] - torch_rss:.0f} MB ({prep_fixed['max_rss_mb'] - torch_rss:.0f} MB with "
                f"MALLOC_MMAP_THRESHOLD_=1MiB) vs bare {bare['max_rss_mb'] - base_rss:.0f} MB"
            )
        print(
            f"   (prep memory above an interpreter that imported torch and fastsim.data.tensors, {torch_rss:.0f} MB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

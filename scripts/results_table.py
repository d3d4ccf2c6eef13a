"""Markdown tables comparing benchmark runs (the tables of docs/results.md).

    python scripts/results_table.py LABEL=outputs/run/wgan_gp/report/metrics.json [LABEL=...] [--energies]

Prints, per run: the range of the response and resolution ratios (generated / Geant4) over the
energies, the mean separation power of E_tot/E_inc next to its finite-statistics floor, the mean
separation power of the layer energies and of the shower shapes (centres, widths, sparsity per
layer; all energies together), the classifier AUCs, the FPD (CaloChallenge protocol only), the
protocol and readout threshold of the run, and the number of checks passed; with
``--energies`` the per-energy ratios with their uncertainties.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _f(v: float | None, u: float | None = None, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" + (f" ± {u:.{digits}f}" if u is not None else "")


def _mean_sep(results: list) -> float | None:
    """Mean separation power over a list of comparison results (None entries skipped)."""
    vals = [r["separation_power"] for r in results if r and r.get("separation_power") is not None]
    return sum(vals) / len(vals) if vals else None


def load(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"{p}: metrics.json not found")
    return json.loads(p.read_text())


def summary_table(runs: list[tuple[str, dict]]) -> list[str]:
    """One row per run: worst response/resolution deviation, mean separation power, AUCs, checks."""
    lines = [
        "| run | protocol (threshold MeV) | response gen/G4 (range) | resolution gen/G4 (range) "
        "| mean sep. power (floor) | layer energies sep. | shower shapes sep. | AUC low-level "
        "| AUC high-level | FPD ×10³ | checks passed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, m in runs:
        rows = m["response"]["per_energy"]
        resp = [r["response_ratio"] for r in rows if r.get("response_ratio") is not None]
        reso = [r["resolution_ratio"] for r in rows if r.get("resolution_ratio") is not None]
        s, c = m["summary"], m.get("classifier") or {}
        auc = {k: (v.get("auc") if isinstance(v, dict) else None) for k, v in c.items()}
        thr = (m.get("threshold") or {}).get("mev")
        fpd = ((m.get("calochallenge") or {}).get("fpd") or {}).get("value")
        lines.append(
            f"| {label} | {m.get('protocol', 'quick')} ({'–' if thr is None else f'{thr:g}'}) "
            f"| {min(resp):.3f} – {max(resp):.3f} | {min(reso):.2f} – {max(reso):.2f} "
            f"| {_f(s['mean_separation_power_e_ratio'])} ({_f(s['mean_separation_power_floor'])}) "
            f"| {_f(_mean_sep(m['layers']['distributions']))} "
            f"| {_f(_mean_sep([r for obs in m['shapes'].values() for r in obs['layers']]))} "
            f"| {_f(auc.get('low_level'))} | {_f(auc.get('high_level'))} | {_f(None if fpd is None else 1e3 * fpd, digits=2)} "
            f"| {s['n_checks'] - s['n_failed']}/{s['n_checks']} |"
        )
    return lines


def energy_table(label: str, m: dict) -> list[str]:
    lines = [
        f"**{label}**",
        "",
        "| E_inc | response gen/G4 | resolution gen/G4 | separation power |",
        "|---|---|---|---|",
    ]
    for r in m["response"]["per_energy"]:
        sep = (r.get("e_ratio") or {}).get("separation_power")
        lines.append(
            f"| {r['label']} | {_f(r.get('response_ratio'), r.get('response_ratio_unc'))} "
            f"| {_f(r.get('resolution_ratio'), r.get('resolution_ratio_unc'), 2)} | {_f(sep)} |"
        )
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="LABEL=METRICS_JSON")
    parser.add_argument("--energies", action="store_true", help="also a per-energy table per run")
    args = parser.parse_args(argv)
    runs = []
    for spec in args.runs:
        label, sep, path = spec.partition("=")
        if not sep:
            parser.error(f"expected LABEL=path/metrics.json, got {spec!r}")
        runs.append((label, load(path)))
    print("\n".join(summary_table(runs)))
    if args.energies:
        for label, m in runs:
            print()
            print("\n".join(energy_table(label, m)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

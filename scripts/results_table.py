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
import sys

from fastsim.errors import InputFileError
from fastsim.report.result import BenchmarkResult, Comparison, load_result


def _f(v: float | None, u: float | None = None, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" + (f" ± {u:.{digits}f}" if u is not None else "")


def _mean_sep(comps: list[Comparison | None]) -> float | None:
    """Mean separation power over a list of comparisons (None entries and undefined values skipped)."""
    vals = [c.separation_power for c in comps if c is not None and c.separation_power is not None]
    return sum(vals) / len(vals) if vals else None


def _defined(v: float | None) -> float | None:
    """None for a value that is not defined (NaN, as a freshly computed result holds it)."""
    return None if v is None or v != v else v


def load(path: str) -> BenchmarkResult:
    try:
        return load_result(path)
    except InputFileError as err:
        raise SystemExit(str(err)) from None


def summary_table(runs: list[tuple[str, BenchmarkResult]]) -> list[str]:
    """One row per run: worst response/resolution deviation, mean separation power, AUCs, checks."""
    lines = [
        "| run | protocol (threshold MeV) | response gen/G4 (range) | resolution gen/G4 (range) "
        "| mean sep. power (floor) | layer energies sep. | shower shapes sep. | AUC low-level "
        "| AUC high-level | FPD ×10³ | checks passed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, m in runs:
        rows = m.per_energy
        resp = [r.response_ratio for r in rows if _defined(r.response_ratio) is not None]
        reso = [r.resolution_ratio for r in rows if _defined(r.resolution_ratio) is not None]
        s = m.summary
        auc = {k: v.auc for k, v in m.classifier.results().items()}
        thr = (m.threshold or {}).get("mev")
        fpd = (m.calochallenge.fpd.get("value") if m.calochallenge is not None else None)
        lines.append(
            f"| {label} | {m.protocol} ({'–' if thr is None else f'{thr:g}'}) "
            f"| {min(resp):.3f} – {max(resp):.3f} | {min(reso):.2f} – {max(reso):.2f} "
            f"| {_f(_defined(s.mean_separation_power_e_ratio))} ({_f(_defined(s.mean_separation_power_floor))}) "
            f"| {_f(_mean_sep(m.layers.distributions))} "
            f"| {_f(_mean_sep([c for obs in m.shapes.values() for c in obs.layers]))} "
            f"| {_f(auc.get('low_level'))} | {_f(auc.get('high_level'))} | {_f(None if fpd is None else 1e3 * fpd, digits=2)} "
            f"| {s.n_passed}/{s.n_checks} |"
        )
    return lines


def energy_table(label: str, m: BenchmarkResult) -> list[str]:
    lines = [
        f"**{label}**",
        "",
        "| E_inc | response gen/G4 | resolution gen/G4 | separation power |",
        "|---|---|---|---|",
    ]
    for r in m.per_energy:
        sep = r.e_ratio.separation_power if r.e_ratio is not None else None
        lines.append(
            f"| {r.label} | {_f(r.response_ratio, r.response_ratio_unc)} "
            f"| {_f(r.resolution_ratio, r.resolution_ratio_unc, 2)} | {_f(sep)} |"
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

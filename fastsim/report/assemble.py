"""Metric assembly: from two collected samples to a :class:`~fastsim.report.result.BenchmarkResult`.

Physics from arrays only (the functions of :mod:`fastsim.metrics`). Two protocols
(:data:`PROTOCOLS`): ``"calochallenge"`` (the default) uses the official evaluation's binnings,
high-level vector, classifier and FPD/KPD (:mod:`fastsim.metrics.calochallenge`,
:data:`fastsim.metrics.classifier.CALOCHALLENGE`, :mod:`fastsim.metrics.fpd`); ``"quick"``
fastsim's lighter classifier and reference-range binnings (tests, training callbacks).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from fastsim.errors import FastsimError
from fastsim.geometry import Geometry
from fastsim.metrics.compare import compare_distributions, reference_binning, separation_power_counts
from fastsim.metrics.response import (
    AngleGroups,
    EnergyGroups,
    compare_response,
    energy_angle_response,
    layer_response,
    summarize,
)
from fastsim.metrics.shapes import FEATURE_UNITS, PER_LAYER_FEATURES
from fastsim.report.collect import SampleData
from fastsim.report.result import (
    AngleRow,
    BenchmarkResult,
    Check,
    ClassifierResult,
    ClassifierSection,
    Comparison,
    EnergyRow,
    LayerSection,
    OfficialSection,
    SampleSummary,
    ShapeSection,
    Summary,
    VoxelSpectrum,
    number,
)
from fastsim.report.tolerances import Tolerances, status

__all__ = [
    "CLASSIFIER_INPUTS",
    "DEFAULT_CLASSIFIER_INPUTS",
    "FPD_SETTINGS",
    "KPD_SETTINGS",
    "PROTOCOLS",
    "classifier_input_set",
    "compare_timing",
    "compute_angle_rows",
    "compute_metrics",
    "summarize_checks",
]

#: the benchmark protocols: the official CaloChallenge evaluation, or fastsim's lighter one
PROTOCOLS = ("calochallenge", "quick")
#: FPD/KPD settings of the official evaluation (``evaluate.py``: fpd(min_samples=10000), kpd(batch_size=10000))
FPD_SETTINGS = {"min_samples": 10_000, "max_samples": 50_000, "num_batches": 20, "num_points": 10}
KPD_SETTINGS = {"num_batches": 10, "batch_size": 10_000}
#: classifier inputs: "low" (voxels / E_inc), "normed" (voxels / E_layer), "high" (the high-level
#: vector); the default set per protocol. One official classifier on 2700 vs 2700 showers costs
#: ~4.5 CPU-minutes (docs/benchmark.md).
CLASSIFIER_INPUTS = ("low", "normed", "high")
DEFAULT_CLASSIFIER_INPUTS = {"calochallenge": ("low", "normed", "high"), "quick": ("low", "high")}


def compare_timing(
    attrs_gen: dict[str, Any], attrs_ref: dict[str, Any], groups: EnergyGroups
) -> dict[str, Any] | None:
    """Timing comparison from the files' ``time_per_shower_s`` / ``time_per_shower_by_energy``."""

    def per_energy(attrs: dict[str, Any]) -> dict[float, float]:
        raw = attrs.get("time_per_shower_by_energy")
        if raw is None:
            return {}
        try:
            d = json.loads(raw) if isinstance(raw, str) else dict(raw)
            return {float(k): float(val) for k, val in d.items()}
        except (ValueError, TypeError):
            return {}

    def scalar(attrs: dict[str, Any]) -> float | None:
        try:
            val = float(attrs["time_per_shower_s"])
        except (KeyError, TypeError, ValueError):
            return None
        return val if math.isfinite(val) and val > 0 else None

    tg, tr = scalar(attrs_gen), scalar(attrs_ref)
    if tg is None and tr is None:
        return None
    out: dict[str, Any] = {
        "generated_s_per_shower": tg,
        "reference_s_per_shower": tr,
        "speedup": (tr / tg) if (tg and tr) else None,
        "generated_device": attrs_gen.get("device"),
        "reference_producer": attrs_ref.get("producer"),
        "by_energy": [],
    }
    pg, pr = per_energy(attrs_gen), per_energy(attrs_ref)
    if pg or pr:
        for key, e in zip(groups.keys(), groups.energies, strict=True):
            g = next((val for k, val in pg.items() if math.isclose(k, e, rel_tol=1e-5)), None)
            r = next((val for k, val in pr.items() if math.isclose(k, e, rel_tol=1e-5)), None)
            out["by_energy"].append(
                {"key": key, "energy": float(e), "generated_s": g, "reference_s": r,
                 "speedup": (r / g) if (g and r) else None}
            )  # fmt: skip
    return out


def compute_metrics(
    gen: SampleData,
    ref: SampleData,
    geometry: Geometry,
    groups: EnergyGroups,
    tolerances: Tolerances,
    classifier: bool = True,
    classifier_options: dict[str, Any] | None = None,
    seed: int = 0,
    n_bins: int = 50,
    protocol: str = "calochallenge",
    classifier_inputs: tuple[str, ...] | None = None,
) -> BenchmarkResult:
    """All metrics of a generated sample against the reference.

    Args:
        gen, ref: from :func:`collect_sample`.
        geometry: the voxel geometry.
        groups: incident-energy groups built from the reference.
        tolerances: the pass/fail thresholds.
        classifier: run the classifier tests.
        classifier_options: fields of :class:`fastsim.metrics.classifier.ClassifierConfig`.
        seed: seeds the bootstraps and the classifier.
        n_bins: bins of the shape histograms (E_tot/E_inc per energy uses 30 under ``"quick"``).
        protocol: ``"calochallenge"``: E_tot/E_inc per energy in the official binning
            (:func:`fastsim.metrics.calochallenge.per_energy_edges`), the official classifier on
            the official inputs (low-level, low-level normed, high-level vector), and a
            ``calochallenge`` section (official separation powers of every feature, FPD, KPD);
            ``"quick"``: 30 bins over the reference's range per energy and the
            :class:`~fastsim.metrics.classifier.ClassifierConfig` defaults on fastsim's inputs.
        classifier_inputs: which classifier inputs to test (:data:`CLASSIFIER_INPUTS`; default
            :data:`DEFAULT_CLASSIFIER_INPUTS` of the protocol; "normed" needs the samples'
            ``low_level_normed``).

    Returns:
        A :class:`~fastsim.report.result.BenchmarkResult`: per energy (summaries of E_tot/E_inc of
        both samples, their ratios, the distribution comparison and pass flags), layers, shapes,
        voxel spectrum, classifier, the ``calochallenge`` section (None under ``"quick"``) and the
        summary (the checks and the verdict); the run's context (inputs, timing, ...) is left to
        the caller (:func:`fastsim.report.report.run_benchmark`).
    """
    from fastsim.metrics import calochallenge as cc

    if protocol not in PROTOCOLS:
        raise FastsimError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    official = protocol == "calochallenge"
    dataset = cc.dataset_key(geometry)
    inputs = classifier_input_set(protocol, classifier_inputs)
    fg, fr = gen.features, ref.features
    ig, ir = groups.assign(fg["e_inc"]), groups.assign(fr["e_inc"])
    ratio_g, ratio_r = fg["e_tot"] / fg["e_inc"], fr["e_tot"] / fr["e_inc"]
    keys, labels = groups.keys(), groups.labels()
    per_energy: list[EnergyRow] = []
    for gi in range(groups.n_groups):
        xg, xr = ratio_g[ig == gi], ratio_r[ir == gi]
        energy = float(groups.energies[gi])
        sg, sr_ = summarize(xg), summarize(xr)
        ratios = compare_response(sg, sr_)
        e_ratio: Comparison | None = None
        if len(xg) and len(xr) and official:
            e_ratio = Comparison.from_json(
                compare_distributions(
                    xg, xr, bins=cc.per_energy_edges(energy, dataset), seed=seed + gi, clip=False
                )
            )
            # the official value: NaN (not 1) when a sample has no entry inside the range
            e_ratio.separation_power = cc.official_separation_power(xg, xr, e_ratio.edges)
        elif len(xg) and len(xr):
            e_ratio = Comparison.from_json(
                compare_distributions(xg, xr, bins=reference_binning(xr, 30), seed=seed + gi, clip=True)
            )
        rr, sr = ratios["response_ratio"], ratios["resolution_ratio"]
        sep = e_ratio.separation_power if e_ratio is not None else math.nan
        per_energy.append(
            EnergyRow(
                key=keys[gi], label=labels[gi], energy=energy,
                generated=SampleSummary.from_json(sg), reference=SampleSummary.from_json(sr_), **ratios,
                e_ratio=e_ratio,
                pass_response=bool(math.isfinite(rr) and abs(rr - 1) <= tolerances.response),
                pass_resolution=bool(math.isfinite(sr) and abs(sr - 1) <= tolerances.resolution),
                status_response=status(rr, ratios["response_ratio_unc"], tolerances.response),
                status_resolution=status(sr, ratios["resolution_ratio_unc"], tolerances.resolution),
                pass_separation=bool(sep is not None and math.isfinite(sep) and sep <= tolerances.separation),
            )
        )  # fmt: skip

    # layer energies: mean fractions per energy, and distributions of E_layer/E_inc over all energies
    lg = layer_response(fg["e_inc"], fg["e_layer"], groups)
    lr = layer_response(fr["e_inc"], fr["e_layer"], groups)
    frac_g = fg["e_layer"] / fg["e_inc"][:, None]
    frac_r = fr["e_layer"] / fr["e_inc"][:, None]
    layers = LayerSection(
        ids=list(geometry.layer_ids),
        per_energy={key: {"generated": lg[key].tolist(), "reference": lr[key].tolist()} for key in lg if key != "n"},
        distributions=[
            Comparison.from_json(compare_distributions(frac_g[:, li], frac_r[:, li],
                                                       bins=reference_binning(frac_r[:, li], n_bins), seed=seed + li, clip=True))
            for li in range(geometry.n_layers)
        ],
    )  # fmt: skip

    shapes: dict[str, ShapeSection] = {}
    for feat in PER_LAYER_FEATURES:
        if feat == "e_layer":
            continue  # in "layers", as fractions of E_inc
        shapes[feat] = ShapeSection(FEATURE_UNITS[feat], [
            Comparison.from_json(compare_distributions(fg[feat][:, li], fr[feat][:, li],
                                                       bins=reference_binning(fr[feat][:, li], n_bins), seed=seed + li, clip=True))
            for li in range(geometry.n_layers)
        ])  # fmt: skip

    spectrum = VoxelSpectrum(
        edges_mev=gen.spectrum_edges.tolist(),
        generated=gen.spectrum_counts.tolist(),
        reference=ref.spectrum_counts.tolist(),
        generated_below=gen.spectrum_below,
        reference_below=ref.spectrum_below,
        generated_above=gen.spectrum_above,
        reference_above=ref.spectrum_above,
        separation_power=separation_power_counts(gen.spectrum_counts, ref.spectrum_counts),
    )

    def hl_vector(sample: SampleData, rows: np.ndarray | None = None) -> np.ndarray:
        f = sample.features if rows is None else {k: v[rows] for k, v in sample.features.items()}
        return cc.high_level_vector({**f, "sparsity_official": 1.0 - f["sparsity"]}, geometry)

    clf = ClassifierSection(run=bool(classifier))
    if classifier:
        from fastsim.metrics.classifier import (
            CALOCHALLENGE,
            ClassifierConfig,
            classifier_test,
            high_level_inputs,
        )

        base = CALOCHALLENGE if official else ClassifierConfig()
        cfg = ClassifierConfig(**{**asdict(base), "seed": seed, **(classifier_options or {})})
        clf.protocol = protocol
        clf.settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
        clf.inputs = list(inputs)
        if "low" in inputs and gen.low_level is not None and ref.low_level is not None:
            clf.low_level = ClassifierResult.from_json(classifier_test(gen.low_level, ref.low_level, cfg))
        if "normed" in inputs and gen.low_level_normed is not None and ref.low_level_normed is not None:
            clf.low_level_normed = ClassifierResult.from_json(
                classifier_test(gen.low_level_normed, ref.low_level_normed, cfg)
            )
        # high-level input from the same subsample as the low-level one, so both tests see the same showers
        if official:
            hl_g, hl_r = hl_vector(gen, gen.sub_index), hl_vector(ref, ref.sub_index)
        else:
            hl_g = high_level_inputs({k: v[gen.sub_index] for k, v in fg.items()})
            hl_r = high_level_inputs({k: v[ref.sub_index] for k, v in fr.items()})
        if "high" in inputs:
            clf.high_level = ClassifierResult.from_json(classifier_test(hl_g, hl_r, cfg))
        clf.n_per_class = {k: int(r.n_per_class or 0) for k, r in clf.results().items()}

    caloc = _calochallenge_section(gen, ref, geometry, dataset, hl_vector, seed) if official else None

    summary = summarize_checks(per_energy, clf, tolerances)
    return BenchmarkResult(
        protocol=protocol,
        energy_groups=groups.to_dict(),
        per_energy=per_energy,
        layers=layers,
        shapes=shapes,
        voxel_spectrum=spectrum,
        classifier=clf,
        calochallenge=caloc,
        summary=summary,
    )


def compute_angle_rows(
    gen: SampleData,
    ref: SampleData,
    groups: EnergyGroups,
    angles_groups: AngleGroups,
    angles_gen: np.ndarray,
    angles_ref: np.ndarray,
) -> list[AngleRow]:
    """Response and resolution of E_tot/E_inc per incident energy × incidence angle.

    Args:
        gen, ref: the collected samples (``features["e_inc"]``/``["e_tot"]`` (N,) MeV, file order).
        groups, angles_groups: energy and angle groups, both from the reference.
        angles_gen, angles_ref: each sample's incidence angles, (N,) degrees, file order.

    Returns:
        One :class:`AngleRow` per cell the reference fills, energy-major (the generated side has
        ``n = 0`` where it has no shower).
    """
    rows_g = energy_angle_response(gen.features["e_inc"], gen.features["e_tot"], angles_gen, groups, angles_groups)
    rows_r = energy_angle_response(ref.features["e_inc"], ref.features["e_tot"], angles_ref, groups, angles_groups)
    e_keys, e_labels = groups.keys(), groups.labels()
    a_keys, a_labels = angles_groups.keys(), angles_groups.labels()
    out = []
    for rg, rr in zip(rows_g, rows_r, strict=True):
        if rr["n"] == 0:
            continue
        g, k = rr["energy_index"], rr["angle_index"]
        sg = {key: rg[key] for key in ("n", "mean", "mean_unc", "std", "resolution", "resolution_unc", "median")}
        sr = {key: rr[key] for key in sg}
        out.append(AngleRow(
            key=f"{e_keys[g]}@{a_keys[k]}", label=f"{e_labels[g]}, {a_labels[k]}", energy_key=e_keys[g],
            angle_key=a_keys[k], energy=rr["energy"], angle=rr["angle"],
            generated=SampleSummary.from_json(sg), reference=SampleSummary.from_json(sr), **compare_response(sg, sr),
        ))  # fmt: skip
    return out


def summarize_checks(per_energy: list[EnergyRow], clf: ClassifierSection, tolerances: Tolerances) -> Summary:
    """The tolerance checks (response and resolution per energy, the mean separation power of
    E_tot/E_inc, each classifier's AUC) and the verdict."""
    checks = []
    for row in per_energy:
        checks.append(Check(f"response {row.label}", row.response_ratio, row.response_ratio_unc,
                            f"|ratio-1| <= {tolerances.response:g}", row.pass_response))  # fmt: skip
        checks.append(Check(f"resolution {row.label}", row.resolution_ratio, row.resolution_ratio_unc,
                            f"|ratio-1| <= {tolerances.resolution:g}", row.pass_resolution))  # fmt: skip
    seps = [number(row.e_ratio.separation_power) for row in per_energy if row.e_ratio]
    mean_sep = float(np.mean(seps)) if seps else math.nan
    floors = [number(row.e_ratio.separation_power_floor) for row in per_energy if row.e_ratio]
    checks.append(Check("mean separation power of E_tot/E_inc", mean_sep, None, f"<= {tolerances.separation:g}",
                        bool(math.isfinite(mean_sep) and mean_sep <= tolerances.separation)))  # fmt: skip
    for kind, res in clf.results().items():
        auc = number(res.auc)
        checks.append(Check(f"classifier AUC ({kind.replace('_', '-')})", auc, res.auc_unc,
                            f"<= {tolerances.auc:g}", bool(auc <= tolerances.auc)))  # fmt: skip
    n_failed = sum(not c.passed for c in checks)
    n_not_significant = sum(
        getattr(row, f"status_{q}") == "not significant"
        for row in per_energy
        for q in ("response", "resolution")
    )
    return Summary(
        passed=n_failed == 0,
        n_checks=len(checks),
        n_failed=n_failed,
        n_failed_not_significant=n_not_significant,
        mean_separation_power_e_ratio=mean_sep,
        mean_separation_power_floor=float(np.mean(floors)) if floors else math.nan,
        checks=checks,
    )


def classifier_input_set(protocol: str, inputs: tuple[str, ...] | None) -> tuple[str, ...]:
    """The classifier inputs to test: ``inputs`` checked and deduplicated, or the protocol's default."""
    if inputs is None:
        return DEFAULT_CLASSIFIER_INPUTS[protocol]
    bad = [i for i in inputs if i not in CLASSIFIER_INPUTS]
    if bad or not inputs:
        raise FastsimError(
            f"classifier inputs must be some of {', '.join(CLASSIFIER_INPUTS)}, got {','.join(inputs)!r}"
        )
    return tuple(dict.fromkeys(inputs))


def _calochallenge_section(
    gen: SampleData, ref: SampleData, geometry: Geometry, dataset: str | None, hl_vector: Any, seed: int
) -> OfficialSection:
    """The official separation powers of every feature (official binnings), FPD and KPD."""
    from fastsim.metrics import calochallenge as cc
    from fastsim.metrics.fpd import fpd, fpd_floor, kpd

    fg, fr = gen.features, ref.features

    def hist(xg: np.ndarray, xr: np.ndarray, edges: np.ndarray, layer: int | None = None) -> Comparison:
        cg, cr = np.histogram(xg, bins=edges)[0], np.histogram(xr, bins=edges)[0]
        return Comparison(
            separation_power=cc.official_separation_power(xg, xr, edges), edges=edges.tolist(),
            n_generated_inside=int(cg.sum()), n_reference_inside=int(cr.sum()),
            hist_generated=(cg / cg.sum() if cg.sum() else cg.astype(float)).tolist(),
            hist_reference=(cr / cr.sum() if cr.sum() else cr.astype(float)).tolist(), layer=layer,
        )  # fmt: skip

    source = {"e_layer": "e_layer", "center_eta": "center_x", "center_phi": "center_y", "width_eta": "width_x",
              "width_phi": "width_y", "center_r": "center_r", "width_r": "width_r"}  # fmt: skip
    features: dict[str, list[Comparison]] = {}
    for feat in cc.FEATURES:
        rows = []
        for li, ly in enumerate(geometry.layers):
            if feat in ("center_eta", "center_phi", "width_eta", "width_phi") and ly.n_alpha == 1:
                continue  # the official code histograms η/φ only for the layers binned in α
            if feat == "sparsity":
                xg, xr = 1.0 - fg["sparsity"][:, li], 1.0 - fr["sparsity"][:, li]
            else:
                xg, xr = fg[source[feat]][:, li], fr[source[feat]][:, li]
            edges = cc.feature_edges(feat, ly.id, dataset, ref.threshold, xr)
            rows.append(hist(np.asarray(xg, np.float64), np.asarray(xr, np.float64), edges, ly.id))
        features[feat] = rows
    e_all = hist(fg["e_tot"] / fg["e_inc"], fr["e_tot"] / fr["e_inc"], cc.etot_einc_edges())
    voxel = None
    if gen.official_voxel_counts is not None and ref.official_voxel_counts is not None:
        cg, cr = gen.official_voxel_counts, ref.official_voxel_counts
        voxel = {
            "separation_power": math.nan if not (cg.sum() and cr.sum())
            else float(0.5 * np.sum((cg / cg.sum() - cr / cr.sum()) ** 2 / (cg / cg.sum() + cr / cr.sum() + 1e-16))),
            "edges": cc.feature_edges("voxel", 0, dataset, ref.threshold, [ref.max_voxel]).tolist(),
        }  # fmt: skip
    t0 = time.perf_counter()
    hr, hg = hl_vector(ref), hl_vector(gen)
    fpd_v, fpd_u = fpd(hr, hg, seed=seed, **FPD_SETTINGS)
    # two independent samples of one distribution give FPD > 0: the floor says how much
    floor_v, floor_u = fpd_floor(hr, len(hg), seed=seed, **FPD_SETTINGS)
    kpd_v, kpd_u = kpd(hr, hg, seed=seed, **KPD_SETTINGS)
    return OfficialSection(
        dataset=dataset,
        threshold_mev=ref.threshold,
        high_level_columns=cc.high_level_columns(geometry),
        e_ratio=e_all,
        features=features,
        voxel=voxel,
        fpd={"value": fpd_v, "unc": fpd_u, "floor": floor_v, "floor_unc": floor_u,
             "n_reference": len(hr), "n_generated": len(hg), **FPD_SETTINGS},
        kpd={"value": kpd_v, "unc": kpd_u, "n_reference": len(hr), "n_generated": len(hg), **KPD_SETTINGS},
        fpd_kpd_seconds=time.perf_counter() - t0,
    )  # fmt: skip

"""The benchmark report as text: a list of blocks drawn from a
:class:`~fastsim.report.result.BenchmarkResult`, rendered to Markdown and to HTML."""

from __future__ import annotations

import html
import math
import os
from typing import Any

import numpy as np

from fastsim.report.result import BenchmarkResult, Comparison, number

__all__ = ["document", "render_html", "render_markdown"]


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool):
        return "pass" if x else "**FAIL**"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x):.{digits}g}"


def _status_cell(status: str) -> str:
    return {"pass": "pass", "fail": "**FAIL**"}.get(status, "fail (< 2σ)")


def _pm(v: Any, u: Any, digits: int = 4) -> str:
    if u is None or (isinstance(u, float) and not math.isfinite(u)):
        return _fmt(v, digits)
    return f"{_fmt(v, digits)} ± {_fmt(u, 2)}"


def angle_table(result: BenchmarkResult) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the per energy × angle table (empty rows when the samples carry no angle)."""
    header = ["E_inc", "angle", "N gen", "N ref", "response gen", "response ref", "ratio",
              "resolution gen", "resolution ref", "ratio"]  # fmt: skip
    rows = []
    for row in result.per_energy_angle or []:
        g, r = row.generated, row.reference
        rows.append([
            row.label.rsplit(", ", 1)[0], f"{row.angle_key}°", _fmt(g.n), _fmt(r.n), _pm(g.mean, g.mean_unc),
            _pm(r.mean, r.mean_unc), _pm(row.response_ratio, row.response_ratio_unc),
            _pm(g.resolution, g.resolution_unc, 3), _pm(r.resolution, r.resolution_unc, 3),
            _pm(row.resolution_ratio, row.resolution_ratio_unc),
        ])  # fmt: skip
    return header, rows


def _angle_blocks(result: BenchmarkResult) -> list[tuple[str, Any]]:
    groups = result.angle_groups or {}
    text = ("Both samples carry the incidence angle (`incident_angles`, degrees): E_tot/E_inc per incident "
            "energy and angle (groups from the reference). Informational: the checks above are per energy.")  # fmt: skip
    only = [f"{name} only: {', '.join(f'{a:g}' for a in groups.get(key) or [])}°"
            for name, key in (("generated", "generated_only_deg"), ("reference", "reference_only_deg"))
            if groups.get(key)]  # fmt: skip
    if only:
        text += " Angles in one sample only (not compared): " + "; ".join(only) + "."
    return [("h2", "Agreement per incident energy × angle"), ("p", text), ("table", angle_table(result))]


def document(result: BenchmarkResult, images: dict[str, str]) -> list[tuple[str, Any]]:
    """The report as blocks ("h1"/"h2"/"p"/"table"/"img", content), rendered to Markdown and HTML.

    Args:
        result: the benchmark's result.
        images: plot key -> PNG file name (:func:`fastsim.report.plots.make_plots`).
    """
    inp = result.inputs
    summ = result.summary
    tol = result.tolerances
    geometry = result.geometry
    blocks: list[tuple[str, Any]] = [("h1", "fastsim benchmark: generated vs full simulation")]
    blocks.append(("p", f"Generated: `{inp['generated']['path']}` ({inp['generated']['n_showers']} showers). "
                        f"Reference: `{inp['reference']['path']}` ({inp['reference']['n_showers']} showers). "
                        f"Geometry: {geometry['name']} ({geometry['n_voxels']} voxels, "
                        f"{len(geometry['layers'])} layers). Incident energies: "
                        f"{result.energy_groups['kind']}, {len(result.energy_groups['keys'])} groups."))  # fmt: skip
    thr = result.threshold or {}
    clf = result.classifier
    protocol = result.protocol
    proto_text = (
        "the CaloChallenge evaluation (official binnings, high-level vector, classifier, FPD/KPD)"
        if protocol == "calochallenge"
        else "quick (fastsim's lighter classifier, reference-range binnings)"
    )
    blocks.append(("p", f"Protocol: **{protocol}** — {proto_text}. Readout threshold: "
                        f"{_fmt(thr.get('mev'))} MeV ({thr.get('source', '?')}; voxels below it zeroed in both "
                        f"samples before every metric)."))  # fmt: skip
    verdict = "PASS" if summ.passed else "FAIL"
    blocks.append(("p", f"**Verdict: {verdict}** — {summ.n_passed} of {summ.n_checks} "
                        f"checks pass. Tolerances: response ±{tol['response']:g}, resolution ±{tol['resolution']:g} "
                        f"(relative), mean separation power of E_tot/E_inc ≤ {tol['separation']:g} "
                        f"(finite-sample floor here ≈ {_fmt(summ.mean_separation_power_floor, 2)}), "
                        f"classifier AUC ≤ {tol['auc']:g}."))  # fmt: skip
    if summ.n_failed_not_significant:
        blocks.append(("p", f"{summ.n_failed_not_significant} of the failed response/resolution checks lie "
                            "within 2σ of the tolerance band (marked 'fail (< 2σ)'): these samples are too small "
                            "to tell."))  # fmt: skip
    blocks.append(("h2", "Agreement per incident energy"))
    header = ["E_inc", "N gen", "N ref", "response gen", "response ref", "ratio", "", "resolution gen",
              "resolution ref", "ratio", "", "sep. power", "χ²/ndf"]  # fmt: skip
    rows = []
    for row in result.per_energy:
        er = row.e_ratio or Comparison()
        g, r = row.generated, row.reference
        rows.append([
            row.label, _fmt(g.n), _fmt(r.n), _pm(g.mean, g.mean_unc), _pm(r.mean, r.mean_unc),
            _pm(row.response_ratio, row.response_ratio_unc), _status_cell(row.status_response),
            _pm(g.resolution, g.resolution_unc, 3), _pm(r.resolution, r.resolution_unc, 3),
            _pm(row.resolution_ratio, row.resolution_ratio_unc), _status_cell(row.status_resolution),
            _pm(er.separation_power, er.separation_power_unc, 3), _fmt(er.chi2_ndf, 3),
        ])  # fmt: skip
    blocks.append(("table", (header, rows)))
    for key in ("response", "resolution", "e_ratio"):
        if key in images:
            blocks.append(("img", images[key]))
    if result.per_energy_angle:
        blocks.extend(_angle_blocks(result))
    blocks.append(("h2", "Classifier test"))
    if clf.run:
        rows = []
        for kind, c in clf.results().items():
            rows.append([kind.replace("_", "-"), _pm(c.auc, c.auc_unc, 3), _fmt(c.jsd, 3), _fmt(c.n_per_class),
                         _fmt(c.n_test), _fmt(c.epochs), _fmt(number(c.auc) <= tol["auc"])])  # fmt: skip
        blocks.append(
            ("table", (["input", "ROC AUC", "JSD", "showers/class", "test rows", "epochs", ""], rows))
        )
        blocks.append(
            ("p", "AUC 0.5: indistinguishable; 1.0: fully separable (CaloChallenge, arXiv:2410.21611).")
        )
        st = clf.settings or {}
        if st:
            blocks.append(("p", f"Classifier: hidden {'×'.join(str(h) for h in st['hidden'])}, LeakyReLU "
                                f"({st['leaky_slope']:g}), dropout {st['dropout']:g}, Adam lr {st['lr']:g}, batch "
                                f"{st['batch_size']}, at most {st['max_epochs']} epochs, epoch kept by validation "
                                f"{st['select_on']}, {st['dtype']}, isotonic calibration; split "
                                f"{1 - st['val_fraction'] - st['test_fraction']:g}/{st['val_fraction']:g}/"
                                f"{st['test_fraction']:g} per class (train/selection+calibration/score); AUC of the "
                                f"{'calibrated' if st['score_calibrated'] else 'raw'} output."))  # fmt: skip
    else:
        blocks.append(("p", "Not run (--no-classifier)."))
    blocks.append(("h2", "Layer energies and shower shapes"))
    sep_rows = []
    shapes = result.shapes
    for li, lid in enumerate(result.layers.ids):
        cells = [str(lid), _fmt(result.layers.distributions[li].separation_power, 3)]
        cells += [_fmt(shapes[f].layers[li].separation_power, 3) for f in shapes]
        sep_rows.append(cells)
    blocks.append(("p", "Separation power per layer (all energies together):"))
    blocks.append(("table", (["layer", "E_layer/E_inc", *shapes.keys()], sep_rows)))
    for key in ("layers", "layer_fractions", *[f"shape_{f}" for f in shapes], "voxel_spectrum", "images"):
        if key in images:
            blocks.append(("img", images[key]))
    blocks.append(("p", f"Voxel-energy spectrum separation power: "
                        f"{_fmt(result.voxel_spectrum.separation_power, 3)}."))  # fmt: skip
    cc = result.calochallenge
    if cc is not None:
        blocks.append(("h2", "CaloChallenge evaluation"))
        fpd, kpd = cc.fpd, cc.kpd

        def milli(x: Any) -> Any:
            return None if x is None else 1e3 * x

        blocks.append(("p", f"Dataset rules: {cc.dataset or 'dataset 1 (not a CaloChallenge geometry)'}. "
                            f"FPD ×10³: {_pm(milli(fpd['value']), milli(fpd['unc']), 3)} (finite-sample floor: "
                            f"{_pm(milli(fpd.get('floor')), milli(fpd.get('floor_unc')), 3)}, what two independent "
                            f"samples of the reference's distribution of these sizes give); "
                            f"KPD ×10³: {_pm(milli(kpd['value']), milli(kpd['unc']), 3)} "
                            f"({fpd['n_reference']} reference, {fpd['n_generated']} generated showers; JetNet "
                            f"definitions on the {len(cc.high_level_columns)}-column high-level vector). "
                            f"Separation power of E_tot/E_inc in [0.5, 1.5]: {_fmt(cc.e_ratio.separation_power, 3)}; "
                            f"of the voxel energies: {_fmt((cc.voxel or {}).get('separation_power'), 3)}."))  # fmt: skip
        feats = list(cc.features)
        by_layer: dict[Any, dict[str, Any]] = {}
        for feat in feats:
            for comp in cc.features[feat]:
                by_layer.setdefault(comp.layer, {})[feat] = comp.separation_power
        blocks.append(
            (
                "p",
                "Separation power per layer in the official binnings (– : not defined, or no entry inside the range):",
            )
        )
        blocks.append(("table", (["layer", *feats],
                                 [[str(lid), *[_fmt(v.get(f), 3) for f in feats]] for lid, v in by_layer.items()])))  # fmt: skip
    timing = result.timing
    blocks.append(("h2", "Timing"))
    if timing:
        blocks.append(("p", f"Generator: {_fmt(timing['generated_s_per_shower'])} s/shower "
                            f"(device {timing.get('generated_device') or '?'}); full simulation: "
                            f"{_fmt(timing['reference_s_per_shower'])} s/shower "
                            f"({timing.get('reference_producer') or '?'}); speed-up {_fmt(timing['speedup'], 4)}."))  # fmt: skip
        if timing["by_energy"]:
            blocks.append(("table", (["E_inc key (MeV)", "generator s", "full sim s", "speed-up"],
                                     [[t["key"], _fmt(t["generated_s"]), _fmt(t["reference_s"]),
                                       _fmt(t["speedup"], 4)] for t in timing["by_energy"]])))  # fmt: skip
    else:
        blocks.append(("p", "The inputs carry no time_per_shower_s attributes."))
    blocks.append(("p", f"All numbers: `metrics.json`. Made by fastsim {result.fastsim_version} "
                        f"at {result.created_utc} (seed {result.seed})."))  # fmt: skip
    return blocks


def render_markdown(blocks: list[tuple[str, Any]]) -> str:
    out = []
    for kind, content in blocks:
        if kind == "h1":
            out.append(f"# {content}\n")
        elif kind == "h2":
            out.append(f"## {content}\n")
        elif kind == "p":
            out.append(f"{content}\n")
        elif kind == "img":
            out.append(f"![{os.path.splitext(content)[0]}]({content})\n")
        elif kind == "table":
            header, rows = content
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def render_html(blocks: list[tuple[str, Any]]) -> str:
    import re

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>fastsim benchmark</title>",
           "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}</style></head><body>"]  # fmt: skip
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{inline(content)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{inline(content)}</p>")
        elif kind == "img":
            out.append(f"<p><img src='{html.escape(content)}' alt='{html.escape(content)}'></p>")
        elif kind == "table":
            header, rows = content
            out.append("<table><tr>" + "".join(f"<th>{inline(h)}</th>" for h in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)

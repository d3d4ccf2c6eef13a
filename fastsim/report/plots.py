"""Plots of benchmark results. Every function draws numbers already in a
:class:`~fastsim.report.result.BenchmarkResult` (histograms, means, ratios; a ``metrics.json``
dict is read into one first); none computes a metric.

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot, no global backend state) and
saved through a temporary file and a rename. The ``mplhep`` ROOT style is used when mplhep is
installed, matplotlib's default otherwise.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from fastsim.geometry import Geometry
from fastsim.report.result import BenchmarkResult, Comparison, as_comparison, as_result

__all__ = [
    "make_plots",
    "plot_distribution_grid",
    "plot_layer_fractions",
    "plot_mean_images",
    "plot_response",
    "plot_voxel_spectrum",
]

GEN_COLOR = "tab:red"
REF_COLOR = "black"

#: the per-layer shape features, with axis labels
SHAPE_LABELS = {
    "center_x": "centre of energy x [mm]",
    "center_y": "centre of energy y [mm]",
    "center_r": "centre of energy r [mm]",
    "width_x": "width x [mm]",
    "width_y": "width y [mm]",
    "width_r": "width r [mm]",
    "sparsity": "fraction of voxels hit",
}


@contextlib.contextmanager
def _style() -> Iterator[None]:
    import matplotlib.style

    try:
        import mplhep

        style: Any = mplhep.style.ROOT
    except ImportError:  # optional: plots look plainer without it
        style = "default"
    with matplotlib.style.context(style):
        yield


def _save(fig: Any, path: str, tight: bool = True) -> None:
    """Save a Figure atomically as PNG; ``tight=False`` for figures with fixed margins (a tight
    bounding box costs a second draw, which matters for the 45-layer grids)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from fastsim.outputs import atomic_output

    FigureCanvasAgg(fig)
    with atomic_output(path) as tmp:
        # the HEP style's large labels need a tight box on the single-panel figures
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight" if tight else None)


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def plot_response(results: BenchmarkResult | dict[str, Any], path: str, quantity: str = "response") -> None:
    """Response ⟨E_tot/E_inc⟩ (or resolution σ/μ) vs E_inc, both samples, and their ratio.

    Args:
        results: the benchmark result (or its ``metrics.json`` dict).
        path: PNG file.
        quantity: ``"response"`` or ``"resolution"``.
    """
    from matplotlib.figure import Figure

    result = as_result(results)
    rows = result.per_energy
    tol = result.tolerances[quantity]
    key, unc = ("mean", "mean_unc") if quantity == "response" else ("resolution", "resolution_unc")
    e = np.array([r.energy for r in rows]) / 1e3
    with _style():
        fig = Figure(figsize=(8, 7))
        gs = fig.add_gridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
        ax, axr = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
        for sample, color, marker, off in (("reference", REF_COLOR, "o", 1.0), ("generated", GEN_COLOR, "s", 1.03)):
            y = [_nan(getattr(getattr(r, sample), key)) for r in rows]
            dy = [_nan(getattr(getattr(r, sample), unc)) for r in rows]
            ax.errorbar(e * off, y, yerr=dy, fmt=marker, color=color, label=sample, ms=5)
        ratio = [_nan(getattr(r, f"{quantity}_ratio")) for r in rows]
        dratio = [_nan(getattr(r, f"{quantity}_ratio_unc")) for r in rows]
        axr.axhspan(1 - tol, 1 + tol, color="0.85", label=f"±{tol:g}")
        axr.axhline(1, color=REF_COLOR, lw=0.8)
        axr.errorbar(e, ratio, yerr=dratio, fmt="s", color=GEN_COLOR, ms=4)
        for a in (ax, axr):
            a.set_xscale("log")
        ax.set_ylabel("mean E_tot/E_inc" if quantity == "response" else "σ/μ of E_tot/E_inc")
        ax.tick_params(labelbottom=False)
        ax.legend()
        axr.set_xlabel("E_inc [GeV]")
        axr.set_ylabel("gen/ref")
        finite = [v for v in ratio if math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (1.0, 1.0)
        pad = max(2 * tol, 0.2 * (hi - lo))
        axr.set_ylim(min(lo, 1) - pad, max(hi, 1) + pad)
        _save(fig, path)


def _hist_pair(ax: Any, axr: Any, comp: Comparison, xlabel: str, title: str | None = None) -> None:
    """Step histograms of a comparison, and the gen/ref ratio below."""
    edges = np.asarray(comp.edges)
    hg, hr = np.asarray(comp.hist_generated, dtype=float), np.asarray(comp.hist_reference, dtype=float)
    width = np.diff(edges)
    ax.stairs(hr / width, edges, color=REF_COLOR, label="reference", fill=True, alpha=0.2)
    ax.stairs(hr / width, edges, color=REF_COLOR)
    ax.stairs(hg / width, edges, color=GEN_COLOR, label="generated", lw=1.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(hr > 0, hg / hr, np.nan)
    axr.stairs(ratio, edges, color=GEN_COLOR, baseline=None)
    axr.axhline(1, color=REF_COLOR, lw=0.8)
    axr.set_ylim(0.4, 1.6)
    axr.set_yticks([0.5, 1.0, 1.5])
    ax.tick_params(labelbottom=False)
    sep = comp.separation_power
    text = f"S = {sep:.2g}" if sep is not None and math.isfinite(sep) else ""
    ax.set_title(f"{title or ''}   {text}", fontsize="small")
    axr.set_xlabel(xlabel, fontsize="small")


def plot_distribution_grid(
    comps: list[Comparison | dict[str, Any] | None], titles: list[str], xlabel: str, path: str, ncols: int = 5
) -> None:
    """A grid of normalised-histogram overlays (one per energy or layer), each with a ratio panel.

    Args:
        comps: the comparisons (JSON dicts are read; None: empty panel).
        titles: one per panel.
        xlabel: x-axis label.
        path: PNG file.
    """
    from matplotlib.figure import Figure

    n = len(comps)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    with _style():
        # fixed margins in inches: constrained layout costs minutes for dataset 3's 45-layer grids
        height = 4.0 * nrows + 0.5
        fig = Figure(figsize=(3.8 * ncols, height))
        outer = fig.add_gridspec(
            nrows, ncols, left=0.7 / (3.8 * ncols), right=1 - 0.3 / (3.8 * ncols), top=1 - 0.35 / height, bottom=0.75 / height,
            hspace=0.5, wspace=0.3,
        )  # fmt: skip
        for i, (raw, title) in enumerate(zip(comps, titles, strict=True)):
            comp = as_comparison(raw)
            r, c = divmod(i, ncols)
            inner = outer[r, c].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.08)
            ax = fig.add_subplot(inner[0])
            axr = fig.add_subplot(inner[1], sharex=ax)
            if comp is None:
                ax.set_title(f"{title}: no showers", fontsize="small")
                continue
            _hist_pair(ax, axr, comp, xlabel, title)
            if i == 0:
                ax.legend(fontsize="x-small", loc="upper left")
        _save(fig, path, tight=False)


def plot_layer_fractions(results: BenchmarkResult | dict[str, Any], path: str) -> None:
    """Mean E_layer/E_inc vs layer, one line per incident energy (reference solid, generated dashed)."""
    from matplotlib.figure import Figure

    result = as_result(results)
    pe = result.layers.per_energy
    ids = result.layers.ids
    labels = result.energy_groups["labels"]
    x = np.arange(len(ids))
    with _style():
        fig = Figure(figsize=(8, 6))
        ax = fig.add_subplot()
        import matplotlib

        cmap = matplotlib.colormaps["viridis"]
        for g, label in enumerate(labels):
            color = cmap(g / max(1, len(labels) - 1))
            ref = np.array(pe["frac_inc"]["reference"][g], dtype=float)
            gen = np.array(pe["frac_inc"]["generated"][g], dtype=float)
            ax.plot(x, ref, "-o", color=color, ms=3, label=label)
            ax.plot(x, gen, "--", color=color)
        ax.set_xticks(x, [str(i) for i in ids])
        ax.set_xlabel("layer id")
        ax.set_ylabel("mean E_layer/E_inc")
        ax.set_title("solid: reference, dashed: generated", fontsize="small")
        ax.set_yscale("log")
        ax.legend(fontsize="xx-small", ncol=3)
        _save(fig, path)


def plot_voxel_spectrum(results: BenchmarkResult | dict[str, Any], path: str) -> None:
    """Normalised voxel-energy spectra of both samples, log-log, with the ratio."""
    from matplotlib.figure import Figure

    vs = as_result(results).voxel_spectrum
    edges = np.asarray(vs.edges_mev)
    with _style():
        fig = Figure(figsize=(8, 7))
        gs = fig.add_gridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
        ax, axr = fig.add_subplot(gs[0]), fig.add_subplot(gs[1], sharex=None)
        hists = {}
        for sample, color in (("reference", REF_COLOR), ("generated", GEN_COLOR)):
            c = np.asarray(getattr(vs, sample), dtype=float)
            h = c / c.sum() if c.sum() > 0 else c
            hists[sample] = h
            ax.stairs(h, edges, color=color, label=sample)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(hists["reference"] > 0, hists["generated"] / hists["reference"], np.nan)
        axr.stairs(ratio, edges, color=GEN_COLOR, baseline=None)
        axr.axhline(1, color=REF_COLOR, lw=0.8)
        axr.set_ylim(0.5, 1.5)
        for a in (ax, axr):
            a.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("fraction of hit voxels")
        ax.tick_params(labelbottom=False)
        ax.legend()
        axr.set_xlabel("voxel energy [MeV]")
        axr.set_ylabel("gen/ref")
        _save(fig, path)


def plot_mean_images(gen: np.ndarray, ref: np.ndarray, geometry: Geometry, path: str, ncols: int = 8) -> None:
    """Mean shower image per layer in (α, r-bin) polar coordinates: reference, generated, ratio.

    The radial axis is the r-bin index (bins of the CaloChallenge binnings grow outwards; equal
    spacing keeps the core visible).

    Args:
        gen, ref: mean voxel energy / E_inc, shape (n_voxels,).
        geometry: the voxel geometry.
        path: PNG file.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    n_l = geometry.n_layers
    ncols = max(1, min(ncols, n_l))
    blocks = math.ceil(n_l / ncols)
    with _style():
        fig = Figure(figsize=(2.6 * ncols, 2.7 * 3 * blocks))
        for i, ly in enumerate(geometry.layers):
            b, c = divmod(i, ncols)
            ig = geometry.layer_image(gen, i)
            ir = geometry.layer_image(ref, i)
            pos = np.concatenate([ig[ig > 0], ir[ir > 0]])
            vmax = float(pos.max()) if pos.size else 1.0
            vmin = max(float(pos.min()) if pos.size else 1e-6, vmax * 1e-5)
            theta = ly.alpha_edges
            if ly.n_alpha == 1:
                # one sector spanning [-π, π) is a degenerate quadrilateral: draw it as 64 equal sectors
                theta = np.linspace(-math.pi, math.pi, 65)
                ig, ir = np.repeat(ig, 64, axis=0), np.repeat(ir, 64, axis=0)
            rr = np.arange(ly.n_r + 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(ir > 0, ig / ir, np.nan)
            for row, (img, kw, name) in enumerate(
                (
                    (ir, {"norm": LogNorm(vmin, vmax), "cmap": "viridis"}, "reference"),
                    (ig, {"norm": LogNorm(vmin, vmax), "cmap": "viridis"}, "generated"),
                    (ratio, {"norm": LogNorm(0.5, 2.0), "cmap": "RdBu_r"}, "gen/ref"),
                )
            ):
                ax = fig.add_subplot(3 * blocks, ncols, (3 * b + row) * ncols + c + 1, projection="polar")
                ax.pcolormesh(theta, rr, np.ma.masked_invalid(np.where(img > 0, img, np.nan)).T, **kw)
                ax.set_xticklabels([])
                ax.set_yticklabels([])
                ax.grid(False)
                ax.set_title(f"layer {ly.id} {name}", fontsize="x-small")
        _save(fig, path)


def make_plots(
    results: BenchmarkResult | dict[str, Any],
    out_dir: str,
    mean_images: tuple[np.ndarray, np.ndarray] | None = None,
    geometry: Geometry | None = None,
) -> dict[str, str]:
    """Draw every report figure into ``out_dir``.

    Returns:
        key -> PNG file name (relative to ``out_dir``): ``response``, ``resolution``, ``e_ratio``,
        ``layers``, ``layer_fractions``, ``shape_<feature>``, ``voxel_spectrum`` and ``images``
        (when ``mean_images`` and ``geometry`` are given).
    """
    files: dict[str, str] = {}

    def path(key: str, name: str) -> str:
        files[key] = name
        return os.path.join(out_dir, name)

    result = as_result(results)
    rows = result.per_energy
    plot_response(result, path("response", "response.png"), "response")
    plot_response(result, path("resolution", "resolution.png"), "resolution")
    plot_distribution_grid(
        [r.e_ratio for r in rows], [f"E_inc {r.label}" for r in rows], "E_tot/E_inc", path("e_ratio", "e_ratio.png")
    )
    ids = result.layers.ids
    plot_distribution_grid(
        result.layers.distributions, [f"layer {i}" for i in ids], "E_layer/E_inc", path("layers", "layer_energies.png")
    )  # type: ignore[arg-type]
    plot_layer_fractions(result, path("layer_fractions", "layer_fractions.png"))
    for feat, data in result.shapes.items():
        plot_distribution_grid(
            data.layers, [f"layer {i}" for i in ids], SHAPE_LABELS.get(feat, feat), path(f"shape_{feat}", f"shape_{feat}.png")
        )  # type: ignore[arg-type]
    plot_voxel_spectrum(result, path("voxel_spectrum", "voxel_spectrum.png"))
    if mean_images is not None and geometry is not None:
        plot_mean_images(mean_images[0], mean_images[1], geometry, path("images", "mean_images.png"))
    return files

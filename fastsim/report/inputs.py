"""Checks of a generated/reference file pair before any metric: structure, geometry, energies,
energy scales, and (after collection) the deposit scale.

Every problem is a one-line :class:`~fastsim.errors.InputFileError` naming the offending file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fastsim.errors import FastsimError, InputFileError
from fastsim.geometry import BUILTIN, Geometry
from fastsim.metrics.response import AngleGroups, EnergyGroups, angle_groups, energy_groups

if TYPE_CHECKING:
    from fastsim.data.hdf5 import CaloFile
    from fastsim.report.collect import SampleData

__all__ = [
    "KS_DISTANCE",
    "KS_PVALUE",
    "InputsInfo",
    "AngleInfo",
    "check_angles",
    "check_deposit_scale",
    "check_energies",
    "check_energy_scales",
    "check_inputs",
    "infer_geometry",
]

#: p-value and KS distance below/above which continuous incident-energy spectra are called different.
#: Both must hold: with 10⁶ showers a harmless 0.5 % difference already has a tiny p-value.
KS_PVALUE = 1e-3
KS_DISTANCE = 0.02


def _attr_geometry(attrs: dict[str, Any], path: str) -> Geometry | None:
    spec = attrs.get("geometry")
    if spec is None or spec == "":
        return None
    try:
        return Geometry.resolve(spec if isinstance(spec, str) else str(spec))
    except (FastsimError, ValueError, KeyError, TypeError) as err:
        raise InputFileError(path, f"unreadable 'geometry' attribute ({err})") from None


def _same_layout(a: Geometry, b: Geometry) -> bool:
    return [(ly.r_edges, ly.n_alpha) for ly in a.layers] == [(ly.r_edges, ly.n_alpha) for ly in b.layers]


def infer_geometry(
    generated_path: str, generated_attrs: dict[str, Any], n_voxels: int,
    reference_path: str, reference_attrs: dict[str, Any],
) -> Geometry:  # fmt: skip
    """The geometry of a file pair without ``--geometry``.

    Order: the files' ``geometry`` attribute (the reference's if both carry one, after checking
    they describe the same binning), else the built-in binning with this many voxels.

    Raises:
        InputFileError: the two files carry different geometries.
        FastsimError: nothing identifies the geometry.
    """
    g_gen = _attr_geometry(generated_attrs, generated_path)
    g_ref = _attr_geometry(reference_attrs, reference_path)
    if g_gen is not None and g_ref is not None and not _same_layout(g_gen, g_ref):
        raise InputFileError(
            generated_path,
            f"geometry attribute {g_gen.name!r} differs from the reference's {g_ref.name!r} ({reference_path})",
        )
    if g_ref is not None or g_gen is not None:
        return g_ref if g_ref is not None else g_gen  # type: ignore[return-value]
    matches = [name for name in BUILTIN if Geometry.builtin(name).n_voxels == n_voxels]
    if len(matches) == 1:
        return Geometry.builtin(matches[0])
    raise FastsimError(
        f"cannot tell the geometry of {n_voxels}-voxel showers (no 'geometry' attribute, "
        f"{'several' if matches else 'no'} built-in binning with that many voxels): pass --geometry NAME|XML"
    )


def _energy_hint(e_gen: np.ndarray, e_ref: np.ndarray) -> str:
    ratio = float(np.median(e_ref)) / float(np.median(e_gen))
    if 300 < ratio < 3000:
        return " (the generated energies are ~1000x smaller: GeV instead of MeV?)"
    if 1 / 3000 < ratio < 1 / 300:
        return " (the generated energies are ~1000x larger: keV, or reference in GeV?)"
    return ""


def check_energies(
    generated_path: str, e_gen: np.ndarray, reference_path: str, e_ref: np.ndarray, groups: EnergyGroups
) -> dict[str, Any]:
    """Check that both files sample the same incident energies; return what was compared.

    Discrete reference (see :func:`fastsim.metrics.response.energy_groups`): the generated file
    must hold exactly the same set of energies (each within the groups' relative tolerance).
    Continuous: a two-sample KS test; the spectra are called different when p < :data:`KS_PVALUE`
    *and* the KS distance > :data:`KS_DISTANCE`.

    Raises:
        InputFileError: naming the generated file and what differs.
    """
    from scipy.stats import ks_2samp

    if not (np.all(np.isfinite(e_gen)) and np.all(e_gen > 0)):
        raise InputFileError(generated_path, "incident energies must be finite and > 0 MeV")
    if groups.kind == "discrete":
        idx = groups.assign(e_gen)
        present = np.unique(idx[idx >= 0])
        problems = []
        if np.any(idx < 0):
            extra = np.unique(e_gen[idx < 0])
            shown = ", ".join(f"{e:g}" for e in extra[:5]) + (" ..." if len(extra) > 5 else "")
            problems.append(f"{len(extra)} incident energies not in the reference ({shown} MeV)")
        missing = sorted(set(range(groups.n_groups)) - set(present.tolist()))
        if missing:
            shown = ", ".join(f"{groups.energies[i]:g}" for i in missing[:5]) + (
                " ..." if len(missing) > 5 else ""
            )
            problems.append(f"reference energies missing from the generated file ({shown} MeV)")
        if problems:
            raise InputFileError(
                generated_path,
                "incident energies differ from the reference's: "
                + "; ".join(problems)
                + _energy_hint(e_gen, e_ref),
            )
        return {"kind": "discrete", "n_energies": groups.n_groups}
    res = ks_2samp(e_gen, e_ref)
    if res.pvalue < KS_PVALUE and res.statistic > KS_DISTANCE:
        raise InputFileError(
            generated_path,
            f"incident-energy spectrum differs from the reference's (KS distance {res.statistic:.3g}, "
            f"p = {res.pvalue:.2g}){_energy_hint(e_gen, e_ref)}",
        )
    return {"kind": "continuous", "ks_distance": float(res.statistic), "ks_pvalue": float(res.pvalue)}


@dataclass
class InputsInfo:
    """What :func:`check_inputs` established about a file pair."""

    geometry: Geometry
    groups: EnergyGroups
    energy_check: dict[str, Any]
    attrs: dict[str, dict[str, Any]]
    n_showers: dict[str, int]
    #: the incidence angles when both files carry them (:func:`check_angles`), else None
    angles: AngleInfo | None = None


@dataclass
class AngleInfo:
    """The incidence angles of a pair that both carry them (degrees, (N,) each, file order)."""

    generated: np.ndarray
    reference: np.ndarray
    groups: AngleGroups
    generated_only: list[float]
    reference_only: list[float]


def check_angles(generated: CaloFile, reference: CaloFile) -> AngleInfo | None:
    """The angles of a pair when both files have ``incident_angles`` (None otherwise: compared per
    energy only). Angle groups are built from the reference and applied to both.

    Raises:
        InputFileError: naming the generated file, when no generated angle falls in a reference
            angle group (the samples share no angle: nothing to compare per angle), or an
            angle dataset is not in degrees.
    """
    a_gen, a_ref = generated.incident_angles_deg(), reference.incident_angles_deg()
    if a_gen is None or a_ref is None:
        return None
    groups = angle_groups(a_ref)
    idx = groups.assign(a_gen)
    if not np.any(idx >= 0):
        raise InputFileError(
            generated.path,
            f"incidence angles {_angle_list(a_gen)} deg share none with the reference {reference.path} "
            f"({_angle_list(a_ref)} deg): generate with --like {reference.path} or --angles from its set",
        )
    gen_only = sorted({round(float(a), 6) for a in a_gen[idx < 0]})
    ref_groups = groups.assign(a_ref)
    covered = set(np.unique(idx[idx >= 0]).tolist())
    ref_only = sorted({round(float(groups.values[k]), 6) for k in np.unique(ref_groups) if k >= 0 and k not in covered})
    return AngleInfo(a_gen, a_ref, groups, gen_only, ref_only)


def _angle_list(a: np.ndarray, n_max: int = 8) -> str:
    values = np.unique(np.round(a, 6))
    text = ", ".join(f"{v:g}" for v in values[:n_max])
    return text + (f", … ({len(values)} values)" if len(values) > n_max else "")


def check_inputs(
    generated: CaloFile, reference: CaloFile, geometry: str | Geometry | None = None
) -> InputsInfo:
    """Structural and cross-file checks of an open generated/reference pair (values come later).

    Checks, in order: neither file is empty; both have the same voxel count; the geometry
    (given, or from :func:`infer_geometry`) matches that count; the energy scales
    (:func:`check_energy_scales`); the incident energies (:func:`check_energies`, with groups
    built from the reference); the incidence angles when both files carry them (:func:`check_angles`).

    Args:
        generated, reference: the files, open (:func:`fastsim.data.hdf5.open_calochallenge`
            checked their structure); they stay open for the streamed pass.
        geometry: given by the user, or None to infer it.

    Raises:
        InputFileError: naming the offending file and the problem.
    """
    gf, rf = generated, reference
    gpath, rpath = gf.path, rf.path
    for cf in (gf, rf):
        if cf.n_showers == 0:  # named as such, not as missing energies after numpy warnings
            raise InputFileError(cf.path, "holds no showers")
    if gf.n_voxels != rf.n_voxels:
        raise InputFileError(
            gpath, f"showers have {gf.n_voxels} voxels but the reference {rpath} has {rf.n_voxels}"
        )
    if geometry is not None:
        geo = Geometry.resolve(geometry)
        for cf in (rf, gf):
            geo.check_n_voxels(cf.n_voxels, cf.path)
            attr_geo = _attr_geometry(cf.attrs, cf.path)
            if attr_geo is not None and not _same_layout(attr_geo, geo):
                raise InputFileError(
                    cf.path, f"geometry attribute {attr_geo.name!r} differs from --geometry {geo.name!r}"
                )
    else:
        geo = infer_geometry(gpath, gf.attrs, gf.n_voxels, rpath, rf.attrs)
        for cf in (rf, gf):
            geo.check_n_voxels(cf.n_voxels, cf.path)
    check_energy_scales(gpath, gf.attrs, rpath, rf.attrs)
    e_ref, e_gen = rf.incident_energies(), gf.incident_energies()
    if not (np.all(np.isfinite(e_ref)) and np.all(e_ref > 0)):
        raise InputFileError(rpath, "incident energies must be finite and > 0 MeV")
    groups = energy_groups(e_ref)
    check = check_energies(gpath, e_gen, rpath, e_ref, groups)
    return InputsInfo(
        geo, groups, check, {"generated": dict(gf.attrs), "reference": dict(rf.attrs)},
        {"generated": gf.n_showers, "reference": rf.n_showers}, check_angles(gf, rf),
    )  # fmt: skip


def check_energy_scales(
    generated_path: str, generated_attrs: dict[str, Any], reference_path: str, reference_attrs: dict[str, Any]
) -> None:
    """Refuse a pair whose ``energy_scale`` attributes differ (EM scale vs active-material deposits:
    a factor ~4 that no per-file check sees). Files that do not say are not judged here.

    Raises:
        InputFileError: naming the generated file, both scales and the fix.
    """
    g, r = generated_attrs.get("energy_scale") or "", reference_attrs.get("energy_scale") or ""
    if g and r and g != r:
        raise InputFileError(
            generated_path,
            f"showers are on the {g} energy scale but the reference {reference_path} is on the {r} scale "
            "(convert the Geant4 file with fastsim em-scale, or train on the reference's scale)",
        )


def check_deposit_scale(gen: SampleData, ref: SampleData, factor: float = 100.0) -> None:
    """Refuse a pair whose median E_tot/E_inc differ by more than ``factor``: a unit mix-up
    (voxels in GeV or keV) that the per-file checks cannot see when deposits are only *smaller*
    than expected. No generator worth benchmarking is off by 100x.

    Raises:
        InputFileError: naming the generated file.
    """

    def raw(sample: SampleData) -> np.ndarray:
        e = sample.e_tot_raw
        return e if e is not None and len(e) == len(sample.features["e_inc"]) else sample.features["e_tot"]

    mg = float(np.median(raw(gen) / gen.features["e_inc"]))
    mr = float(np.median(raw(ref) / ref.features["e_inc"]))
    # a generator depositing nothing (dead ReLUs) is a bad model, not a unit problem: report it
    if mr > 0 and mg > 0 and not (1 / factor <= mg / mr <= factor):
        hint = " (voxel energies in GeV instead of MeV?)" if 0 < mg < mr else ""
        raise InputFileError(
            gen.path, f"median E_tot/E_inc is {mg:.3g} but {mr:.3g} in the reference {ref.path}{hint}"
        )

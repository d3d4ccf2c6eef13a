"""The benchmark's result as typed objects, with one JSON form (``metrics.json``).

:func:`fastsim.report.assemble.compute_metrics` builds a :class:`BenchmarkResult`; the plots
(:mod:`fastsim.report.plots`), the report (:mod:`fastsim.report.render`), ``fastsim benchmark``'s
verdict line, ``fastsim demo``'s summary and ``scripts/results_table.py`` read these objects
instead of string keys. :meth:`BenchmarkResult.to_json` is the one JSON form, and
:func:`load_result` reads it back.

The pieces:

- :class:`Comparison`: one feature's generated-vs-reference histograms and their distances
  (:func:`fastsim.metrics.compare.compare_distributions`, or an official CaloChallenge binning);
- :class:`SampleSummary` and :class:`EnergyRow`: E_tot/E_inc per incident energy, both samples,
  their ratios and the pass/fail flags;
- :class:`ClassifierResult` and :class:`ClassifierSection`: the classifier tests;
- :class:`Check` and :class:`Summary`: the tolerance checks and the verdict.

Versions of ``metrics.json`` (``format_version``): 1 (before the protocol and the readout
threshold were recorded), 2 (protocol, threshold, ``calochallenge`` section), 3 (this layout:
the keys of version 2, every field of each typed object always written, ``null`` where it does
not apply). All three are read; anything else is refused with a one-line
:class:`~fastsim.errors.InputFileError`. Version 3 grew two keys without a new version, since
every reader ignores keys it does not know and reads their absence as ``null``:
``response.per_energy_angle`` (a list of :class:`AngleRow`, when both samples carry the incidence
angle) and ``response.angle_groups``; files written before them read the same.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastsim.errors import InputFileError
from fastsim.outputs import read_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "AngleRow",
    "BenchmarkResult",
    "Check",
    "ClassifierResult",
    "ClassifierSection",
    "Comparison",
    "EnergyRow",
    "LayerSection",
    "OfficialSection",
    "SampleSummary",
    "ShapeSection",
    "Summary",
    "VoxelSpectrum",
    "as_comparison",
    "as_result",
    "load_result",
    "number",
]

FORMAT = "fastsim-benchmark"
#: the version :meth:`BenchmarkResult.to_json` writes
FORMAT_VERSION = 3
#: the versions :meth:`BenchmarkResult.from_json` reads
READABLE_VERSIONS = (1, 2, 3)

#: the classifier inputs, in report order (JSON keys of :class:`ClassifierSection`)
CLASSIFIER_KINDS = ("low_level", "low_level_normed", "high_level")


def number(x: Any) -> float:
    """A number of the result as float: None (JSON null, or not computed) -> NaN."""
    return math.nan if x is None else float(x)


class _Flat:
    """A dataclass of plain JSON values: every field is one key of the same name (``json_names``
    renames the few that are Python keywords); missing keys read as the field's default."""

    json_names: ClassVar[dict[str, str]] = {}
    #: fields holding another ``_Flat`` (or None), by name -> its class
    nested: ClassVar[dict[str, type]] = {}

    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in self.nested and value is not None:
                value = value.to_json()
            out[self.json_names.get(f.name, f.name)] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Any:
        names = {f.name: cls.json_names.get(f.name, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kw = {name: data[key] for name, key in names.items() if key in data}
        for name, kind in cls.nested.items():
            if isinstance(kw.get(name), dict):
                kw[name] = kind.from_json(kw[name])
        return cls(**kw)


# ----------------------------------------------------------------------------------- comparisons
@dataclass
class Comparison(_Flat):
    """Generated vs reference histograms of one feature (one energy, one layer, or all showers).

    Attributes:
        separation_power: ½ Σ (p−q)²/(p+q) of the normalised histograms (0 identical, 1 disjoint);
            NaN where not defined.
        edges: bin edges, (B + 1,), in the feature's unit.
        hist_generated, hist_reference: normalised bin contents, (B,).
        separation_power_unc: its bootstrap uncertainty (None for official binnings).
        separation_power_floor: what two samples of one distribution give at these sizes.
        chi2, ndf, chi2_ndf: χ² of the two histograms in the FastCaloGAN binning.
        wasserstein: 1-D Wasserstein distance, in the feature's unit.
        mean_ratio, mean_ratio_unc, width_ratio, width_ratio_unc: generated/reference ratios of
            the mean and of the standard deviation.
        n_generated, n_reference: values compared.
        n_generated_inside, n_reference_inside: values inside the official binning's range.
        layer: the layer id (official per-layer features only).
    """

    separation_power: float | None = None
    edges: list[float] = field(default_factory=list)
    hist_generated: list[float] = field(default_factory=list)
    hist_reference: list[float] = field(default_factory=list)
    separation_power_unc: float | None = None
    separation_power_floor: float | None = None
    chi2: float | None = None
    ndf: int | None = None
    chi2_ndf: float | None = None
    wasserstein: float | None = None
    mean_ratio: float | None = None
    mean_ratio_unc: float | None = None
    width_ratio: float | None = None
    width_ratio_unc: float | None = None
    n_generated: int | None = None
    n_reference: int | None = None
    n_generated_inside: int | None = None
    n_reference_inside: int | None = None
    layer: int | None = None


def _comparison(data: dict[str, Any] | Comparison | None) -> Comparison | None:
    if data is None or isinstance(data, Comparison):
        return data
    return Comparison.from_json(data)


# ----------------------------------------------------------------------------------- per energy
@dataclass
class SampleSummary(_Flat):
    """E_tot/E_inc of one sample at one incident energy (:func:`fastsim.metrics.response.summarize`).

    Attributes:
        n: showers; mean, mean_unc: the response and its uncertainty; std: the standard
        deviation; resolution, resolution_unc: σ/μ and its uncertainty; median.
    """

    n: int = 0
    mean: float | None = None
    mean_unc: float | None = None
    std: float | None = None
    resolution: float | None = None
    resolution_unc: float | None = None
    median: float | None = None


@dataclass
class EnergyRow(_Flat):
    """The agreement at one incident energy (a discrete value or a bin of the spectrum).

    Attributes:
        key: stable key (``"1024"``, or ``"lo-hi"`` in MeV); label: for humans (``"1.024 GeV"``);
        energy: the group's energy in MeV.
        generated, reference: E_tot/E_inc of each sample.
        response_ratio, resolution_ratio: generated/reference ratios of the mean and of σ/μ,
            with their uncertainties ``*_unc``.
        e_ratio: the E_tot/E_inc histograms (None when a sample has no shower here).
        pass_response, pass_resolution, pass_separation: inside the tolerance.
        status_response, status_resolution: ``"pass"``, ``"fail"`` or ``"not significant"``
            (outside the band by less than 2 σ).
    """

    key: str
    label: str
    energy: float
    generated: SampleSummary
    reference: SampleSummary
    response_ratio: float | None = None
    response_ratio_unc: float | None = None
    resolution_ratio: float | None = None
    resolution_ratio_unc: float | None = None
    e_ratio: Comparison | None = None
    pass_response: bool = False
    pass_resolution: bool = False
    status_response: str = "fail"
    status_resolution: str = "fail"
    pass_separation: bool = False

    nested: ClassVar[dict[str, type]] = {"generated": SampleSummary, "reference": SampleSummary,
                                         "e_ratio": Comparison}  # fmt: skip


# ----------------------------------------------------------------------------------- layers, shapes
@dataclass
class AngleRow(_Flat):
    """The agreement at one incident energy × incidence angle (both samples carry the angle).

    Attributes:
        key: ``"<energy key>@<angle key>"`` (``"1024@20"``); label: ``"1.024 GeV, 20°"``;
        energy_key, angle_key: the keys of the energy group and of the angle group;
        energy: MeV; angle: degrees (the group's value, or a bin's centre).
        generated, reference: E_tot/E_inc of each sample in the cell.
        response_ratio, resolution_ratio: generated/reference ratios, with ``*_unc``.
    """

    key: str
    label: str
    energy_key: str
    angle_key: str
    energy: float
    angle: float
    generated: SampleSummary
    reference: SampleSummary
    response_ratio: float | None = None
    response_ratio_unc: float | None = None
    resolution_ratio: float | None = None
    resolution_ratio_unc: float | None = None

    nested: ClassVar[dict[str, type]] = {"generated": SampleSummary, "reference": SampleSummary}


@dataclass
class LayerSection:
    """Layer energies.

    Attributes:
        ids: the layer ids, (L,).
        per_energy: per quantity of :func:`fastsim.metrics.response.layer_response` (``frac_inc``
            etc.), ``{"generated": (G, L), "reference": (G, L)}`` nested lists.
        distributions: E_layer/E_inc over all energies, one :class:`Comparison` per layer.
    """

    ids: list[int]
    per_energy: dict[str, dict[str, list[list[float]]]]
    distributions: list[Comparison]

    def to_json(self) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "per_energy": self.per_energy,
            "distributions": [d.to_json() for d in self.distributions],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerSection:
        return cls(
            list(data["ids"]), dict(data["per_energy"]), [_comparison(d) for d in data["distributions"]]
        )  # type: ignore[misc]


@dataclass
class ShapeSection:
    """One per-layer shape feature (centre, width, sparsity): its unit and a comparison per layer."""

    unit: str
    layers: list[Comparison]

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "layers": [c.to_json() for c in self.layers]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShapeSection:
        return cls(data.get("unit", ""), [_comparison(d) for d in data["layers"]])  # type: ignore[misc]


@dataclass
class VoxelSpectrum(_Flat):
    """Voxel-energy spectra of both samples (counts of hit voxels per bin, MeV edges), the voxels
    below the first and above the last edge, and the separation power of the two spectra."""

    edges_mev: list[float] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    reference: list[int] = field(default_factory=list)
    generated_below: int = 0
    reference_below: int = 0
    generated_above: int = 0
    reference_above: int = 0
    separation_power: float | None = None


# ----------------------------------------------------------------------------------- classifier
@dataclass
class ClassifierResult(_Flat):
    """One classifier test (:func:`fastsim.metrics.classifier.classifier_test`).

    Attributes:
        auc: ROC AUC on the test rows (0.5: indistinguishable), ``auc_unc`` its standard error,
            ``auc_raw`` before calibration; jsd: the Jensen–Shannon divergence estimate from the
            test BCE (``bce_test``); n_per_class, n_train, n_val, n_test: showers and rows;
            n_features: input columns; epochs, best_epoch; train_seconds; config: the settings.
    """

    auc: float | None = None
    auc_unc: float | None = None
    auc_raw: float | None = None
    jsd: float | None = None
    bce_test: float | None = None
    n_per_class: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    n_features: int | None = None
    epochs: int | None = None
    best_epoch: int | None = None
    train_seconds: float | None = None
    config: dict[str, Any] | None = None


@dataclass
class ClassifierSection:
    """The classifier tests of a run.

    Attributes:
        run: whether they ran (``--no-classifier``: False, and nothing else is written).
        protocol: the benchmark protocol; settings: the classifier configuration; inputs: the
            inputs asked for (``low``, ``normed``, ``high``).
        low_level, low_level_normed, high_level: each test's result (None: not run).
        n_per_class: showers per class of each test run.
    """

    run: bool = False
    protocol: str | None = None
    settings: dict[str, Any] | None = None
    inputs: list[str] = field(default_factory=list)
    low_level: ClassifierResult | None = None
    low_level_normed: ClassifierResult | None = None
    high_level: ClassifierResult | None = None
    n_per_class: dict[str, int] = field(default_factory=dict)

    def results(self) -> dict[str, ClassifierResult]:
        """The tests that ran, kind -> result, in report order."""
        return {k: r for k in CLASSIFIER_KINDS if (r := getattr(self, k)) is not None}

    def to_json(self) -> dict[str, Any]:
        if not self.run:
            return {"run": False}
        out: dict[str, Any] = {
            "run": True,
            "protocol": self.protocol,
            "settings": self.settings,
            "inputs": self.inputs,
        }
        out.update({k: r.to_json() for k, r in self.results().items()})
        out["n_per_class"] = self.n_per_class
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ClassifierSection:
        data = data or {}
        tests = {
            k: ClassifierResult.from_json(data[k]) for k in CLASSIFIER_KINDS if isinstance(data.get(k), dict)
        }
        # version 1 has no "run" key: it ran when a result is there
        run = bool(data.get("run", bool(tests)))
        return cls(run, data.get("protocol"), data.get("settings"), list(data.get("inputs") or []),
                   n_per_class=dict(data.get("n_per_class") or {}), **tests)  # fmt: skip


# ----------------------------------------------------------------------------------- official section
@dataclass
class OfficialSection:
    """The CaloChallenge evaluation's numbers (protocol ``calochallenge`` only).

    Attributes:
        dataset: the CaloChallenge dataset whose rules apply (None: not a CaloChallenge geometry).
        threshold_mev: the readout threshold.
        high_level_columns: the columns of the high-level vector.
        e_ratio: E_tot/E_inc of all showers in the official binning.
        features: feature -> one :class:`Comparison` per layer (``layer`` set).
        voxel: the voxel-energy spectrum's separation power and edges (None: not collected).
        fpd, kpd: ``{"value", "unc", "n_reference", "n_generated", ...settings}`` (FPD also its
            finite-sample ``floor`` and ``floor_unc``).
        fpd_kpd_seconds: their cost.
    """

    dataset: str | None
    threshold_mev: float
    high_level_columns: list[str]
    e_ratio: Comparison
    features: dict[str, list[Comparison]]
    voxel: dict[str, Any] | None
    fpd: dict[str, Any]
    kpd: dict[str, Any]
    fpd_kpd_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["e_ratio"] = self.e_ratio.to_json()
        out["features"] = {k: [c.to_json() for c in rows] for k, rows in self.features.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> OfficialSection | None:
        if data is None:
            return None
        return cls(
            data.get("dataset"), float(data.get("threshold_mev") or 0.0), list(data.get("high_level_columns") or []),
            _comparison(data["e_ratio"]),  # type: ignore[arg-type]
            {k: [_comparison(c) for c in rows] for k, rows in data["features"].items()},  # type: ignore[misc]
            data.get("voxel"), dict(data["fpd"]), dict(data["kpd"]), data.get("fpd_kpd_seconds"),
        )  # fmt: skip


# ----------------------------------------------------------------------------------- checks
@dataclass
class Check(_Flat):
    """One tolerance check: its name, the measured value and uncertainty, the target (text) and
    whether it passed (JSON key ``pass``)."""

    json_names: ClassVar[dict[str, str]] = {"passed": "pass"}

    name: str = ""
    value: float | None = None
    unc: float | None = None
    target: str = ""
    passed: bool = False


@dataclass
class Summary:
    """The verdict.

    Attributes:
        passed: every check passed (JSON ``pass``); n_checks, n_failed: counts;
        n_failed_not_significant: failed response/resolution checks within 2 σ of the band;
        mean_separation_power_e_ratio: mean over energies of E_tot/E_inc's separation power,
        mean_separation_power_floor: its finite-sample floor; checks: each check.
    """

    passed: bool
    n_checks: int
    n_failed: int
    n_failed_not_significant: int = 0
    mean_separation_power_e_ratio: float | None = None
    mean_separation_power_floor: float | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def n_passed(self) -> int:
        return self.n_checks - self.n_failed

    def to_json(self) -> dict[str, Any]:
        return {
            "pass": self.passed,
            "n_checks": self.n_checks,
            "n_failed": self.n_failed,
            "n_failed_not_significant": self.n_failed_not_significant,
            "mean_separation_power_e_ratio": self.mean_separation_power_e_ratio,
            "mean_separation_power_floor": self.mean_separation_power_floor,
            "checks": [c.to_json() for c in self.checks],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        return cls(
            bool(data["pass"]), int(data["n_checks"]), int(data["n_failed"]), int(data.get("n_failed_not_significant") or 0),
            data.get("mean_separation_power_e_ratio"), data.get("mean_separation_power_floor"),
            [Check.from_json(c) for c in data.get("checks") or []],
        )  # fmt: skip


# ----------------------------------------------------------------------------------- the whole result
@dataclass
class BenchmarkResult:
    """Everything a benchmark run found; ``metrics.json`` is :meth:`to_json`.

    Attributes:
        protocol: ``"calochallenge"`` or ``"quick"``.
        energy_groups: :meth:`fastsim.metrics.response.EnergyGroups.to_dict` of the groups.
        per_energy: one :class:`EnergyRow` per group (JSON: ``response.per_energy``).
        layers, shapes, voxel_spectrum, classifier: the comparisons.
        calochallenge: the official section (None under ``"quick"``).
        summary: the checks and the verdict.
        format_version, fastsim_version, created_utc, seed, threshold (``{"mev", "source"}``),
        inputs (per sample: path, showers, attributes; the energy check), geometry (its dict and
        ``n_voxels``), tolerances (the :class:`~fastsim.report.tolerances.Tolerances` as a dict),
        timing (time per shower of both samples, None without timing attributes), run_seconds,
        files (the PNGs and the mean-image file written): the run's context.
        per_energy_angle: one :class:`AngleRow` per energy × angle when both samples carry the
            incidence angle, else None (JSON: ``response.per_energy_angle``); angle_groups:
            :meth:`fastsim.metrics.response.AngleGroups.to_dict` with the angles only one sample
            has (``generated_only_deg``, ``reference_only_deg``), or None.
    """

    protocol: str
    energy_groups: dict[str, Any]
    per_energy: list[EnergyRow]
    layers: LayerSection
    shapes: dict[str, ShapeSection]
    voxel_spectrum: VoxelSpectrum
    classifier: ClassifierSection
    calochallenge: OfficialSection | None
    summary: Summary
    format_version: int = FORMAT_VERSION
    fastsim_version: str = ""
    created_utc: str = ""
    seed: int = 0
    threshold: dict[str, Any] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    geometry: dict[str, Any] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)
    timing: dict[str, Any] | None = None
    run_seconds: float | None = None
    files: dict[str, Any] | None = None
    per_energy_angle: list[AngleRow] | None = None
    angle_groups: dict[str, Any] | None = None

    def row(self, key: str) -> EnergyRow:
        """The row of the energy group ``key`` (``"1024"``, ``"1000-3162"``)."""
        for r in self.per_energy:
            if r.key == key:
                return r
        raise KeyError(key)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (NaN still as float: :func:`fastsim.outputs.write_json` writes null)."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fastsim_version": self.fastsim_version,
            "created_utc": self.created_utc,
            "seed": self.seed,
            "protocol": self.protocol,
            "threshold": self.threshold,
            "inputs": self.inputs,
            "geometry": self.geometry,
            "tolerances": self.tolerances,
            "energy_groups": self.energy_groups,
            "response": {
                "per_energy": [r.to_json() for r in self.per_energy],
                "per_energy_angle": None if self.per_energy_angle is None else [r.to_json() for r in self.per_energy_angle],
                "angle_groups": self.angle_groups,
            },
            "layers": self.layers.to_json(),
            "shapes": {k: s.to_json() for k, s in self.shapes.items()},
            "voxel_spectrum": self.voxel_spectrum.to_json(),
            "classifier": self.classifier.to_json(),
            "calochallenge": None if self.calochallenge is None else self.calochallenge.to_json(),
            "summary": self.summary.to_json(),
            "timing": self.timing,
            "run_seconds": self.run_seconds,
        }
        if self.files is not None:
            out["files"] = self.files
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "metrics.json") -> BenchmarkResult:
        """Read a ``metrics.json`` dict of any version in :data:`READABLE_VERSIONS`.

        Raises:
            InputFileError: naming ``source``: not a fastsim benchmark result, a version this
                fastsim does not read, or a required key missing.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputFileError(source, f'not a fastsim benchmark result (no "format": "{FORMAT}")')
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise InputFileError(
                source,
                f"metrics.json format_version {version!r} is not one this fastsim reads "
                f"({', '.join(map(str, READABLE_VERSIONS))}); rerun fastsim benchmark, or use the fastsim that wrote it",
            )
        try:
            return cls(
                protocol=data.get("protocol", "quick"),  # version 1: fastsim's own protocol
                energy_groups=dict(data["energy_groups"]),
                per_energy=[EnergyRow.from_json(r) for r in data["response"]["per_energy"]],
                layers=LayerSection.from_json(data["layers"]),
                shapes={k: ShapeSection.from_json(v) for k, v in data["shapes"].items()},
                voxel_spectrum=VoxelSpectrum.from_json(data["voxel_spectrum"]),
                classifier=ClassifierSection.from_json(data.get("classifier")),
                calochallenge=OfficialSection.from_json(data.get("calochallenge")),
                summary=Summary.from_json(data["summary"]),
                format_version=int(version),
                fastsim_version=str(data.get("fastsim_version", "")),
                created_utc=str(data.get("created_utc", "")),
                seed=int(data.get("seed") or 0),
                threshold=data.get("threshold"),
                inputs=dict(data.get("inputs") or {}),
                geometry=dict(data.get("geometry") or {}),
                tolerances=dict(data.get("tolerances") or {}),
                timing=data.get("timing"),
                run_seconds=data.get("run_seconds"),
                files=data.get("files"),
                per_energy_angle=None if data["response"].get("per_energy_angle") is None else [
                    AngleRow.from_json(r) for r in data["response"]["per_energy_angle"]
                ],
                angle_groups=data["response"].get("angle_groups"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InputFileError(
                source, f"metrics.json (format_version {version}) lacks or garbles {err}"
            ) from None


def load_result(path: str | os.PathLike) -> BenchmarkResult:
    """Read a ``metrics.json`` written by ``fastsim benchmark``.

    Raises:
        InputFileError: the file is missing, not JSON, or not a readable benchmark result.
    """
    path = os.fspath(path)
    return BenchmarkResult.from_json(read_json(path, "metrics.json"), source=path)


def as_result(results: BenchmarkResult | dict[str, Any]) -> BenchmarkResult:
    """``results`` as a :class:`BenchmarkResult` (a ``metrics.json`` dict is read)."""
    return results if isinstance(results, BenchmarkResult) else BenchmarkResult.from_json(results)


def as_comparison(comp: Comparison | dict[str, Any] | None) -> Comparison | None:
    """``comp`` as a :class:`Comparison` (a JSON dict is read; None stays None)."""
    return _comparison(comp)

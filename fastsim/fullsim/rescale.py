"""``fastsim em-scale``: put a Geant4 file written on the active-material scale on the EM scale (or back).

    fastsim em-scale g4_active.h5 -o g4_em.h5                 # detector read from the file
    fastsim em-scale g4_em.h5 -o g4_active.h5 --to active     # undo, with the file's own factors
    fastsim em-scale other.h5 -o other_em.h5 --fractions 1,0.25,0.25,0.25,0.05

Every voxel of layer ``l`` is multiplied by the constant ``1 / f_l`` (``f_l``: the layer's sampling
fraction, :mod:`fastsim.fullsim.calibration`), so the conversion is exact and reversible. The
fractions are the stored calibration of the file's detector (its ``detector`` attribute, written by
``fastsim simulate``), or ``--fractions``. The output keeps every attribute of the input, says its
scale (``energy_scale``, ``sampling_fractions``, ``em_scale_factors``) and records the conversion.
The output is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from fastsim.errors import FastsimError, InputFileError
from fastsim.fullsim.calibration import (
    SCALE_ACTIVE,
    SCALE_EM,
    SCALES,
    UNITS,
    file_scale,
    scale_attributes,
    stored_calibration,
    voxel_factors,
)
from fastsim.geometry import Geometry

#: Attributes whose values are on the file's energy scale and would be wrong after a conversion.
_SCALE_DEPENDENT = ("response_mean", "response_by_energy")


def _input_scale(attrs: dict[str, Any], path: str, assume: str | None) -> str:
    scale = file_scale(attrs)
    if scale is not None:
        return scale
    if assume is not None:
        return assume
    if "active material" in str(attrs.get("units", "")):
        return SCALE_ACTIVE  # written by fastsim simulate before files said their scale
    raise InputFileError(path, "does not say its energy scale (no 'energy_scale' attribute); pass --from active or --from em")


def _detector_name(attrs: dict[str, Any]) -> str | None:
    det = attrs.get("detector")
    if isinstance(det, str):
        try:
            det = json.loads(det)
        except ValueError:
            return None
    return det.get("name") if isinstance(det, dict) else None


def resolve_fractions(attrs: dict[str, Any], path: str, scale: str, fractions: list[float] | None) -> tuple[np.ndarray, str]:
    """The sampling fractions to convert with, and where they come from."""
    if fractions is not None:
        return np.asarray(fractions, dtype=np.float64), "given with --fractions"
    if scale == SCALE_EM and "sampling_fractions" in attrs:
        stored = attrs["sampling_fractions"]
        return np.asarray(json.loads(stored) if isinstance(stored, str) else stored, dtype=np.float64), "the file's own sampling_fractions"
    name = _detector_name(attrs)
    cal = stored_calibration(name) if name else None
    if cal is None:
        raise InputFileError(
            path, f"no stored sampling fractions for its detector {name!r}; pass --fractions f0,f1,… (one per layer)"
        )
    return np.asarray(cal.fractions, dtype=np.float64), f"stored calibration of {name}: {cal.source}"


def convert_energy_scale(
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    to: str = SCALE_EM,
    fractions: list[float] | None = None,
    assume: str | None = None,
    geometry: str | Geometry | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``output``: ``input_path``'s showers on the ``to`` scale (streamed, atomic).

    Args:
        input_path: a CaloChallenge file written by ``fastsim simulate`` (or any file with its
            fractions given).
        output: the file to write.
        to: ``"em"`` or ``"active"``.
        fractions: (L,) sampling fractions; default: the file's own or its detector's stored ones.
        assume: the input's scale where its attributes do not say.
        geometry: the binning (default: the file's ``geometry`` attribute, else the built-in with its voxel count).
        overwrite: replace an existing output.

    Returns:
        the scale attributes written.
    """
    from fastsim.data.hdf5 import ShowerWriter, open_calochallenge

    path = os.fspath(input_path)
    if to not in SCALES:
        raise FastsimError(f"--to must be em or active, got {to!r}")
    with open_calochallenge(path) as cf:
        attrs = dict(cf.attrs)
        scale = _input_scale(attrs, path, assume)
        if scale == to:
            raise InputFileError(path, f"is already on the {to} energy scale")
        geo = _geometry(attrs, cf.n_voxels, geometry, path)
        f, source = resolve_fractions(attrs, path, scale, fractions)
        mult = voxel_factors(geo, 1.0 / f if to == SCALE_EM else f)  # checks L and positivity
        if np.any(f > 1):
            raise FastsimError(f"sampling fractions must be in (0, 1], got {f.tolist()}")
        new = {k: v for k, v in attrs.items() if k not in _SCALE_DEPENDENT and not k.startswith(("sampling_fraction", "em_scale"))}
        new.update(scale_attributes(to, f, source))
        new["converted_from"] = f"{os.path.abspath(path)} ({scale} scale)"
        if "units" in new:
            new["units"] = UNITS[to]
        new = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in new.items()}
        sums: dict[float, list[float]] = {}
        with ShowerWriter(output, cf.n_voxels, attrs=new, overwrite=overwrite) as w:
            for e, s in cf.iter_chunks():
                out = s * mult
                w.append(e, out)
                r = out.sum(axis=1, dtype=np.float64) / e
                for val in np.unique(e):
                    acc = sums.setdefault(float(val), [0.0, 0])
                    acc[0] += float(r[e == val].sum())
                    acc[1] += int((e == val).sum())
            n = sum(c for _, c in sums.values())
            resp = {"response_mean": sum(t for t, _ in sums.values()) / max(n, 1)}
            if "response_by_energy" in attrs:  # the input had discrete energies: keep the table, rescaled
                resp["response_by_energy"] = json.dumps({f"{k:g}": t / c for k, (t, c) in sorted(sums.items())})
            w.set_attrs(**resp)
    new.update(resp)
    return new


def _geometry(attrs: dict[str, Any], n_voxels: int, geometry: str | Geometry | None, path: str) -> Geometry:
    from fastsim.geometry import BUILTIN

    if geometry is not None:
        geo = Geometry.resolve(geometry)
    elif attrs.get("geometry"):
        try:
            geo = Geometry.resolve(str(attrs["geometry"]))
        except (FastsimError, ValueError, KeyError, TypeError) as err:
            raise InputFileError(path, f"unreadable 'geometry' attribute ({err})") from None
    else:
        matches = [name for name in BUILTIN if Geometry.builtin(name).n_voxels == n_voxels]
        if len(matches) != 1:
            raise InputFileError(path, "has no 'geometry' attribute; pass --geometry")
        geo = Geometry.builtin(matches[0])
    if geo.n_voxels != n_voxels:
        raise InputFileError(path, f"holds {n_voxels} voxels per shower but geometry {geo.name!r} has {geo.n_voxels}")
    return geo


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FastsimError(f"--fractions: expected numbers separated by commas, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastsim em-scale",
        description="Convert a Geant4 CaloChallenge file between the active-material and the EM energy scale "
        "(each layer's voxels divided, or multiplied, by the layer's sampling fraction).",
    )
    p.add_argument("input", help="CaloChallenge HDF5 file (from fastsim simulate)")
    p.add_argument("-o", "--output", required=True, help="file to write")
    p.add_argument("--to", default="em", choices=["em", "active"], help="target scale (default em)")
    p.add_argument("--from", dest="assume", default=None, choices=["em", "active"],
                   help="the input's scale, where its attributes do not say")
    p.add_argument("--fractions", default=None, help="comma-separated sampling fractions, one per layer "
                   "(default: the file's own, else its detector's stored calibration)")
    p.add_argument("--geometry", default=None, help="binning (default: the file's 'geometry' attribute)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def main(argv: list[str]) -> int:
    """Entry point; ``argv[0]`` is the command name."""
    args = build_parser().parse_args(argv[1:])
    from fastsim.outputs import check_output_file

    check_output_file(args.output, args.overwrite)  # before reading anything
    fr = _floats(args.fractions) if args.fractions is not None else None
    out = convert_energy_scale(args.input, args.output, to=args.to, fractions=fr, assume=args.assume,
                               geometry=args.geometry, overwrite=args.overwrite)
    shown = out.get("sampling_fractions", "")
    print(f"wrote {args.output} on the {args.to} energy scale" + (f" (sampling fractions {shown})" if shown else ""))
    return 0

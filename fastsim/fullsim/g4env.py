"""Importing geant4-pybind offline, and finding out which Geant4 data sets are really there.

On import, geant4-pybind 0.1.3 runs an embedded script that checks the twelve data-set variables
(``G4LEDATA``, ``G4ENSDFSTATEDATA``, …) and, when one is missing, asks on stdin to download them
(or downloads without asking when ``CI=true``). Offline both end in ``ImportError``. The script is
skipped when ``GEANT4_DATA_DIR`` is set, so :func:`import_geant4` sets it (to a cache directory)
before the first import. Geant4 then resolves every data set as ``$GEANT4_DATA_DIR/<Name><Version>``
unless its own variable is set.

An electromagnetic-only application still reads ``$G4ENSDFSTATEDATA/ENSDFSTATE.dat`` when the
particle table is built (the ion table's nuclide list) and wants a ``$G4LEVELGAMMADATA`` directory;
for e/γ showers an empty file and an empty directory are enough, and this module creates them
(plus an empty ``$G4LEDATA`` directory, which only silences a warning of G4EmParameters).
Everything else (G4EMLOW for the stock EM constructors, cross sections for hadronic lists) cannot
be faked: :func:`available_datasets` reports what is really present so the caller can choose the
physics list or refuse a request honestly.

Reference: /work/shared/notes/geant4-offline.md (measurements on this machine kind).
"""

from __future__ import annotations

import os
from types import ModuleType

#: Data-set variable -> directory-name prefix under GEANT4_DATA_DIR (Geant4 11.4).
DATASET_PREFIXES: dict[str, str] = {
    "G4LEDATA": "G4EMLOW",
    "G4ENSDFSTATEDATA": "G4ENSDFSTATE",
    "G4LEVELGAMMADATA": "PhotonEvaporation",
    "G4RADIOACTIVEDATA": "RadioactiveDecay",
    "G4PARTICLEXSDATA": "G4PARTICLEXS",
    "G4NEUTRONHPDATA": "G4NDL",
    "G4PIIDATA": "G4PII",
    "G4REALSURFACEDATA": "RealSurface",
    "G4SAIDXSDATA": "G4SAIDDATA",
    "G4ABLADATA": "G4ABLA",
    "G4INCLDATA": "G4INCL",
    "G4CHANNELINGDATA": "G4CHANNELING",
}

#: Data sets the stock electromagnetic constructor (G4EmStandardPhysics) reads.
STOCK_EM_NEEDS: tuple[str, ...] = ("G4LEDATA", "G4ENSDFSTATEDATA", "G4LEVELGAMMADATA")
#: Data sets a hadronic list (FTFP_BERT) reads on top of the EM ones.
HADRONIC_NEEDS: tuple[str, ...] = (*STOCK_EM_NEEDS, "G4PARTICLEXSDATA", "G4SAIDXSDATA")

#: Names the fake (empty) data sets get in the cache; versions as Geant4 11.4.p01 expects them.
_FAKE_ENSDF = "G4ENSDFSTATE3.0"
_FAKE_LEVELGAMMA = "PhotonEvaporation6.1.2"
_FAKE_EMLOW = "G4EMLOW-empty"
#: Marker file telling that a directory holds fakes made here, never real data.
_FAKE_MARK = "FASTSIM_EMPTY_PLACEHOLDER"


def default_cache_dir() -> str:
    """``$FASTSIM_CACHE`` or ``$XDG_CACHE_HOME/fastsim`` (``~/.cache/fastsim``)."""
    base = os.environ.get("FASTSIM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fastsim"
    )
    return base


def _is_fake(path: str) -> bool:
    return os.path.exists(os.path.join(path, _FAKE_MARK))


def _real_dir(path: str | None) -> bool:
    return bool(path) and os.path.isdir(path) and not _is_fake(path)


def available_datasets(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The real Geant4 data sets visible through the environment.

    A data set counts as present when its variable names an existing directory, or when
    ``GEANT4_DATA_DIR`` holds a directory starting with its name (``G4EMLOW8.8``). The empty
    placeholders made by :func:`prepare_environment` never count.

    Returns:
        variable name -> directory, for the data sets found.
    """
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    base = env.get("GEANT4_DATA_DIR", "")
    entries = sorted(os.listdir(base)) if base and os.path.isdir(base) else []
    for var, prefix in DATASET_PREFIXES.items():
        if _real_dir(env.get(var)):
            found[var] = env[var]
            continue
        for name in entries:
            full = os.path.join(base, name)
            if name.startswith(prefix) and _real_dir(full):
                found[var] = full
                break
    return found


def missing_datasets(needs: tuple[str, ...], environ: dict[str, str] | None = None) -> list[str]:
    """The variables of ``needs`` whose data set is not present (see :func:`available_datasets`)."""
    have = available_datasets(environ)
    return [v for v in needs if v not in have]


def prepare_environment(cache_dir: str | None = None) -> dict[str, str]:
    """Set the variables that let ``import geant4_pybind`` work offline; create the placeholders.

    Only variables that are unset (or point nowhere) are set, so a user's real data sets win.

    Args:
        cache_dir: where the placeholder data directory goes (default :func:`default_cache_dir`).

    Returns:
        the variables this call set, name -> value.
    """
    root = os.path.join(cache_dir or default_cache_dir(), "geant4-data")
    changed: dict[str, str] = {}
    if not os.environ.get("GEANT4_DATA_DIR"):
        os.makedirs(root, exist_ok=True)
        os.environ["GEANT4_DATA_DIR"] = root
        changed["GEANT4_DATA_DIR"] = root
    have = available_datasets()
    for var, name, files in (
        ("G4ENSDFSTATEDATA", _FAKE_ENSDF, ("ENSDFSTATE.dat",)),
        ("G4LEVELGAMMADATA", _FAKE_LEVELGAMMA, ()),
        # only so that G4EmParameters does not warn about a missing directory; a process that
        # really needed G4EMLOW files would still stop with Geant4's "file not found" error
        ("G4LEDATA", _FAKE_EMLOW, ()),
    ):
        if var in have:
            continue
        path = os.path.join(root, name)
        os.makedirs(path, exist_ok=True)
        for fname in (*files, _FAKE_MARK):
            fpath = os.path.join(path, fname)
            if not os.path.exists(fpath):
                from fastsim.outputs import write_text

                write_text(fpath, "")  # atomic: concurrent workers never see half a file
        os.environ[var] = path
        changed[var] = path
    return changed


def import_geant4(cache_dir: str | None = None) -> ModuleType:
    """``import geant4_pybind`` after :func:`prepare_environment`; a clear error if it is missing."""
    from fastsim.errors import FastsimError

    prepare_environment(cache_dir)
    try:
        import geant4_pybind
    except ImportError as err:
        raise FastsimError(
            f"Geant4 is not available ({err}); install the optional extra: pip install 'fastsim[g4]'"
        ) from None
    return geant4_pybind


def geant4_version(g4: ModuleType) -> str:
    """The Geant4 version, e.g. ``"geant4-11-04-patch-01 [MT] (11.4.1)"``."""
    num = int(getattr(g4, "G4VERSION_NUMBER", 0))
    name = str(getattr(g4, "G4Version", "")).replace("$Name:", "").strip(" $")
    return f"{name} ({num // 100}.{(num // 10) % 10}.{num % 10})" if name else f"Geant4 {num}"

"""Physics lists: Geant4's stock EM constructor where its data exist, a data-free EM list otherwise.

The stock electromagnetic constructors (``G4EmStandardPhysics`` and its options) read G4EMLOW
tables at the first event (Seltzer-Berger bremsstrahlung, Livermore photo-effect and Rayleigh), and
those cannot be had offline. The Python bindings expose only whole constructors, not single
processes, but the extension module exports Geant4's C++ symbols, so :class:`DataFreeEmPhysics`
builds the standard processes with ``ctypes``: it allocates each object with the C++ ``operator
new``, runs its real constructor and registers it through
``G4PhysicsListHelper::GetPhysicsListHelper()->RegisterProcess(process, particle)``. Geant4 owns
(and deletes) the objects afterwards, exactly as if C++ code had made them.

In Geant4 11.4 the defaults of these processes need no data files — Sandia-parameterised
photo-effect, Klein-Nishina Compton, pair production (Bethe-Heitler below 80 GeV, the relativistic
model with LPM above), Urban multiple
scattering, Møller-Bhabha ionisation, Heitler annihilation — except bremsstrahlung, whose default
Seltzer-Berger model below 1 GeV reads ``brem_SB`` tables; it is replaced by
``G4eBremsstrahlungRelModel`` at all energies. Left out compared with ``G4EmStandardPhysics``:
Rayleigh scattering (needs Livermore data), and the Wentzel-VI/single-scattering combination
above 100 MeV (Urban msc is used at all energies). Measured effect (geant4-offline note): shower
depth and response within 1-2 standard errors of the stock list at 10-50 GeV.

No object here is touched at import: the module imports geant4-pybind only inside functions.
"""

from __future__ import annotations

import ctypes
from typing import Any

from fastsim.errors import FastsimError

#: Name recorded in output files for the data-free list.
DATAFREE_NAME = (
    "fastsim-datafree-em: G4PhotoElectricEffect(Sandia)+G4ComptonScattering(Klein-Nishina)+"
    "G4GammaConversion(BetheHeitler/PairProductionRel) for gamma; G4eMultipleScattering(Urban)+"
    "G4eIonisation(MollerBhabha)+G4eBremsstrahlung(eBremsstrahlungRelModel at all energies) for e-/e+; "
    "G4eplusAnnihilation for e+; no Rayleigh; production cut {cut} mm; msc step limit UseSafety (default)"
)

# Bytes reserved for one process or model object. Their sizeof() is not exported; the largest
# here (G4VEnergyLossProcess subclasses) is about 1 kB in 11.4, so 16 kB leaves a wide margin.
# Geant4 deletes the objects with the C++ operator delete, which frees this allocation.
_OBJECT_BYTES = 16384

# Mangled symbols of the Geant4 11.4 functions used (geant4-pybind 0.1.3 exports them).
_SYMBOLS = {
    "phot": "_ZN21G4PhotoElectricEffectC1ERK8G4String13G4ProcessType",
    "compt": "_ZN19G4ComptonScatteringC1ERK8G4String13G4ProcessType",
    "conv": "_ZN17G4GammaConversionC1ERK8G4String13G4ProcessType",
    "msc": "_ZN21G4eMultipleScatteringC1ERK8G4String",
    "eIoni": "_ZN13G4eIonisationC1ERK8G4String",
    "eBrem": "_ZN17G4eBremsstrahlungC1ERK8G4String",
    "annihil": "_ZN19G4eplusAnnihilationC1ERK8G4String",
    "bremRel": "_ZN25G4eBremsstrahlungRelModelC1EPK20G4ParticleDefinitionRK8G4String",
    "setEmModel": "_ZN20G4VEnergyLossProcess10SetEmModelEP10G4VEmModeli",
    "helper": "_ZN19G4PhysicsListHelper20GetPhysicsListHelperEv",
    "register": "_ZN19G4PhysicsListHelper15RegisterProcessEP10G4VProcessP20G4ParticleDefinition",
    "gamma": "_ZN7G4Gamma5GammaEv",
    "electron": "_ZN10G4Electron8ElectronEv",
    "positron": "_ZN10G4Positron8PositronEv",
}

_F_ELECTROMAGNETIC = 2  # G4ProcessType::fElectromagnetic


class _Cxx:
    """The C++ entry points, resolved once per process from the loaded extension module."""

    def __init__(self, g4: Any) -> None:
        lib = ctypes.CDLL(g4.__file__)
        try:
            self.fn = {key: getattr(lib, sym) for key, sym in _SYMBOLS.items()}
        except AttributeError as err:
            raise FastsimError(
                f"geant4-pybind does not export a symbol the data-free EM list needs ({err}); "
                "it is built for geant4-pybind==0.1.3 (Geant4 11.4.p01)"
            ) from None
        libstdcxx = ctypes.CDLL("libstdc++.so.6")
        self.new = libstdcxx._Znwm
        self.new.restype = ctypes.c_void_p
        self.new.argtypes = [ctypes.c_size_t]
        vp = ctypes.c_void_p
        for key in ("gamma", "electron", "positron", "helper"):
            self.fn[key].restype = vp
            self.fn[key].argtypes = []
        for key in ("phot", "compt", "conv"):
            self.fn[key].restype = None
            self.fn[key].argtypes = [vp, vp, ctypes.c_int]
        for key in ("msc", "eIoni", "eBrem", "annihil"):
            self.fn[key].restype = None
            self.fn[key].argtypes = [vp, vp]
        self.fn["bremRel"].restype = None
        self.fn["bremRel"].argtypes = [vp, vp, vp]
        self.fn["setEmModel"].restype = None
        self.fn["setEmModel"].argtypes = [vp, vp, ctypes.c_int]
        self.fn["register"].restype = ctypes.c_bool
        self.fn["register"].argtypes = [vp, vp, vp]
        self._keep: list[Any] = []  # G4String buffers must outlive the constructor calls

    def string(self, text: str) -> int:
        """A libstdc++ ``std::string`` (= G4String) holding ``text``, as an address.

        Layout (x86-64 libstdc++ ABI, 32 bytes): data pointer, length, 16-byte inline buffer.
        Names up to 15 characters live in the inline buffer, so no heap memory is involved and
        the constructors (which copy the name) never free anything of ours.
        """
        raw = text.encode()
        if len(raw) > 15:
            raise ValueError(f"process name {text!r} too long for an inline std::string")
        buf = ctypes.create_string_buffer(32)
        addr = ctypes.addressof(buf)
        ctypes.c_void_p.from_address(addr).value = addr + 16
        ctypes.c_size_t.from_address(addr + 8).value = len(raw)
        ctypes.memmove(addr + 16, raw, len(raw))
        self._keep.append(buf)
        return addr

    def alloc(self) -> int:
        ptr = self.new(_OBJECT_BYTES)
        ctypes.memset(ptr, 0, _OBJECT_BYTES)
        return ptr


def make_datafree_em_constructor(g4: Any) -> Any:
    """A ``G4VPhysicsConstructor`` (Python subclass) building the data-free EM processes for γ, e⁻, e⁺."""

    class DataFreeEmPhysics(g4.G4VPhysicsConstructor):
        """Standard EM processes for γ, e⁻ and e⁺ that need no Geant4 data files (see module doc)."""

        def __init__(self) -> None:
            super().__init__("fastsim-datafree-em")

        def ConstructParticle(self) -> None:  # noqa: N802 - Geant4 interface
            g4.G4Gamma.GammaDefinition()
            g4.G4Electron.ElectronDefinition()
            g4.G4Positron.PositronDefinition()

        def ConstructProcess(self) -> None:  # noqa: N802 - Geant4 interface
            cx = _Cxx(g4)
            fn = cx.fn
            helper = fn["helper"]()
            gamma, electron, positron = fn["gamma"](), fn["electron"](), fn["positron"]()

            def register(proc: int, particle: int, what: str) -> None:
                if not fn["register"](helper, proc, particle):
                    raise FastsimError(f"Geant4 refused to register {what}")

            for key in ("phot", "compt", "conv"):
                proc = cx.alloc()
                fn[key](proc, cx.string(key), _F_ELECTROMAGNETIC)
                register(proc, gamma, key)
            for particle, pname in ((electron, "e-"), (positron, "e+")):
                for key in ("msc", "eIoni", "eBrem"):
                    proc = cx.alloc()
                    fn[key](proc, cx.string(key))
                    if key == "eBrem":
                        # replaces the Seltzer-Berger default, which reads brem_SB data below 1 GeV
                        model = cx.alloc()
                        fn["bremRel"](model, None, cx.string("eBremLPM"))
                        fn["setEmModel"](proc, model, 0)
                    register(proc, particle, f"{key} for {pname}")
            proc = cx.alloc()
            fn["annihil"](proc, cx.string("annihil"))
            register(proc, positron, "annihil")

    return DataFreeEmPhysics()


def make_physics_list(g4: Any, kind: str, cut_mm: float = 0.7) -> tuple[Any, str]:
    """Build the modular physics list.

    Args:
        g4: the imported geant4_pybind module.
        kind: ``"datafree"`` (EM without data files), ``"stock"`` (G4EmStandardPhysics) or
            ``"ftfp_bert"`` (the FTFP_BERT reference list, hadronic; needs all data sets).
        cut_mm: production cut in mm (Geant4's default is 0.7 mm).

    Multiple scattering keeps Geant4's default step limitation (UseSafety). The faster "Minimal"
    was measured here to lower the visible fraction of this Pb/LAr stack by ~9 % (0.244 -> 0.222
    at 16-64 GeV) while saving < 10 % of the time: thin active gaps need the boundary treatment.

    Returns:
        (physics list, description recorded in the output file's ``physics_list`` attribute)
    """
    if kind == "ftfp_bert":
        plist = g4.FTFP_BERT(0)
        desc = f"FTFP_BERT (Geant4 reference list); production cut {cut_mm} mm"
    else:
        plist = g4.G4VModularPhysicsList()
        if kind == "datafree":
            plist.RegisterPhysics(make_datafree_em_constructor(g4))
            desc = DATAFREE_NAME.format(cut=cut_mm)
        elif kind == "stock":
            plist.RegisterPhysics(g4.G4EmStandardPhysics(0))
            desc = f"G4EmStandardPhysics (stock, with G4EMLOW data); production cut {cut_mm} mm"
        else:
            raise FastsimError(f"unknown physics list {kind!r}; choose datafree, stock or ftfp_bert")
    plist.SetDefaultCutValue(cut_mm * g4.mm)
    plist.SetVerboseLevel(0)
    return plist, desc

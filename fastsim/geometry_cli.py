"""``fastsim geometry NAME_OR_XML``: print the layers and voxel counts of a geometry."""

from __future__ import annotations

import argparse

from fastsim.geometry import BUILTIN, Geometry


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fastsim geometry", description=__doc__)
    parser.add_argument("geometry", nargs="?", help=f"built-in name ({', '.join(BUILTIN)}) or XML file")
    parser.add_argument("--json", action="store_true", help="print the geometry as JSON")
    args = parser.parse_args(argv[1:])
    names = [args.geometry] if args.geometry else list(BUILTIN)
    for name in names:
        geo = Geometry.resolve(name)
        print(geo.to_json() if args.json else geo.describe())
    return 0

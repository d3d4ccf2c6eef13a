"""``fastsim config``: the configs that ship with fastsim.

    fastsim config                              # list them
    fastsim config wgan_gp                      # print one
    fastsim config model/wgan_gp trainer/cpu -o myconfigs/   # write copies to edit

``fastsim fit --config NAME`` uses a packaged config directly; a file path always wins over a name.
"""

from __future__ import annotations

import argparse
import os
import shutil

from fastsim.errors import InputFileError
from fastsim.outputs import atomic_output, check_output_dir
from fastsim.training.configs import config_dir, packaged_configs, resolve_config


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fastsim config", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="packaged configs (wgan_gp, model/vae, cpu, …)")
    parser.add_argument("-o", "--output", help="directory to write copies into, as <dir>/<group>/<name>.yaml")
    parser.add_argument("--overwrite", action="store_true", help="replace existing copies")
    args = parser.parse_args(argv[1:])
    configs = packaged_configs()
    if not args.names:
        if args.output:
            args.names = list(configs)
        else:
            print(f"packaged configs (in {config_dir()}):")
            for name in configs:
                print(f"  {name}")
            print("use one with: fastsim fit --config NAME ...; copy with: fastsim config NAME -o DIR")
            return 0
    sources = []
    for name in args.names:
        path = resolve_config(name)
        key = next((k for k, p in configs.items() if os.path.samefile(p, path)), None)
        if key is None:
            raise InputFileError(name, "not a packaged config (see `fastsim config`)")
        sources.append((key, path))
    if not args.output:
        for _, path in sources:
            with open(path, encoding="utf-8") as f:
                print(f.read(), end="")
        return 0
    out = args.output
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputFileError(out, "is a file, not a directory to write configs into")
    if not os.path.isdir(out):
        check_output_dir(out)  # its parent exists and is writable
    targets = [(src, os.path.join(out, *key.split("/")) + ".yaml") for key, src in sources]
    for _, target in targets:  # every target checked before the first is written
        if os.path.exists(target) and not args.overwrite:
            raise InputFileError(target, "already exists (pass --overwrite to replace it)")
    for src, target in targets:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with atomic_output(target) as tmp:  # an old copy is replaced only by a complete new one
            shutil.copyfile(src, tmp)
        print(target)
    return 0

"""log p(x) of held-out showers under a trained VAE, three ways, for K = 1, 10, 100, 1000.

    python scripts/vae_loglik.py --checkpoint outputs/demo/vae/checkpoints/best.ckpt \
        --showers outputs/demo/g4_heldout.h5 --n 300 --seed 0

Prints a Markdown table (nats per shower, mean over the showers ± standard error) of the ELBO,
importance sampling with the encoder's q(z|x) and plain Monte Carlo from the prior p(z)
(:mod:`fastsim.models.likelihood`). The showers are a seeded random subset of the file, mapped to
model space with the checkpoint's own transform.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--showers", required=True, help="CaloChallenge HDF5 (held-out Geant4 showers)")
    p.add_argument("--n", type=int, default=300, help="showers used (random subset)")
    p.add_argument("--ks", default="1,10,100,1000")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import torch

    from fastsim.data.hdf5 import read_calochallenge
    from fastsim.errors import FastsimError
    from fastsim.models.io import load_generator
    from fastsim.models.likelihood import log_likelihood_estimates

    try:
        model = load_generator(args.checkpoint)
        if not hasattr(model, "log_weights"):
            raise FastsimError(f"{args.checkpoint}: {type(model).__name__} has no likelihood (a VAE is needed)")
        e, s = read_calochallenge(args.showers)
    except FastsimError as err:
        print(f"vae_loglik: error: {err}", file=sys.stderr)
        return 2
    rows = np.sort(np.random.default_rng(args.seed).choice(len(e), min(args.n, len(e)), replace=False))
    e_t = torch.as_tensor(e[rows])
    with torch.no_grad():
        x = model.voxel_transform(torch.as_tensor(s[rows]), e_t).float()
        cond = model.conditions(e_t)
    ks = [int(k) for k in args.ks.split(",")]
    est = log_likelihood_estimates(model, x, cond, ks=ks, seed=args.seed)
    print(f"log p(x) of {len(rows)} showers of {args.showers} under {args.checkpoint} (nats per shower)\n")
    print("| K | ELBO | importance sampling, q(z|x) | Monte Carlo from the prior p(z) |")
    print("|---|---|---|---|")
    for k in ks:
        cells = [next(v for v in est if v.method == m and v.k == k) for m in ("elbo", "importance", "prior")]
        print(f"| {k} | " + " | ".join(f"{c.mean:.1f} ± {c.sem:.1f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

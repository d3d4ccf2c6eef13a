"""log p(x) of held-out showers under a trained VAE, three ways, for several sample counts K.

    python scripts/vae_log_likelihood.py CHECKPOINT HELDOUT.h5 [--k 1 10 100 1000] [--n 300] [--seed 0]

For each K: the ELBO (mean over K draws z ~ q(z|x) of log p(x|z) + log p(z) − log q(z|x)), the
importance-sampled estimate with the same proposal q(z|x) (log of the mean weight; a lower
bound that tightens with K), and plain Monte Carlo from the prior (log of the mean of p(x|z),
z ~ p(z)), each averaged over ``--n`` held-out showers (the first n per file order after a seeded
shuffle), in nats, with the standard error of that mean (dominated by the shower-to-shower spread of
log p(x); the paired difference prior MC − IS on the same showers is much more precise). With the energy head the likelihood is
that of (u, shape), as in training (see ``ShowerVAE.log_likelihood``).
"""

from __future__ import annotations

import argparse
import math
import sys

import h5py
import numpy as np
import torch

from fastsim.models.io import load_generator


def estimates(
    model, x: torch.Tensor, cond: torch.Tensor, k: int, seed: int, chunk: int = 16
) -> dict[str, np.ndarray]:
    """Per-shower ELBO, IS and prior-MC estimates (nats), shapes (n,)."""
    out: dict[str, list[np.ndarray]] = {"elbo": [], "is": [], "prior": []}
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            xb, cb = x[i : i + chunk], cond[i : i + chunk]
            elbo, ll = model.elbo_and_is(xb, cb, k, g)
            out["elbo"].append(elbo.numpy())
            out["is"].append(ll.numpy())
            out["prior"].append(model.log_likelihood_prior_mc(xb, cb, k, g).numpy())
    return {key: np.concatenate(v) for key, v in out.items()}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("heldout")
    p.add_argument("--k", type=int, nargs="+", default=[1, 10, 100, 1000])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    model = load_generator(a.checkpoint)
    if not hasattr(model, "elbo_and_is"):
        print(f"{a.checkpoint}: not a VAE checkpoint", file=sys.stderr)
        return 2
    with h5py.File(a.heldout, "r") as f:
        showers = f["showers"][:].astype(np.float32)
        e_inc = f["incident_energies"][:].astype(np.float32).ravel()
    idx = np.random.default_rng(a.seed).permutation(len(e_inc))[: a.n]
    e = torch.from_numpy(e_inc[idx])
    x = model.voxel_transform(torch.from_numpy(showers[idx]), e).to(torch.float32)
    cond = model.conditions(e)
    print(
        f"{a.n} held-out showers, latent_dim {model.latent_dim}; mean log p(x) estimate in nats ± standard error"
    )
    print(
        "| K | ELBO | importance sampling, q(z|x) | Monte Carlo from the prior p(z) | prior MC − IS (paired) |"
    )
    print("|---|---|---|---|---|")
    for k in a.k:
        est = estimates(model, x, cond, k, a.seed + k)
        cells = [
            f"{v.mean():.1f} ± {v.std(ddof=1) / math.sqrt(len(v)):.1f}"
            for v in (est["elbo"], est["is"], est["prior"])
        ]
        d = est["prior"] - est["is"]
        cells.append(f"{d.mean():.1f} ± {d.std(ddof=1) / math.sqrt(len(d)):.1f}")
        print(f"| {k} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

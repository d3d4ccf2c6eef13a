"""Two-process CPU DDP (gloo) for both generators: ranks end with identical weights.

Each run is a script (tests/helpers_ddp.py) in a subprocess: an in-process "ddp" run under
pytest would re-launch pytest as rank 1.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from test_training import GEO, write_showers

from fastsim.data.tensors import prepare_training_tensors

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers_ddp.py")


@pytest.fixture(scope="module")
def tensors_file(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("ddp_tensors")
    write_showers(str(d / "showers.h5"), 400, seed=1)
    out = str(d / "train.h5")
    prepare_training_tensors(
        [str(d / "showers.h5")], out, GEO, transform_config="divide", seed=2, progress=False
    )
    return out


def run_ddp(tensors_file: str, out: str, model: str, strategy: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    env.pop("MASTER_PORT", None)  # let Lightning pick a free port
    return subprocess.run(
        [sys.executable, HELPER, tensors_file, out, model, strategy],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("model", ["wgan", "vae"])
def test_two_rank_ddp_keeps_ranks_identical(tensors_file: str, tmp_path, model: str) -> None:
    proc = run_ddp(tensors_file, str(tmp_path), model, "ddp_find_unused_parameters_true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world"] == r1["world"] == 2
    # gradients were averaged every step: the weights are equal on both ranks ...
    for k, v in r0["state_dict"].items():
        torch.testing.assert_close(r1["state_dict"][k], v, rtol=0, atol=0, msg=k)
    # ... although each rank trained on its own, disjoint rows (2 epochs × 4 batches × 16)
    assert len(r0["rows"]) == len(r1["rows"]) == 2 * 4 * 16
    for epoch in range(2):
        a = set(r0["rows"][epoch * 64 : (epoch + 1) * 64])
        b = set(r1["rows"][epoch * 64 : (epoch + 1) * 64])
        assert len(a) == len(b) == 64 and not a & b
    # model selection saw the validation data of both ranks: the same χ² on each
    assert r0["metrics"]["val/chi2_ndf_sum"] == r1["metrics"]["val/chi2_ndf_sum"]


@pytest.mark.slow
def test_plain_ddp_fails_for_the_gan(tensors_file: str, tmp_path) -> None:
    # the reason configs/trainer/ddp.yaml uses ddp_find_unused_parameters_true
    proc = run_ddp(tensors_file, str(tmp_path), "wgan", "ddp")
    assert proc.returncode != 0
    assert "were not used in producing" in proc.stderr or "did not receive grad" in proc.stderr

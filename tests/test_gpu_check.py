"""scripts/gpu_check.sh end to end on the CPU with small budgets (GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1):
everything but the device is exercised, so a GPU run tests the device alone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from helpers_cli import REPO, cli_env


@pytest.mark.slow
def test_gpu_check_script_runs_on_cpu_and_prints_its_table(tmp_path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "fastsim"
    exe.write_text(f'#!/bin/bash\nexec {sys.executable} -m fastsim.cli "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in cli_env().items() if not k.startswith("SLURM_")}
    env.update(
        GPU_CHECK_DEVICE="cpu",
        GPU_CHECK_QUICK="1",
        PYTHON=sys.executable,
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
    )
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "gpu_check.sh"), str(tmp_path / "work")], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    table = proc.stdout[proc.stdout.index("gpu_check on cpu") :].splitlines()
    rows = {line[:44].strip(): line[44:] for line in table[2:]}
    assert len(rows) == 6, table
    for name, rest in rows.items():
        rate = float(rest.split()[0].replace(",", ""))
        assert rate > 0, (name, rest)
    assert any(k.startswith("WGAN-GP fit, cpu") for k in rows) and any(
        k.startswith("VAE fit, cpu") for k in rows
    )
    assert [k for k in rows if k.startswith("fastsim generate")] == [
        "fastsim generate, batch 1 (20 showers)", "fastsim generate, batch 100 (400 showers)",
        "fastsim generate, batch 1000 (2000 showers)",
    ]  # fmt: skip
    ddp = next(v for k, v in rows.items() if k.startswith("WGAN-GP fit, DDP on 2 devices"))
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in ddp, ddp

"""The GPU benchmark's code path also runs on a CPU (same code, tiny sizes): it cannot rot unseen."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_bench_gpu_runs_on_the_cpu_and_prints_ratios():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), "--device", "cpu", "--n", "128", "--batch-size", "64",
                          "--latent", "2x2x4", "--epochs", "1", "--no-compile"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "ratio harness fp32 / fastest plain" in out.stdout and "plain bf16" in out.stdout



@pytest.mark.slow
def test_bench_shared_stage_prints_the_ratio_of_each_grid_on_a_tiny_grid(tmp_path):
    import os

    tiny = "--remedies vae,expost_gmm,expost_gaussian --latents 2 --epochs 1 --n-samples 100 --iw-k 4"
    scratch = tmp_path / "tmp"  # where the script makes its run folders (tempfile honours TMPDIR)
    scratch.mkdir()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_shared_stage.py"), "--spec", "default",
                          "--spec", "baselines/digits.toml", "--args", tiny],
                         capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "LATENTBENCH_CACHE": str(tmp_path / "cache"), "TMPDIR": str(scratch)})
    assert out.returncode == 0, out.stderr
    assert not any(p.name.startswith("lb-bench-shared-") for p in scratch.iterdir())  # its run folders are removed
    assert out.stdout.count("ratio shared / alone") == 2 and "baselines/digits.toml:" in out.stdout
    # one model per first stage with sharing (vae, expost_gmm and expost_gaussian share one per latent and
    # seed), one per cell alone: counted from the records, whichever cell claimed the stage
    import re

    counts = re.findall(r"\((\d+) cells\): shared (\d+) models in [\d.]+ s, alone (\d+) models", out.stdout)
    assert len(counts) == 2
    for cells, shared, alone in counts:
        assert int(alone) == int(cells) and int(shared) * 3 == int(cells)

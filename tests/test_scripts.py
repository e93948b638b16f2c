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

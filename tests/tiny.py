"""What the reliability and worker tests share: the smallest real run (one cell, seconds on a CPU) and
a poll for a condition while a subprocess runs."""

TINY = ["run", "--remedies", "vae", "--latents", "2", "--epochs", "2", "--n-samples", "150", "--iw-k", "4", "--quiet"]


def wait_for(cond, proc, what: str, polls: int = 6000, pause: float = 0.02):
    """Poll until ``cond()`` is truthy while the subprocess ``proc`` runs (a hang guard, not a speed
    check): its value, or a test failure naming ``what`` if the run ends or the polls run out. ``proc``
    None polls a condition of this process (a heartbeat thread's write)."""
    import time

    import pytest

    for _ in range(polls):
        if got := cond():
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.communicate()}")
        time.sleep(pause)
    if proc is not None:
        proc.kill()
    pytest.fail(f"no {what} after {polls} polls")

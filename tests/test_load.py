"""The load script's run, small: every steady job finishes, a burst is refused cleanly and served FIFO."""

from __future__ import annotations

import pytest

from bench.load import run


@pytest.mark.slow
def test_load_steady_and_burst(tmp_path):
    steady, bursty, before, after = run(clients=4, jobs=3, burst_size=24, output_dir=tmp_path)
    assert steady.done == 12 and not steady.failed
    assert not bursty.failed and bursty.done + bursty.refused == 24 and bursty.refused > 0
    assert bursty.finished == sorted(bursty.finished)  # FIFO
    # RSS is printed, not bounded: it is this process's, which holds the clients as well as the server.
    print(f"steady 12/12, burst {bursty.done} done / {bursty.refused} refused, RSS {before:.0f} -> {after:.0f} MB")

"""Step times and peak memory that train.json records (engine.usage): the summary's arithmetic, the memory's floor."""

import numpy as np
import torch

from primkd.engine.usage import StepClock, peak_memory


def test_step_clock_reports_the_first_step_apart_and_the_median_of_the_rest():
    clock = StepClock()
    for _ in range(3):
        with clock.step(torch.device("cpu")):
            pass
    assert len(clock.seconds) == 3 and all(s >= 0 for s in clock.seconds)
    clock.seconds = [9.0, 1.0, 3.0, 2.0]
    assert clock.summary() == {"steps": 4, "first": 9.0, "median_after_first": 2.0}
    clock.seconds = [4.0]
    assert clock.summary() == {"steps": 1, "first": 4.0, "median_after_first": None}
    assert StepClock().summary() == {"steps": 0, "first": None, "median_after_first": None}


def test_peak_memory_is_at_least_what_the_process_touched():
    block = np.ones(300 * 2**20, dtype=np.uint8)  # 300 MiB, every page written
    peak = peak_memory(torch.device("cpu"))
    assert peak["rss_mib"] >= 300 and peak["cuda_allocated_mib"] is None
    del block

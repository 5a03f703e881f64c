import os

import pytest
import torch

# Oversubscribed threads make every peer slower on small machines; tests measure values, not speed.
# MEI_TEST_THREADS (1 unless set) lets benchmarks/platform_spread.py run the quality tests with 2.
TEST_THREADS = int(os.environ.get("MEI_TEST_THREADS", "1"))
torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True)
def _torch_threads():
    # some test modules pin 1 thread at import; this makes the chosen count hold in every test
    torch.set_num_threads(TEST_THREADS)

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


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """One complete run of the default tiny project (workflow_support.tiny_config), shared by every
    module that only reads it or copies it (``project``) before changing anything. Modules that need
    another project define their own ``finished``."""
    from workflow_support import make_project, snakemake

    folder = make_project(tmp_path_factory.mktemp("tiny-run") / "project")
    snakemake(folder)
    return folder


@pytest.fixture
def project(finished, tmp_path):
    """A copy of ``finished`` (mtimes kept) to change."""
    from workflow_support import copy_project

    return copy_project(finished, tmp_path / "project")

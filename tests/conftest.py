import numpy as np
import pytest

from optional_deps import import_optional

from install_helpers import InstallFailed, Installs


@pytest.fixture(autouse=True)
def _restore_thread_count():
    """Every test leaves cygru's process-wide thread count as it found it, unset included
    (a test that restores ``set_num_threads(get_num_threads())`` would fix the count for
    all later tests, and cygru.dask's ``threads=k`` then loses to it: the tests must not
    depend on their order)."""
    from cygru import _cpu

    saved = _cpu._num_threads
    yield
    _cpu._num_threads = saved


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """cygru installed by pip, once per test session, into two fresh virtual environments
    (``pip install -e`` and ``pip install`` of copies of this checkout, side by side; see
    install_helpers.Installs). ``installed(kind)``, kind "editable" or "normal", waits
    for one and returns (its python, the directory its ``import cygru`` must come from)."""
    import_optional("Cython")
    installs = Installs(tmp_path_factory.mktemp("installs"))

    def wait(kind):
        try:
            return installs.wait(kind)
        except InstallFailed as e:
            pytest.fail(str(e))

    yield wait
    installs.close()

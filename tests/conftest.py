import numpy as np
import pytest

from optional_deps import import_optional

from install_helpers import InstallFailed, Installs


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

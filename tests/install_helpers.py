"""cygru installed by pip into fresh virtual environments, for tests that build and run
code against an installed cygru as a user would (no PYTHONPATH): the embedding recipe
(tests/test_embedding.py) and the plain-C interface (tests/test_c_header.py).

``conftest.py`` turns :class:`Installs` into the session fixture ``installed``, so one
pair of installs serves every test module of a run.
"""

import os
import pathlib
import shutil
import site
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# copies of this checkout for pip: sources and build/ (setuptools reuses what is up to date
# there), not version control, caches, environments or in-place extensions
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    "*.egg-info",
    "_build",
    "results",
)


def clean_env():
    """The environment of a user's shell: no PYTHONPATH, no cygru build switches."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "CYGRU_DEBUG", "CYGRU_SANITIZE")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def site_packages_without_cygru(directory):
    """`directory` filled with links to everything in this interpreter's site-packages
    except cygru's own entries (its package, metadata and editable-install hooks): on a
    venv's path it provides pip, setuptools, Cython, NumPy and SciPy without installing
    or downloading them, and no cygru but the one installed into that venv. (Only a
    site directory's .pth files run, so no import hook of this environment comes along.)"""
    directory.mkdir()
    user_site = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    for site_dir in site.getsitepackages() + user_site:
        if not os.path.isdir(site_dir):
            continue
        for name in os.listdir(site_dir):
            if "cygru" not in name.lower() and not (directory / name).exists():
                (directory / name).symlink_to(os.path.join(site_dir, name))
    return directory


def venv(path, extra_site):
    """A fresh virtual environment at `path` (no pip of its own) that also sees
    `extra_site`; returns its python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, env=clean_env()
    )
    python = path / ("Scripts" if os.name == "nt" else "bin") / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        env=clean_env(),
    ).stdout.strip()
    pathlib.Path(purelib, "_cygru_test_outer.pth").write_text(f"{extra_site}\n")
    return python


class InstallFailed(Exception):
    pass


class Installs:
    """cygru installed by pip into two fresh virtual environments, each from its own copy
    of this checkout: ``pip install -e`` (setuptools' editable install: a path entry,
    the checkout on sys.path, as pyproject.toml's package-dir asks) and ``pip install`` (a wheel in site-packages). The
    two start at once and run side by side; :meth:`wait` waits for one."""

    KINDS = ("editable", "normal")

    def __init__(self, base):
        base = pathlib.Path(base)
        extra_site = site_packages_without_cygru(base / "outer-site-packages")
        env = clean_env()
        # Only so that what must be compiled compiles at -O0 (five times faster; these
        # tests check packaging, not speed). --no-build-isolation and --no-deps: use this
        # environment's NumPy, SciPy, Cython and setuptools rather than downloading them.
        env["CYGRU_DEBUG"] = "1"
        self._jobs = {}
        self._done = {}
        for kind in self.KINDS:
            source = base / f"cygru-{kind}"
            shutil.copytree(ROOT, source, ignore=COPY_IGNORE, symlinks=True)
            for built in source.joinpath("cygru").iterdir():  # only pip's builds count
                if built.suffix in (".so", ".pyd"):
                    built.unlink()
            python = venv(base / f"venv-{kind}", extra_site)
            cmd = (
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--no-build-isolation",
                    "--no-deps",
                    "--no-index",
                ]
                + (["-e"] if kind == "editable" else [])
                + [str(source)]
            )
            log = open(base / f"pip-{kind}.log", "w")
            self._jobs[kind] = (
                python,
                source,
                log,
                subprocess.Popen(cmd, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT),
            )

    def wait(self, kind):
        """(the venv's python, the directory its ``import cygru`` must come from), once
        that install has finished; raises InstallFailed with pip's log otherwise."""
        if kind in self._done:
            return self._done[kind]
        python, source, log, proc = self._jobs[kind]
        if proc.wait(timeout=900) != 0:
            log.close()
            raise InstallFailed(
                f"pip install ({kind}) failed:\n{pathlib.Path(log.name).read_text()[-6000:]}"
            )
        if kind == "editable":
            package_dir = source / "cygru"
        else:
            platlib = subprocess.run(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"],
                check=True,
                capture_output=True,
                text=True,
                env=clean_env(),
            ).stdout
            package_dir = pathlib.Path(platlib.strip()) / "cygru"
        self._done[kind] = (python, package_dir)
        return self._done[kind]

    def close(self):
        for _, _, log, proc in self._jobs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            log.close()

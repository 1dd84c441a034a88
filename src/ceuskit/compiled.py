"""Whether the numba-compiled kernels are already cached on disk.

The kernels (`ceuskit.kinetics.fit_numba`, `ceuskit.kinetics.prefit_numba`,
`ceuskit.maps`, `ceuskit._lut`, `ceuskit._motion_kernels`) are compiled on first use and cached next to
their modules (``__pycache__/*.nbi``).  The first analysis in a fresh
environment spends most of its time compiling; the command line says so
instead of sitting silent.
"""

from __future__ import annotations

from pathlib import Path

#: Modules with ``@njit(cache=True)`` kernels, relative to the package.
KERNEL_MODULES = ("kinetics/fit_numba.py", "kinetics/prefit_numba.py", "maps.py", "_lut.py",
                  "_motion_kernels.py")
#: What the first compilation costs (s), measured from a fresh virtual
#: environment on 2 cores: the first `ceuskit demo` took 38 s, later ones ~9 s.
FIRST_COMPILE_S = 30


def kernels_cached(package_dir: Path | None = None) -> bool:
    """True when every kernel module has a numba cache index beside it."""
    root = package_dir or Path(__file__).resolve().parent
    for rel in KERNEL_MODULES:
        module = root / rel
        cache = module.parent / "__pycache__"
        if not any(p.name.startswith(module.stem + ".") for p in cache.glob("*.nbi")):
            return False
    return True


def first_run_notice() -> str | None:
    """The message to show before the first compilation, or None when the kernels are cached."""
    if kernels_cached():
        return None
    return (f"compiling the fast kernels (first run only, about {FIRST_COMPILE_S} s on 2 cores; "
            "later runs reuse them)")

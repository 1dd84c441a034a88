"""The first-run notice: said while the numba caches are missing, silent once they exist."""

from __future__ import annotations

from pathlib import Path

from ceuskit.compiled import KERNEL_MODULES, first_run_notice, kernels_cached


def _fake_package(root: Path, with_cache: set[str]) -> Path:
    for rel in KERNEL_MODULES:
        module = root / rel
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text("")
        if rel in with_cache:
            cache = module.parent / "__pycache__"
            cache.mkdir(exist_ok=True)
            (cache / f"{module.stem}.kernel-12.py311.nbi").write_bytes(b"")
    return root


def test_kernels_cached_needs_every_module(tmp_path: Path) -> None:
    assert not kernels_cached(_fake_package(tmp_path / "a", set()))
    assert not kernels_cached(_fake_package(tmp_path / "b", set(KERNEL_MODULES[:-1])))
    assert kernels_cached(_fake_package(tmp_path / "c", set(KERNEL_MODULES)))


def test_the_installed_package_after_the_suite_has_compiled() -> None:
    # Whatever the state, the notice and the cache check agree.
    assert (first_run_notice() is None) == kernels_cached()
    import ceuskit

    assert all((Path(ceuskit.__file__).parent / rel).exists() for rel in KERNEL_MODULES)

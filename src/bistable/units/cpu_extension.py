"""Building the units' fused CPU loops: C++ sources compiled once per machine by
``torch.utils.cpp_extension`` (a C++ compiler and ninja; cached on disk afterwards).

A build's folder is named by the loop, the CPU's vector ISA and a hash of the source, the flags,
and the torch and Python it builds against, so that two versions of the package (or two virtual
environments) never load nor rebuild each other's builds in the shared cache
(``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``). Where the loop cannot be
built (no compiler, an unwritable cache; ``ninja`` comes with the package, and the system's is
used where there is one) the units run their PyTorch loop, with one
warning saying why: ``compile_loop`` is a speed option.
"""

import contextlib
import hashlib
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def load_cpu_extension(name: str, source: str, functions: list[str]):
    """The extension module ``<name>_<isa>_<hash>`` built from ``source`` with ``functions``
    bound, or None (with a warning) when it cannot be built; AVX2 or AVX-512 vectors
    (``at::vec::Vectorized``, SLEEF's ``tanh``) where the CPU has them, and ``at::parallel_for``
    on torch's threads (OpenMP, on Linux; built again without it, on one thread and with a
    warning, where the compiler has no OpenMP, as clang without libomp)."""
    from torch.utils.cpp_extension import get_default_build_root

    isa = torch.backends.cpu.get_cpu_capability()
    flags = ["-O3"] + {
        "AVX2": ["-mavx2", "-mfma"],
        "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
    }.get(isa, [])
    if len(flags) > 1:
        flags += [f"-DCPU_CAPABILITY_{isa}", f"-DCPU_CAPABILITY={isa}"]
    # at::parallel_for is OpenMP in torch's Linux builds, and header-only: built without
    # -fopenmp its pragma is dropped and the loop runs the batch rows on one thread, whatever
    # torch.set_num_threads says
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") and \
        torch.backends.openmp.is_available() else []
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    reasons = []
    for threads in ([openmp, []] if openmp else [[]]):
        try:
            module = _build(name, source, functions, isa, flags + threads, threads, root)
        except (RuntimeError, OSError, ImportError) as err:
            reasons.append(_reason(err))
            continue
        if reasons:
            warnings.warn(f"compile_loop: the fused C++ loop {name} was built without OpenMP "
                          f"(with -fopenmp: {reasons[0]}); it runs its batch rows on one "
                          f"thread", stacklevel=4)
        return module
    warnings.warn(f"compile_loop: the fused C++ loop {name} could not be built or loaded "
                  f"({reasons[-1]}); running the PyTorch loop. It needs a C++ compiler, ninja "
                  f"and a writable {root} ($TORCH_EXTENSIONS_DIR)", stacklevel=4)
    return None


def _reason(err: Exception) -> str:
    """One line of why a build failed: the compiler's first ``error:`` line in torch's message
    (its last line is ninja's "build stopped"), else that last line."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return next((line for line in lines if "error:" in line.lower()), lines[-1])


def _build(name, source, functions, isa, cflags, ldflags, root):
    """``load_inline`` of ``source`` with these flags, in its own folder of ``root``; raises
    where it cannot be built or loaded."""
    from torch.utils.cpp_extension import load_inline

    # the torch it builds against, by version and place (each environment its own build: a
    # shared one is rebuilt by ninja whenever another environment's paths last built it)
    digest = hashlib.sha256("\n".join([source, *cflags, torch.__version__, torch.__file__,
                                       sys.version]).encode()).hexdigest()[:12]
    full_name = f"{name}_{isa.lower()}_{digest}"
    folder = root / full_name
    folder.mkdir(parents=True, exist_ok=True)
    with _builder(folder, full_name), _ninja_on_path():
        return load_inline(full_name, source, functions=functions, extra_cflags=cflags,
                           extra_ldflags=ldflags, build_directory=str(folder))


@contextlib.contextmanager
def _ninja_on_path():
    """PATH with the ``ninja`` package's binary (a dependency) where no ``ninja`` is on it: torch
    runs ``ninja`` by name, and an environment used without activating it keeps its own scripts
    off PATH. PATH is restored afterwards."""
    try:
        import ninja
    except ImportError:
        ninja = None
    if ninja is None or shutil.which("ninja") is not None:
        yield
        return
    before = os.environ.get("PATH")
    os.environ["PATH"] = os.pathsep.join(p for p in (ninja.BIN_DIR, before) if p)
    try:
        yield
    finally:
        if before is None:
            del os.environ["PATH"]
        else:
            os.environ["PATH"] = before


@contextlib.contextmanager
def _builder(folder: Path, full_name: str):
    """Hold ``folder``'s build: an ``flock`` on ``.build.flock``, which the system releases when
    its holder dies. Torch's own baton (``lock``) is a plain file that a killed build leaves
    behind, and torch then waits for it forever; holding the flock, this process is the only
    builder, so a baton found then is stale and removed. (Without ``fcntl``, as on Windows, the
    baton is only named when found.)"""
    if fcntl is None:
        if (folder / "lock").exists():
            warnings.warn(f"compile_loop: waiting for another process's build of {full_name}; "
                          f"if none is running, delete {folder / 'lock'}", stacklevel=6)
        yield
        return
    with open(folder / ".build.flock", "a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            warnings.warn(f"compile_loop: waiting for another process's build of {full_name}",
                          stacklevel=6)
            fcntl.flock(held, fcntl.LOCK_EX)
        (folder / "lock").unlink(missing_ok=True)
        yield

"""Building the units' fused CPU loops: C++ sources compiled once per machine by
``torch.utils.cpp_extension`` (a C++ compiler and ninja; cached on disk afterwards)."""

import torch


def load_cpu_extension(name: str, source: str, functions: list[str]):
    """The extension module ``<name>_<isa>`` built from ``source`` with ``functions`` bound;
    AVX2 or AVX-512 vectors (``at::vec::Vectorized``, SLEEF's ``tanh``) where the CPU has them."""
    from torch.utils.cpp_extension import load_inline

    isa = torch.backends.cpu.get_cpu_capability()
    flags = ["-O3"] + {
        "AVX2": ["-mavx2", "-mfma"],
        "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
    }.get(isa, [])
    if len(flags) > 1:
        flags += [f"-DCPU_CAPABILITY_{isa}", f"-DCPU_CAPABILITY={isa}"]
    return load_inline(f"{name}_{isa.lower()}", source, functions=functions, extra_cflags=flags)

"""``load_cpu_extension``: the compiler flags and module name follow the CPU's vector ISA (a
build that silently lost its vector flags would still pass every value test, only slower)."""

import pytest
import torch
from torch.utils import cpp_extension

from bistable.units.cpu_extension import load_cpu_extension

ISA_FLAGS = {
    "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
               "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"],
    "DEFAULT": [],  # no vector flags: ATen's scalar fallback of Vectorized
}


@pytest.mark.parametrize("isa", sorted(ISA_FLAGS))
def test_flags_and_name_follow_the_cpu_capability(monkeypatch, isa):
    calls = []
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: isa)
    monkeypatch.setattr(cpp_extension, "load_inline",
                        lambda *args, **kwargs: calls.append((args, kwargs)) or "module")
    assert load_cpu_extension("bistable_x", "// source", ["forward", "backward"]) == "module"
    [(args, kwargs)] = calls
    assert args == (f"bistable_x_{isa.lower()}", "// source")  # one build (cache) per ISA
    assert kwargs == {"functions": ["forward", "backward"],
                      "extra_cflags": ["-O3", *ISA_FLAGS[isa]]}

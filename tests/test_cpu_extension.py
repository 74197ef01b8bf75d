"""``load_cpu_extension``: the compiler flags and module name follow the CPU's vector ISA and
torch's OpenMP (a build that silently lost its vector or OpenMP flags would still pass every
value test, only slower)."""

import sys
import warnings

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


@pytest.fixture
def builds(monkeypatch, tmp_path):
    """``load_inline`` recorded instead of run, the extensions' cache in ``tmp_path``: the
    ``(args, kwargs)`` of each build asked for."""
    calls = []
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load_inline",
                        lambda *args, **kwargs: calls.append((args, kwargs)) or "module")
    return calls


@pytest.mark.parametrize("isa", sorted(ISA_FLAGS))
@pytest.mark.parametrize("platform, openmp, threads", [
    ("linux", True, ["-fopenmp"]),  # at::parallel_for's pragma needs it, or rows run serially
    ("linux", False, []),
    ("darwin", True, []),  # Apple's clang knows no -fopenmp
])
def test_flags_and_name_follow_the_cpu_capability(monkeypatch, builds, tmp_path, isa, platform,
                                                  openmp, threads):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: isa)
    monkeypatch.setattr(torch.backends.openmp, "is_available", lambda: openmp)
    monkeypatch.setattr(sys, "platform", platform)
    assert load_cpu_extension("bistable_x", "// source", ["forward", "backward"]) == "module"
    [(args, kwargs)] = builds
    name = args[0]
    assert name.startswith(f"bistable_x_{isa.lower()}_") and args[1] == "// source"  # per ISA
    assert kwargs == {"functions": ["forward", "backward"],
                      "extra_cflags": ["-O3", *ISA_FLAGS[isa], *threads],
                      "extra_ldflags": threads, "build_directory": str(tmp_path / name)}


def test_another_source_gets_another_build(builds):
    """Two versions of a loop (two checkouts, two environments) never share a cached build: the
    name carries a hash of the source, flags, torch and Python (a shared name loaded whichever
    build came first, and kept it)."""
    for source in ("// one", "// two", "// one"):
        load_cpu_extension("bistable_x", source, ["forward"])
    one, two, again = (args[0] for args, _ in builds)
    assert one != two and one == again


def test_a_lock_left_by_a_killed_build_is_removed(builds, tmp_path):
    """Torch's baton, left by a build killed half-way, made every later process wait forever:
    holding the build's flock (released by the system when its holder dies), the baton is
    stale and goes."""
    load_cpu_extension("bistable_x", "// source", ["forward"])
    folder = tmp_path / builds[0][0][0]
    (folder / "lock").touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not waited for, nor named
        load_cpu_extension("bistable_x", "// source", ["forward"])
    assert not (folder / "lock").exists() and len(builds) == 2


def test_a_live_build_is_waited_for_and_said(builds, tmp_path):
    import fcntl
    import threading

    load_cpu_extension("bistable_x", "// source", ["forward"])
    folder = tmp_path / builds[0][0][0]
    with open(folder / ".build.flock", "a") as held:  # another process building
        fcntl.flock(held, fcntl.LOCK_EX)
        threading.Timer(0.5, lambda: fcntl.flock(held, fcntl.LOCK_UN)).start()
        with pytest.warns(UserWarning, match="waiting for another process's build of bistable_x"):
            load_cpu_extension("bistable_x", "// source", ["forward"])
    assert len(builds) == 2


@pytest.mark.parametrize("error", [
    RuntimeError("Ninja is required to load C++ extensions"),
    OSError(30, "Read-only file system"),
    ImportError("cannot open shared object file")])
def test_a_loop_that_cannot_be_built_falls_back_with_one_warning(monkeypatch, tmp_path, error):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(cpp_extension, "load_inline", fail)
    with pytest.warns(UserWarning, match="could not be built or loaded .*running the PyTorch "
                      "loop. It needs a C..? compiler, ninja") as seen:
        assert load_cpu_extension("bistable_x", "// source", ["forward"]) is None
    assert len(seen) == 1  # not one more for the try without OpenMP


def test_a_failed_build_is_said_by_the_compiler_s_error_not_ninja_s_last_line(monkeypatch,
                                                                                tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))

    def fail(*args, **kwargs):  # torch's message: the build's output, ninja's verdict last
        raise RuntimeError("Error building extension 'bistable_x': [1/2] c++ -c main.cpp\n"
                           "FAILED: main.o\nmain.cpp:3:1: error: 'foo' does not name a type\n"
                           "ninja: build stopped: subcommand failed.")

    monkeypatch.setattr(cpp_extension, "load_inline", fail)
    with pytest.warns(UserWarning, match=r"\(main.cpp:3:1: error: 'foo' does not name a type\)"):
        assert load_cpu_extension("bistable_x", "// source", ["forward"]) is None


def test_a_compiler_without_openmp_builds_the_loop_on_one_thread(monkeypatch, builds, tmp_path):
    """clang without libomp refuses -fopenmp: the loop is built again without it (its rows on
    one thread, said once), not dropped for the much slower PyTorch loop."""
    monkeypatch.setattr(torch.backends.openmp, "is_available", lambda: True)
    monkeypatch.setattr(sys, "platform", "linux")

    def no_openmp(*args, **kwargs):
        builds.append((args, kwargs))
        if "-fopenmp" in kwargs["extra_cflags"]:
            raise RuntimeError("Error building extension 'bistable_x'\nfatal error: 'omp.h' "
                               "file not found")
        return "module"

    monkeypatch.setattr(cpp_extension, "load_inline", no_openmp)
    with pytest.warns(UserWarning, match="built without OpenMP \\(with -fopenmp: fatal error: "
                      "'omp.h' file not found\\); it runs its batch rows on one thread") as seen:
        assert load_cpu_extension("bistable_x", "// source", ["forward"]) == "module"
    assert len(seen) == 1
    (first, with_omp), (second, without) = builds
    assert with_omp["extra_ldflags"] == ["-fopenmp"] and without["extra_ldflags"] == []
    assert "-fopenmp" not in without["extra_cflags"] and first[0] != second[0]  # its own build
    assert without["build_directory"] == str(tmp_path / second[0])


@pytest.fixture
def unbuildable(monkeypatch, tmp_path):
    """No fused loop can be built (``load_inline`` fails); ``unbuildable(unit)`` gives a unit with
    ``compile_loop=True``, the same unit without it (same weights) and an input, float64. The
    loops' remembered builds are forgotten before and after."""
    import bistable as bs
    from bistable.units import brc_loop, src_loop

    def fail(*args, **kwargs):
        raise RuntimeError("c++: not found")

    def make(unit):
        torch.manual_seed(0)
        fused = getattr(bs, unit)(3, 4, compile_loop=True).double()
        plain = getattr(bs, unit)(3, 4).double()
        plain.load_state_dict(fused.state_dict())
        return fused, plain, torch.randn(2, 5, 3, dtype=torch.float64)

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load_inline", fail)
    for module in (brc_loop, src_loop):
        module._cpu_kernel.cache_clear()
    yield make
    for module in (brc_loop, src_loop):
        module._cpu_kernel.cache_clear()


@pytest.mark.parametrize("unit", ["BRC", "NBRC", "SRC"])
def test_units_without_their_fused_loop_run_the_pytorch_loop(unbuildable, unit):
    """``compile_loop=True`` where nothing can be built: the unit's own loop, one warning, the
    same values as ``compile_loop=False``."""
    fused, plain, x = unbuildable(unit)
    with pytest.warns(UserWarning, match="could not be built"):
        y, _ = fused(x)
    assert torch.equal(y, plain(x)[0])
    fused(x)  # warned once: the failure is remembered (the suite turns a second into an error)


@pytest.mark.parametrize("unit", ["BRC", "NBRC"])
def test_a_compiled_unit_without_its_fused_loop_runs_the_pytorch_loop(unbuildable, unit):
    """Traced before the build was looked up, the operator met a loop that cannot be built: it
    raised (the eager unit warned and fell back). It computes the PyTorch loop now, values and
    gradients."""
    fused, plain, x = unbuildable(unit)
    compiled = torch.compile(fused, backend="aot_eager", fullgraph=True)
    with pytest.warns(UserWarning, match="could not be built"):
        y, _ = compiled(x)
    want, _ = plain(x)
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    y.square().sum().backward()
    want.square().sum().backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_the_fused_operators_check_their_operands():
    """Called directly, the operators refuse sizes their kernels would trust (a short ``h0`` made
    the C++ loop write past its buffers)."""
    import bistable as bs

    brc = bs.BRC(3, 4).double()
    u = torch.randn(5, 7, 3, dtype=torch.float64) @ brc.U.T
    w, h0 = brc._recurrent_weight(), torch.zeros(5, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"h0: expected shape \(5, 4\), .* got \(1, 4\)"):
        torch.ops.bistable.brc_loop(u, brc.bias, w, h0[:1])
    with pytest.raises(ValueError, match=r"bias: expected shape \(8,\), torch.float32"):
        torch.ops.bistable.brc_loop(u.float(), brc.bias, w, h0.float())
    half = [t.bfloat16() for t in (u, brc.bias, w, h0)]  # the C++ loop has float32/64 only
    with pytest.raises(ValueError, match="u: expected a float32 or float64 CPU tensor, got "
                                         "torch.bfloat16 on cpu"):
        torch.ops.bistable.brc_loop(*half)
    with pytest.raises(ValueError, match="u: expected 3H features .*, got 13"):
        torch.ops.bistable.brc_loop(torch.cat([u, u[..., :1]], -1), brc.bias, w, h0)
    src = bs.SRC(3, 4).double()
    d, s = torch.randn(5, 7, 4, dtype=torch.float64), torch.zeros(5, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"hs0: expected shape \(5, 4\), .* got \(1, 4\)"):
        torch.ops.bistable.src_loop(d, s, src.bias, s, s[:1], src.r, src.r_s, 0.9, 3.0, 0.9, 0.0,
                                    False, False, False)


def test_the_ninja_package_is_on_path_during_a_build_where_none_is(monkeypatch, tmp_path):
    """torch runs ``ninja`` by name; a virtual environment used without activating it has the
    ``ninja`` package's binary off PATH: the build puts it there, and PATH is restored after."""
    import shutil
    import types

    package_bin, bare = tmp_path / "ninja_bin", tmp_path / "bare"
    package_bin.mkdir()
    bare.mkdir()
    (package_bin / "ninja").write_text("#!/bin/sh\n")
    (package_bin / "ninja").chmod(0o755)
    monkeypatch.setitem(sys.modules, "ninja", types.SimpleNamespace(BIN_DIR=str(package_bin)))
    monkeypatch.setenv("PATH", str(bare))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    seen = []
    monkeypatch.setattr(cpp_extension, "load_inline",
                        lambda *args, **kwargs: seen.append(shutil.which("ninja")) or "module")
    assert load_cpu_extension("probe", "// nothing", ["forward"]) == "module"
    assert seen == [str(package_bin / "ninja")]
    assert shutil.which("ninja") is None and sys.modules["ninja"].BIN_DIR == str(package_bin)

"""Which packed kernel runs: the compiled C++ kernel (built on first use) or numpy, chosen at run time.

Backends (``BACKENDS``):

- ``"cpp"``: the compiled, multi-threaded kernel ``csrc/packed_conv.cpp``,
  built with ``torch.utils.cpp_extension`` on first use (about 40 s, with a
  one-line notice) into a folder of torch's extension cache
  (``TORCH_EXTENSIONS_DIR``) named after this install (``build_directory``),
  so two installs (a checkout's and a ``pip install``'s) each keep their own
  build. The build is
  portable (no ``-march=native``): run-time checks choose its fastest path.
  On a CPU with AMX-INT8 tiles (Intel Xeon since Sapphire Rapids, on Linux)
  the signs are stored one byte each (+1 / -1) and the tile multiply-add
  computes the same exact integer sums, for layers with equal strides of 1
  or 2; elsewhere it takes the XNOR-popcount path below;
- ``"cpp_popcount"``: the same build, XNOR-popcount on bits only: AVX-512
  VPOPCNTDQ when the CPU has it, portable loops otherwise;
- ``"cpp_generic"``: the same build, portable loops only (what a CPU without
  AVX-512 VPOPCNTDQ runs);
- ``"cpp_amx_emulated"``: the int8-tile path of ``cpp`` on software tiles
  (``csrc/amx_emulation.h``, the hardware's semantics in plain C++), a second
  build of the same source: exact, and much slower than either real path.
  For tests on a CPU without AMX (it needs AVX-512, which its epilogues use);
  only chosen by name, never by ``auto``;
- ``"numpy"``: the same packed arithmetic in numpy (``np.packbits``, a popcount
  of xor-ed words), single-threaded, for machines without a compiler.

``"auto"`` (the default) defers to the environment variable
``XNORPP_PACKED_BACKEND`` when it is set, and otherwise takes ``cpp`` when it
builds and ``numpy`` when it does not, with a warning (once) that names the
build error; ``backend_info()`` says which runs and why.

"""

import functools
import hashlib
import logging
import os
import platform
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BACKENDS", "ENV_VAR", "BackendInfo", "backend_info", "build_directory"]

BACKENDS = ("cpp", "cpp_popcount", "cpp_generic", "cpp_amx_emulated", "numpy")
ENV_VAR = "XNORPP_PACKED_BACKEND"
_CSRC = Path(__file__).parent / "csrc"
_SOURCES = tuple(_CSRC / f for f in ("packed_conv.cpp", "int8_layers.cpp", "ceilings.cpp"))  # one module
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
# A portable build: the compiler's default target (with POPCNT on x86-64, as every x86-64 CPU since 2008 has);
# the AVX-512 functions carry their own target attribute and are chosen at run time (csrc/packed_conv.cpp).
# No contraction of a multiply and an add into one fused operation: the kernels round each, as torch does.
_CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"] + (["-mpopcnt"] if _X86 else [])
_LDFLAGS = ["-fopenmp"]  # scripts/sanitize.sh adds the sanitizers to both


@dataclass(frozen=True)
class BackendInfo:
    """Which backend runs (``name``), whether it takes the AVX-512 path (``simd``) and the AMX int8 tiles
    (``amx``), and why."""

    name: str
    simd: bool
    reason: str
    amx: bool = False

    @property
    def kernel(self):
        """The compiled module this backend calls (the emulated-tile build for ``cpp_amx_emulated``), or None."""
        if self.name == "numpy":
            return None
        return (_compiled(True) if self.name == "cpp_amx_emulated" else _compiled())[0]

    @property
    def path(self):
        """The arithmetic this backend runs, in words."""
        if self.name == "numpy":
            return "XNOR-popcount in numpy"
        if self.amx:
            tiles = "int8 tiles emulated in software" if self.name == "cpp_amx_emulated" else "int8 tiles (AMX-INT8)"
            return tiles + ", XNOR-popcount (AVX-512 VPOPCNTDQ) where a layer's strides do not fit them"
        return "XNOR-popcount, " + ("AVX-512 VPOPCNTDQ" if self.simd else "portable loops")


def _ninja_path():
    """PATH with the ``ninja`` of the ``ninja`` Python package appended (torch's build looks it up on PATH)."""
    path = os.environ.get("PATH", "")
    try:
        import ninja

        return path + os.pathsep + ninja.BIN_DIR
    except ImportError:
        return path


class _NoCudaNotice(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." notice: this kernel is CPU code."""

    def filter(self, record):
        return not record.getMessage().startswith("No CUDA runtime is found")


def _cpp_extension():
    """``torch.utils.cpp_extension``, imported without its CUDA notice (it does not apply to a CPU kernel)."""
    logger, quiet = logging.getLogger("torch.utils.cpp_extension"), _NoCudaNotice()
    logger.addFilter(quiet)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.removeFilter(quiet)
    return cpp_extension


def build_directory(emulated=False):
    """Where the kernel is built: ``$TORCH_EXTENSIONS_DIR`` (else torch's default extension root) /
    ``xnorpp_packed_conv-KEY`` (``-amx-emulated`` after it for the build with software tiles), KEY a digest of
    this package's folder, the Python prefix and the torch and Python versions, so that each install has its own
    build and none evicts another's."""
    import torch

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or _cpp_extension().get_default_build_root()
    install = f"{Path(__file__).resolve().parent}|{sys.prefix}|{torch.__version__}|{sys.version}"
    key = hashlib.sha256(install.encode()).hexdigest()[:12]
    return Path(root) / (f"xnorpp_packed_conv-{key}" + ("-amx-emulated" if emulated else ""))


def _built(folder, name):
    """Whether ``folder`` holds a build ``name`` of the current sources (then loading it takes a second, not 40 s)."""
    source_time = max(p.stat().st_mtime for p in _CSRC.iterdir())
    return any(p.stat().st_mtime >= source_time for p in folder.glob(f"{name}*.so"))


def _build_error(err):
    """The first line of a build error and the lines that name its cause (``error``, ``not found``, ...)."""
    lines = [l.strip() for l in str(err).strip().splitlines() if l.strip()] or [""]
    cause = [l for l in lines[1:] if any(w in l.lower() for w in ("error", "not found", "no such", "cannot"))]
    return "; ".join([f"{type(err).__name__}: {lines[0][:300]}"] + [l[:300] for l in cause[:4]])


@functools.lru_cache(maxsize=None)
def _compiled(emulated=False):
    """The compiled extension (built on first use, then loaded from the cache), or the build error; with
    ``emulated``, the build whose int8 tiles are software ones (a module of its own name)."""
    path = os.environ.get("PATH")
    try:
        name, flags = ("xnorpp_packed_conv_amx_emulated", ["-DXNORPP_AMX_EMULATION=1"]) if emulated else (
            "xnorpp_packed_conv", [])
        cpp_extension, folder = _cpp_extension(), build_directory(emulated)
        if not _built(folder, name):
            print(f"building the packed C++ kernel (about 40 s, once per install) in {folder}", file=sys.stderr,
                  flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["PATH"] = _ninja_path()
        module = cpp_extension.load(name=name, sources=[str(p) for p in _SOURCES], extra_cflags=_CFLAGS + flags,
                                    extra_ldflags=list(_LDFLAGS), build_directory=str(folder),
                                    verbose=False)  # torch extends the list of link flags
        return module, ""
    except Exception as err:  # no compiler, no ninja, no headers, build error: all mean "fall back"
        return None, _build_error(err)
    finally:
        if path is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = path


@functools.lru_cache(maxsize=None)
def _warn_fallback(error):
    """Warn once per distinct build error that ``auto`` fell back to numpy."""
    warnings.warn(f"the packed C++ kernel did not build, using the numpy backend (much slower): {error}",
                  RuntimeWarning, stacklevel=3)


def backend_info(requested=None):
    """Resolve ``requested`` (``None``/``"auto"`` or one of ``BACKENDS``).

    ``None`` and ``"auto"`` both defer to ``$XNORPP_PACKED_BACKEND`` when it is
    set, and otherwise take ``cpp`` when the kernel builds and ``numpy`` (with
    a warning, once, naming the build error) when it does not. ``"cpp"`` and
    ``"cpp_generic"`` raise ``RuntimeError`` when the kernel does not build.
    ``simd`` is the run-time check: the CPU has AVX-512 VPOPCNTDQ (and F, BW,
    DQ, VL), which ``cpp`` and ``cpp_popcount`` then use; ``cpp_generic`` never
    does. ``amx``: the CPU has AMX-INT8 and the operating system grants the
    tile state, which only ``cpp`` then uses. ``cpp_amx_emulated`` runs ``cpp``'s
    paths with software tiles (its own build), ``amx`` whenever the CPU has the
    AVX-512 its epilogues use; ``auto`` never takes it.
    """
    if requested in (None, "auto"):
        requested = os.environ.get(ENV_VAR) or "auto"
    if requested not in ("auto", *BACKENDS):
        raise ValueError(f"unknown packed backend {requested!r}; choose from {('auto', *BACKENDS)}")
    if requested == "numpy":
        return BackendInfo("numpy", False, "requested")
    module, error = _compiled(True) if requested == "cpp_amx_emulated" else _compiled()
    if module is not None:
        if requested == "cpp_generic":
            return BackendInfo("cpp_generic", False, "requested")
        if requested == "cpp_popcount":
            return BackendInfo("cpp_popcount", bool(module.simd_available()), "requested")
        return BackendInfo("cpp" if requested == "auto" else requested, bool(module.simd_available()),
                           "requested" if requested != "auto" else "compiled", bool(module.amx_available()))
    if requested != "auto":
        raise RuntimeError(f"the packed C++ kernel did not build: {error}")
    _warn_fallback(error)
    return BackendInfo("numpy", False, f"fallback, the C++ kernel did not build ({error})")

"""Provenance and safe writing of results: versions, hardware, atomic files, markdown tables.

Every result file of this project is written through ``atomic_write`` (write
to a temporary file in the same folder, then ``os.replace``), so a crash or a
bad option never leaves a half-written file behind.
"""

import datetime
import io
import json
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import torch

__all__ = ["environment", "package_versions", "cpu_details", "disturbed_threads", "disturbed_text", "atomic_write",
           "read_bytes", "read_torch_file", "write_json", "write_csv", "save_figure", "markdown_cell", "markdown_table",
           "cpu_markdown_table", "check_writable_folder"]

_PACKAGES = ("xnorpp", "torch", "torchvision", "numpy", "scipy", "pandas", "matplotlib", "scikit-learn", "papermill")


# Instruction-set extensions that decide the speed of the float and the packed binary kernels.
ISA_FLAGS = ("sse4_2", "popcnt", "avx", "avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bitalg", "avx512_vpopcntdq", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
             "asimd", "sve")


def _cpuinfo(text=None):
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty where there is none)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _cpu_model(info=None):
    info = _cpuinfo() if info is None else info
    return info.get("model name") or platform.processor() or platform.machine()


def cpu_details(cpuinfo_text=None):
    """What identifies the CPU beyond its model name (a virtual machine may report only "Intel Xeon").

    ``vendor``, ``family``, ``model``, ``stepping`` (integers where /proc/cpuinfo gives them),
    ``isa``: the ``ISA_FLAGS`` the CPU has, and ``torch_capability``: the vector instruction set
    torch's CPU kernels dispatch to (e.g. ``AVX512``).
    """
    info = _cpuinfo(cpuinfo_text)
    flags = set((info.get("flags") or info.get("Features") or "").split())

    def number(key):
        value = info.get(key)
        try:
            return int(value, 0)
        except (TypeError, ValueError):
            return value

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    return {"vendor": info.get("vendor_id") or info.get("CPU implementer"), "family": number("cpu family"),
            "model": number("model"), "stepping": number("stepping"),
            "isa": [f for f in ISA_FLAGS if f in flags], "torch_capability": capability}


def package_versions(names):
    """``{name: installed version, or None}`` of each package in ``names``."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment(device="cpu"):
    """Versions and hardware, for the ``run.json`` beside every result."""
    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_details": cpu_details(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "versions": package_versions(_PACKAGES),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
    return env


def disturbed_threads(load, cores, threads):
    """The thread counts of a timing run that ran on more threads than the cores other processes left idle: the
    1-minute load average before the run (``load``, unrounded) plus the thread count exceeds ``cores``. Timings
    at those thread counts are *disturbed*. Empty when the load or the cores are unknown."""
    if load is None or not cores:
        return []
    return sorted({int(t) for t in threads if load + int(t) > cores})


def disturbed_text(load, cores, threads):
    """``"disturbed timings: 2 threads beside a load average of 0.9 on 2 cores"``, naming the
    ``disturbed_threads``; empty when none is."""
    busy = disturbed_threads(load, cores, threads)
    if not busy:
        return ""
    return (f"disturbed timings: {' and '.join(map(str, busy))} thread{'s' if busy != [1] else ''} beside a load "
            f"average of {load:.1f} on {cores} cores")


def atomic_write(path, data):
    """Write ``data`` (str or bytes) to ``path`` atomically: temporary file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode of a new file
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_json(path, obj):
    """``obj`` as indented JSON, atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path, frame, **kwargs):
    """A pandas DataFrame as CSV (no index), atomically."""
    return atomic_write(path, frame.to_csv(index=False, **kwargs))


def save_figure(fig, path, **kwargs):
    """A matplotlib figure, atomically, in the format given by ``path``'s suffix.

    PNG and PDF metadata dates are dropped so that reruns give identical files.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    buf = io.BytesIO()
    metadata_ = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None}}.get(fmt)
    fig.savefig(buf, format=fmt, metadata=metadata_, **kwargs)
    return atomic_write(path, buf.getvalue())


def markdown_cell(value):
    """``value`` as text for a markdown table cell: ``|`` escaped (``\\|``) and line breaks as spaces, so that a
    GitHub-flavoured markdown parser sees one cell (an unescaped pipe would split it, and a header with more
    cells than the delimiter row is no table at all)."""
    return " ".join(str(value).splitlines()).replace("|", "\\|")


def markdown_table(frame, **kwargs):
    """A DataFrame as a GitHub-flavoured markdown table (``DataFrame.to_markdown``, no index), every header
    and string cell passed through ``markdown_cell``; ``kwargs`` go to ``to_markdown`` (e.g. ``floatfmt``)."""
    frame = frame.rename(columns=markdown_cell)
    frame = frame.map(lambda v: markdown_cell(v) if isinstance(v, str) else v)
    return frame.to_markdown(index=False, **kwargs)


def cpu_markdown_table(frame, columns, cpu, floatfmt=".3g"):
    """``markdown_table`` of ``frame[columns]`` under a line naming the CPU the numbers were measured on."""
    return f"CPU: {cpu}\n\n" + markdown_table(frame[columns], floatfmt=floatfmt) + "\n"


def check_writable_folder(path):
    """Raise ``ValueError`` (one line, starting with ``path``) unless ``path`` is a folder that exists and can be
    written, or can be created: checked before any work, by creating and removing a temporary folder in it or in
    its nearest existing parent, so that nothing is left behind either way."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    try:
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is not a folder")
        tempfile.TemporaryDirectory(dir=parent, prefix=".xnorpp-check-").cleanup()
    except OSError as e:
        raise ValueError(f"{path}: cannot write there ({e.strerror or e})") from None


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format is a zip archive


def read_bytes(path, what="file", size=-1):
    """The first ``size`` bytes of the file ``path`` (all with -1); ``ValueError`` with one line naming ``what``
    and ``path`` when it is missing, a folder or unreadable."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a file")
    if not path.exists():
        raise ValueError(f"{what} {path} does not exist")
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror}") from None


def read_torch_file(path, what="file"):
    """The object ``torch.save`` wrote to ``path``, loaded with ``weights_only=True`` on the CPU; ``ValueError``
    with one line naming ``what`` and ``path`` and the cause (missing, a folder, empty, not a PyTorch file,
    truncated or damaged) otherwise."""
    start = read_bytes(path, what, len(ZIP_MAGIC))
    if not start:
        raise ValueError(f"{what} {path} is empty")
    if start != ZIP_MAGIC:
        raise ValueError(f"{what} {path} is not a PyTorch file (it does not start as torch.save writes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch's reader and unpickler raise many kinds
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{what} {path} is truncated or damaged ({type(e).__name__}: {first})") from None

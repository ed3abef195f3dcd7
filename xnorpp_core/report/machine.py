"""One line naming the machine a result was measured on, from the environment record of its run.

The record is ``xnorpp_core.provenance.environment()`` as saved in ``run.json`` /
``summary.json``: CPU model (and, where recorded, vendor, family/model numbers and
the vector extensions that matter here), GPU, thread count, versions. Missing keys
are left out of the line, so older records still read.
"""

import re

__all__ = ["machine_label", "cpu_label", "short_label", "KEY_ISA"]

# The extensions named in the line: the widest float SIMD, the popcount the packed kernel uses, AMX.
KEY_ISA = ("avx2", "avx512f", "avx512_vpopcntdq", "amx_tile", "sve")


def cpu_label(env):
    """``Intel(R) Xeon(R) Processor (GenuineIntel family 6 model 207; avx2 avx512f ...)``, or the model name only."""
    name = env.get("cpu") or "unknown CPU"
    details = env.get("cpu_details") or {}
    parts = []
    if details.get("family") is not None:
        parts.append(f"{details.get('vendor') or ''} family {details['family']} model {details.get('model')}".strip())
    isa = [f for f in KEY_ISA if f in (details.get("isa") or ())]
    if isa:
        parts.append(" ".join(isa))
    return f"{name} ({'; '.join(parts)})" if parts else name


def machine_label(env, threads=None):
    """The machine of a result in one line: CPU or GPU, threads, torch and Python versions.

    ``threads`` overrides the record's ``torch_threads``: a count, or a phrase such as ``"1 and 2"``
    for benchmarks that vary it per row.
    """
    if not env:
        return "an unrecorded machine"
    device = str(env.get("device", "cpu"))
    where = cpu_label(env)
    if env.get("gpu"):
        where = f"GPU {env['gpu']} (CUDA {env.get('cuda')}), host CPU {where}"
    threads = env.get("torch_threads") if threads is None else threads
    cores = env.get("cpu_count")
    parts = [where]
    if threads is not None and not device.startswith("cuda"):
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}" + (f" of {cores} cores" if cores else ""))
    versions = env.get("versions") or {}
    software = [f"torch {versions['torch']}"] if versions.get("torch") else []
    if env.get("python"):
        software.append(f"Python {env['python']}")
    return ", ".join(parts + software)


def short_label(label):
    """A ``machine_label`` without the CPU's details, the host CPU and Python: for narrow tables."""
    label = re.sub(r" \([^()]*\)", "", label)
    label = re.sub(r", host CPU [^,]*", "", label)
    return re.sub(r", Python [0-9.]+", "", label)

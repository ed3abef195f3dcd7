"""Timing rounds and speed-ups: the protocol every inference benchmark of the toolkit follows.

A form's name starts with its precision: ``fp32_*``, ``bf16_*`` or ``int8_*`` (``precision_of``); the
binary forms (``packed_*``, ``emulated_*``) have none. Models are timed one call at a time, interleaved
round by round in one process, each round in a rotated order (``time_interleaved``), each given the input
in the memory format it runs in, converted before the clock starts (``channels_last_input``), with Python's
garbage collector off during a round and collecting between rounds (``no_garbage_collection``).

``fastest_per_precision`` and ``speedups`` turn a timing table into the fastest form of each precision
per setting (chosen per statistic: fastest call and median call separately) and into the speed-up of
another network (the packed binary one) over each.
"""

import contextlib
import gc
import math
import time

import pandas as pd
import torch

__all__ = ["PRECISIONS", "precision_of", "channels_last_input", "no_garbage_collection", "time_round",
           "time_interleaved", "fastest_per_precision", "speedups"]

PRECISIONS = ("fp32", "bf16", "int8")


def precision_of(name):
    """``fp32``, ``bf16`` or ``int8`` from a form's name (its first word), else ``None``."""
    head = str(name).split("_", 1)[0]
    return head if head in PRECISIONS else None


def channels_last_input(name):
    """Whether a model of this name is given its input channels-last (the folded, compiled and packed forms
    run in it); the eager and int8 forms get the input as it comes (contiguous)."""
    return any(w in name for w in ("folded", "compiled", "packed"))


@contextlib.contextmanager
def no_garbage_collection():
    """Python's garbage collector collects first, then stays off until the block ends (and is restored as it
    was): a collection is never timed, and never charged to whichever form happens to allocate when one is
    due (``timeit``'s convention)."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_round(models, x, order, times):
    """One round: each model of ``order`` called once on ``x`` (in the memory format it runs in, converted before
    the clock starts), its seconds appended to ``times[name]``; the garbage collector off
    (``no_garbage_collection``)."""
    with no_garbage_collection():
        for name in order:
            x_in = x.contiguous(memory_format=torch.channels_last) if channels_last_input(name) else x
            t0 = time.perf_counter()
            models[name](x_in)
            times[name].append(time.perf_counter() - t0)


def time_interleaved(models, x, repeats, warmup=2):
    """``{name: [seconds]}``: ``warmup`` untimed calls of each model, then ``repeats`` rounds of one call per
    model, each round in a rotated order; under ``torch.inference_mode``."""
    names, times = list(models), {name: [] for name in models}
    with torch.inference_mode():
        for name in names:
            for _ in range(warmup):
                time_round(models, x, [name], {name: []})
        for r in range(repeats):
            time_round(models, x, names[r % len(names):] + names[:r % len(names)], times)
    return times


def fastest_per_precision(timing):
    """Per setting (threads, batch) and precision, the fastest form by each statistic.

    ``timing`` has columns ``model, threads, batch, ms, median_ms`` (``ms`` the fastest call); rows whose
    model has no precision (``precision_of``) are ignored. Returns one row per (threads, batch, precision)
    present: ``fastest`` and ``fastest_ms`` (the form with the least fastest call, and that call),
    ``fastest_median`` and ``fastest_median_ms`` (the form with the least median, and that median)."""
    t = timing.assign(precision=timing["model"].map(precision_of)).dropna(subset=["precision"])
    rows = []
    for (threads, batch, precision), part in t.groupby(["threads", "batch", "precision"], sort=False):
        by_min, by_median = part.loc[part["ms"].idxmin()], part.loc[part["median_ms"].idxmin()]
        rows.append({"threads": threads, "batch": batch, "precision": precision,
                     "fastest": by_min["model"], "fastest_ms": float(by_min["ms"]),
                     "fastest_median": by_median["model"], "fastest_median_ms": float(by_median["median_ms"])})
    return pd.DataFrame(rows, columns=["threads", "batch", "precision", "fastest", "fastest_ms", "fastest_median",
                                       "fastest_median_ms"])


def speedups(timing, name):
    """Per setting, the speed-up of model ``name`` over the fastest form of each precision, median call first.

    One row per (threads, batch) where ``name`` was timed: ``model, threads, batch, ms, median_ms`` of
    ``name``, then for each precision ``p`` of ``PRECISIONS``: ``fastest_<p>_median``,
    ``fastest_<p>_median_ms``, ``speedup_vs_<p>_median`` (the fastest median over ``name``'s median),
    ``fastest_<p>``, ``fastest_<p>_ms``, ``speedup_vs_<p>`` (the fastest call over ``name``'s fastest
    call); NaN / empty where no form of ``p`` was timed in that setting."""
    best = fastest_per_precision(timing).set_index(["threads", "batch", "precision"])
    rows = []
    for _, r in timing[timing["model"] == name].iterrows():
        row = {"model": name, "threads": r["threads"], "batch": r["batch"], "ms": float(r["ms"]),
               "median_ms": float(r["median_ms"])}
        for p in PRECISIONS:
            key = (r["threads"], r["batch"], p)
            b = best.loc[key] if key in best.index else None
            row[f"fastest_{p}_median"] = b["fastest_median"] if b is not None else ""
            row[f"fastest_{p}_median_ms"] = b["fastest_median_ms"] if b is not None else math.nan
            row[f"speedup_vs_{p}_median"] = row[f"fastest_{p}_median_ms"] / row["median_ms"]
            row[f"fastest_{p}"] = b["fastest"] if b is not None else ""
            row[f"fastest_{p}_ms"] = b["fastest_ms"] if b is not None else math.nan
            row[f"speedup_vs_{p}"] = row[f"fastest_{p}_ms"] / row["ms"]
        rows.append(row)
    return pd.DataFrame(rows)

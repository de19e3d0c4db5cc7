"""The benchmark's output: the Markdown table rows, the scaling table, the JSON file."""

from __future__ import annotations

import json

__all__ = ["fmt", "table_header", "format_row", "scaling_table", "write_json"]


def fmt(v, ratio=False):
    if v is None:
        return "-"
    return f"{v:.2f}x" if ratio else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def table_header(with_numpy, with_torch):
    cols = ["op", "dtype", "pass", "algorithm", "cython ms"]
    if with_numpy:
        cols.append("numpy ms")
    if with_torch:
        cols.append("torch ms")
    if with_torch:
        cols.append("torch/cy")
    if with_numpy:
        cols.append("numpy/cy")
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def format_row(res, with_numpy, with_torch):
    lines = []
    for p, label in (("fwd", "fwd"), ("fwdbwd", "fwd+bwd")):
        cells = [res["op"], res["dtype"], label, res.get("algorithm") or "-",
                 fmt(res[f"cython_{p}_ms"])]
        if with_numpy:
            cells.append(fmt(res.get(f"numpy_{p}_ms")))
        if with_torch:
            cells.append(fmt(res.get(f"torch_{p}_ms")))
            cells.append(fmt(res.get(f"torch_over_cython_{p}"), True))
        if with_numpy:
            cells.append(fmt(res.get(f"numpy_over_cython_{p}"), True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scaling_table(ops, dtypes, threads_list, results):
    """The lines of the ``--scaling`` table: cython fwd+bwd ms by thread count."""
    lines = ["\n## scaling: cython fwd+bwd ms by thread count\n",
             "| op | dtype | " + " | ".join(f"{t} thr" for t in threads_list) + " |",
             "|---|---|" + "---|" * len(threads_list)]
    for op in ops:
        for dtype in dtypes:
            cells = []
            for t in threads_list:
                r = [r for r in results if r["op"] == op[0] and r["dtype"] == dtype
                     and r["threads"] == t]
                cells.append(fmt(r[0]["cython_fwdbwd_ms"]) if r else "-")
            lines.append(f"| {op[0]} | {dtype} | " + " | ".join(cells) + " |")
    return lines


def write_json(path, meta, results):
    """Write ``{"meta": meta, "results": results}`` to ``path`` (``--json``)."""
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)

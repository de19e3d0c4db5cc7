"""Summarise several ``cyconv bench --json`` runs as one Markdown table.

    python tools/bench_table.py run1.json run2.json run3.json

For every op and dtype: the algorithm, and the torch/cyconv ratio of the
forward and of forward+backward as the median of the runs followed by each
run's value, so the spread is visible next to the figure that is quoted.
"""

import json
import statistics
import sys


def load(paths):
    runs = [json.load(open(path)) for path in paths]
    rows = {}
    for run in runs:
        for row in run["results"]:
            rows.setdefault((row["op"], row["dtype"]), []).append(row)
    return runs, rows


def ratio_cell(rows, key):
    values = [row[key] for row in rows if row.get(key) is not None]
    if not values:
        return "-"
    runs = ", ".join(f"{v:.2f}" for v in values)
    return f"**{statistics.median(values):.2f}x** ({runs})"


def main(paths):
    runs, rows = load(paths)
    for path, run in zip(paths, runs):
        header = [line for line in run["meta"].get("header", [])
                  if line.startswith(("CPU:", "load average"))]
        print(f"<!-- {path}: {'; '.join(header)} -->")
    print("| op | dtype | algorithm | fwd torch/cy | fwd+bwd torch/cy |")
    print("|---|---|---|---|---|")
    for (op, dtype), group in rows.items():
        print(f"| {op} | {dtype} | {group[0].get('algorithm', '-')} "
              f"| {ratio_cell(group, 'torch_over_cython_fwd')} "
              f"| {ratio_cell(group, 'torch_over_cython_fwdbwd')} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))

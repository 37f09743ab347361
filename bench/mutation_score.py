"""Reads ``mutmut results --all true`` on stdin; prints the share of killed mutants per module.

Only the mutants bench/mutation.sh runs are counted (the others are listed as "not checked").
A timeout counts as killed: the mutant made the tests hang.
"""

import collections
import re
import sys

# The modules bench/mutation.sh mutates, at their paths in the package's layers.
SELECTED = re.compile(
    r"ser_adv_brain\.(attacks|objectives|features|metrics|training\.checkpoints|evaluation\.intervals)\."
    r"|ser_adv_brain\.audio\.loading\.x_fix_length_"
    r"|ser_adv_brain\.data\.manifests\.x_(split_sizes|largest_remainder|speaker_independent_split)_"
)


def module(name):
    """The table's row for a mutant: ``attacks``, ``checkpoints``, ``intervals``, ``audio.fix_length``,
    ``manifests.split_sizes``..."""
    parts = name.split(".")
    function = parts[-1].split("__mutmut")[0][2:]  # x_split_sizes__mutmut_35 -> split_sizes
    if parts[1] == "audio":
        return f"audio.{function}"
    if parts[1] == "data":
        return f"manifests.{function}"
    return parts[2] if parts[1] in ("training", "evaluation") else parts[1]


counts = collections.defaultdict(collections.Counter)
for line in sys.stdin:
    match = re.match(r"\s*(\S+): (.+)$", line)
    if match and SELECTED.match(match.group(1)):
        counts[module(match.group(1))][match.group(2).strip()] += 1
for name, count in sorted(counts.items()):
    total, killed = sum(count.values()), count["killed"] + count["timeout"]
    others = ", ".join(f"{n} {status}" for status, n in sorted(count.items()) if status not in ("killed", "timeout"))
    print(f"{name:40s} {killed:4d} / {total:4d} killed ({100 * killed / total:5.1f}%)  {others}")

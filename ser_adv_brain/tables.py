"""Tables for every report: markdown through ``tabulate``, CSV through the standard library, in one place each."""

import csv
import os

from tabulate import tabulate


def markdown_table(rows, headers):
    """A GitHub-flavoured markdown table of ``rows`` (lists of cells, written as given: no number parsing).

    Example
    -------
    >>> print(markdown_table([["single", ".500"]], ["training", "UAR"]))
    | training   | UAR   |
    |------------|-------|
    | single     | .500  |
    """
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def uar_text(value):
    """``.614``: a UAR as the reports write it (three decimals, no leading zero)."""
    return f"{value:.3f}".replace("0.", ".", 1)


def write_csv(path, rows, fields=None):
    """Writes dict ``rows`` as CSV with the columns ``fields`` (default: the first row's keys); returns the path."""
    fields = fields or (list(rows[0]) if rows else [])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path):
    """The rows of a CSV file as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))

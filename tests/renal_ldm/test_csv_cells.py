"""Every CSV cell a spreadsheet could evaluate is neutralised; numbers and plain text stay as they are."""

from __future__ import annotations

import csv
import io

import pytest

from renal_ldm.csv_cells import csv_text, neutralise_cell, restore_cell


@pytest.mark.parametrize("value", ['=HYPERLINK("x")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\r=1", "-", "="])
def test_formula_text_gets_an_apostrophe_and_reads_back(value):
    safe = neutralise_cell(value)
    assert safe == "'" + value
    assert restore_cell(safe) == value


@pytest.mark.parametrize("value", ["-0.25", "+3", "-1e-3", 4, -0.5, None, "plain", "a=b", "'quoted"])
def test_numbers_and_plain_text_are_unchanged(value):
    assert neutralise_cell(value) == value
    if isinstance(value, str):
        assert restore_cell(value) == value


def test_csv_text_neutralises_header_and_cells():
    text = csv_text(["name", "=bad header"], [['=HYPERLINK("x")', -0.5], ["ok", "@me"]])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["name", "'=bad header"], ['\'=HYPERLINK("x")', "-0.5"], ["ok", "'@me"]]

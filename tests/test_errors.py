"""sgeo.errors.one_line: the one way an error's text is put on one line inside sgeo's own messages."""

from __future__ import annotations

from sgeo.errors import one_line


def test_one_line_collapses_or_keeps_the_first_line_cuts_and_names_an_empty_exception():
    assert one_line("cannot\n  read\tit ") == "cannot read it"
    assert one_line(ValueError("bad\n  value"), 6) == "bad va"
    assert one_line(RuntimeError("\n  first line  \ntraceback ...\n"), first=True) == "first line"
    assert one_line("x" * 10, 6, ellipsis=True) == "xxx..."
    assert one_line(KeyError()) == "KeyError" and one_line(str(KeyError())) == ""

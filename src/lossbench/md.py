"""How a name or a number from the data is written into a Markdown report:
as literal text (`md`), and a seed mean ± sd as every report writes it."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from lossbench.errors import printable_lines

# Characters Markdown gives a meaning to anywhere in a line (emphasis, code,
# links, tables, strikethrough, math; '#': GitHub's issue links).
_MARKDOWN = re.compile(r"[\\`*\[\]|~$#]|(?<![^\W_])_|_(?![^\W_])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md(name: object) -> str:
    """A name from the data (class, loss label, experiment, path) as literal
    Markdown text: no HTML, links, emphasis or table cells can come from it.
    Plain names come out unchanged (an '_' inside a word is left as it is:
    Markdown does not read it as emphasis)."""
    text = printable_lines(str(name)).replace("\n", "\\n")
    text = _MARKDOWN.sub(lambda match: "\\" + match.group(), text)
    return "".join(_HTML.get(character, character) for character in text)


def plus_minus(mean: float, sd: float, digits: int = 4) -> str:
    """'0.5506 ± 0.0312': a seed mean and its standard deviation, as every report writes them."""
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown_names(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy of `table` whose named columns (names from the data) are `md`-escaped."""
    return table.assign(
        **{column: [md(value) for value in table[column]] for column in columns if column in table}
    )

"""Chunking: Python by syntax unit with qualified names and exact spans, text by token windows
with overlap."""

from __future__ import annotations

import re

from quark.retrieve.chunks import Chunk, chunk_document, module_name

SOURCE = '''"""A module about shapes."""

import math

SIDES = 4


class Square:
    """A square of a given side."""

    unit = "cm"

    def __init__(self, side):
        self.side = side

    @property
    def area(self):
        """Return the area."""
        return self.side**2


def diagonal(square):
    """Return the diagonal of a square."""
    def helper(x):
        return math.sqrt(2) * x
    return helper(square.side)
'''


def words(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", text)]


def test_python_sources_are_cut_by_syntax_unit_with_qualified_names_and_spans() -> None:
    chunks = chunk_document("geometry/shapes.py", SOURCE, words, window=200, overlap=10)
    by_name = {c.name: c for c in chunks}
    assert [c.kind for c in chunks] == [
        "module",
        "class",
        "function",
        "function",
        "function",
        "function",
    ]
    assert list(by_name) == [
        "geometry.shapes",
        "geometry.shapes.Square",
        "geometry.shapes.Square.__init__",
        "geometry.shapes.Square.area",
        "geometry.shapes.diagonal",
        "geometry.shapes.diagonal.helper",
    ]
    # a function is a slice of the document, decorators included, with its lines
    area = by_name["geometry.shapes.Square.area"]
    assert SOURCE[area.start_char : area.end_char] == area.text
    assert area.text.lstrip().startswith("@property") and (area.start_line, area.end_line) == (
        16,
        19,
    )
    # the class and module outlines leave their methods to their own chunks (headers stay)
    square = by_name["geometry.shapes.Square"]
    assert "unit = " in square.text and "def area(self): ..." in square.text
    assert "self.side**2" not in square.text and (square.start_line, square.end_line) == (8, 19)
    module = by_name["geometry.shapes"]
    assert "import math" in module.text and "class Square: ..." in module.text
    assert "return helper" not in module.text
    assert all(len(c.sha256) == 64 for c in chunks)
    assert area.title == "function geometry.shapes.Square.area (geometry/shapes.py:16)"


def test_long_units_and_text_are_cut_into_overlapping_windows() -> None:
    text = "\n".join(f"word{i}" for i in range(100))
    chunks = chunk_document("notes.txt", text, words, window=30, overlap=5)
    assert [c.kind for c in chunks] == ["text"] * 4
    firsts = [c.text.split()[0] for c in chunks]
    assert firsts == ["word0", "word25", "word50", "word75"]
    assert chunks[0].text.split()[-1] == "word29"  # windows share 5 words
    for chunk in chunks:
        assert text[chunk.start_char : chunk.end_char] == chunk.text
        assert chunk.start_line == int(chunk.text.split()[0][4:]) + 1
    long_function = "def f():\n" + "".join(f"    x{i} = {i}\n" for i in range(60))
    pieces = chunk_document("m.py", long_function, words, window=40, overlap=4)
    assert {c.name for c in pieces} == {"m", "m.f"}  # the module outline: "def f(): ..."
    assert len([c for c in pieces if c.name == "m.f"]) == 5  # 181 words


def test_a_file_that_does_not_parse_is_chunked_as_text_and_chunks_round_trip() -> None:
    chunks = chunk_document("broken.py", "def f(:\n    pass\n", words, window=50, overlap=5)
    assert [c.kind for c in chunks] == ["text"]
    assert Chunk.from_json(chunks[0].to_json()) == chunks[0]
    assert module_name("email/__init__.py") == "email"
    assert module_name("json/decoder.py") == "json.decoder"


def test_lines_are_counted_as_ast_counts_them() -> None:
    # a form feed is a line break to str.splitlines, not to ast
    source = "x = 1\n\x0c\ndef f():\n    return 1\n"
    by_name = {c.name: c for c in chunk_document("m.py", source, words, 100, 10)}
    assert by_name["m.f"].text == "def f():\n    return 1\n"
    assert (by_name["m.f"].start_line, by_name["m.f"].end_line) == (3, 4)


def test_a_file_on_disk_is_named_from_its_package_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    package = tmp_path / "src" / "shop" / "sub"
    package.mkdir(parents=True)
    for directory in (package, package.parent):
        (directory / "__init__.py").write_text("")
    (package / "m.py").write_text("")
    assert module_name(str(package / "m.py")) == "shop.sub.m"
    assert module_name(str(package / "__init__.py")) == "shop.sub"

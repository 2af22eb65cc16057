"""Documents cut into the chunks an index holds: Python sources by syntax unit, other text
by token windows with overlap. Every chunk keeps its source path, line and character span,
and the sha256 of its text, so an answer can cite it and an index can tell new from known.

Python units (`ast`): the module (its docstring and top-level statements other than classes
and functions), each class (its header, docstring and class-level statements, methods left to
their own chunks) and each function or method, named by qualified name
(`json.decoder.JSONDecoder.decode`). A unit longer than the window is cut into windows too,
each keeping the unit's name. A file that does not parse is chunked as text.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# token counts of a text: the embedder's tokenizer, so that a window fits what it reads
CountTokens = Callable[[str], list[tuple[int, int]]]


@dataclass(frozen=True)
class Chunk:
    """One retrievable piece of a document."""

    path: str  # the document's id: a file path, or source:line for jsonl records
    kind: str  # module | class | function | text
    name: str  # qualified name of a Python unit; the path for text
    start_line: int  # 1-based, inclusive
    end_line: int
    start_char: int  # offsets into the document's text
    end_char: int
    text: str
    sha256: str

    @property
    def title(self) -> str:
        """What the chunk is, read before its text by the embedder and shown with answers."""
        if self.kind == "text":
            return f"{self.path}:{self.start_line}-{self.end_line}"
        return f"{self.kind} {self.name} ({self.path}:{self.start_line})"

    def embedded_text(self) -> str:
        return f"{self.title}\n{self.text}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Chunk:
        return cls(**{name: record[name] for name in cls.__dataclass_fields__})


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# what ast counts as a line end; str.splitlines also splits at form feeds and other separators
LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def source_lines(text: str) -> list[str]:
    """`text`'s lines with their ends, as ast numbers them."""
    return LINE.findall(text)


def module_name(path: str) -> str:
    """The dotted module a source path names: json/decoder.py -> json.decoder,
    email/__init__.py -> email. A file on disk is named from its package root (the first
    directory up without __init__.py): /src/pkg/m.py -> pkg.m, so absolute imports resolve."""
    location = Path(path)
    if location.is_file():
        parent = location.parent
        while (parent / "__init__.py").is_file() and parent.parent != parent:
            parent = parent.parent
        path = str(location.relative_to(parent))
    parts = path.replace("\\", "/").removesuffix(".py").split("/")
    parts = [part for part in parts if part not in ("", ".", "..")]
    if parts and parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def chunk_document(
    path: str, text: str, count_tokens: CountTokens, window: int, overlap: int
) -> list[Chunk]:
    """The chunks of one document: syntax units for Python (a path ending .py that parses),
    token windows otherwise."""
    if path.endswith(".py"):
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            tree = None
        if tree is not None:
            return list(_python_chunks(path, text, tree, count_tokens, window, overlap))
    return list(_windows(path, "text", path, text, 0, text, count_tokens, window, overlap))


def _python_chunks(
    path: str,
    text: str,
    tree: ast.Module,
    count_tokens: CountTokens,
    window: int,
    overlap: int,
) -> Iterator[Chunk]:
    lines = source_lines(text)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    module = module_name(path)

    def span(first: int, last: int) -> tuple[int, str]:
        """(character offset, text) of lines first..last (1-based, inclusive)."""
        return starts[first - 1], "".join(lines[first - 1 : last])

    def own_lines(body: Sequence[ast.stmt], first: int, last: int) -> str:
        """Lines first..last less the nested classes and functions (they are chunks of
        their own), each replaced by its header line, so the outline stays readable."""
        nested = [
            node
            for node in body
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        kept, line = [], first
        for node in nested:
            begin = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            kept.append("".join(lines[line - 1 : begin - 1]))
            kept.append(lines[node.lineno - 1].rstrip("\n") + " ...\n")
            line = (node.end_lineno or node.lineno) + 1
        kept.append("".join(lines[line - 1 : last]))
        return "".join(kept)

    # the module: its docstring, imports and top-level statements
    outline = own_lines(tree.body, 1, len(lines))
    if outline.strip():
        yield from _windows(
            path, "module", module, outline, 0, text, count_tokens, window, overlap,
            outline=(1, len(lines)),
        )  # fmt: skip

    def units(body: Sequence[ast.stmt], prefix: str) -> Iterator[Chunk]:
        for node in body:
            if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            name = f"{prefix}.{node.name}"
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            last = node.end_lineno or node.lineno
            offset, source = span(first, last)
            if isinstance(node, ast.ClassDef):
                source = own_lines(node.body, first, last)
                yield from _windows(
                    path, "class", name, source, offset, text, count_tokens, window, overlap,
                    outline=(first, last),
                )  # fmt: skip
                yield from units(node.body, name)
            else:
                yield from _windows(
                    path, "function", name, source, offset, text, count_tokens, window, overlap
                )
                yield from units(node.body, name)  # nested functions and classes

    yield from units(tree.body, module)


def _windows(
    path: str,
    kind: str,
    name: str,
    source: str,
    offset: int,
    document: str,
    count_tokens: CountTokens,
    window: int,
    overlap: int,
    outline: tuple[int, int] | None = None,
) -> Iterator[Chunk]:
    """`source` (found at `offset` in `document`) as one chunk, or as windows of `window`
    tokens overlapping by `overlap` when it is longer. An `outline` (a module or class with
    its nested units cut out) is no slice of the document: its windows carry the unit's
    whole line span, `outline`, and character span."""
    if not source.strip():
        return
    spans = count_tokens(source)
    if len(spans) <= window:
        pieces = [(0, len(source))]
    else:
        step = max(window - overlap, 1)
        pieces = []
        for begin in range(0, len(spans), step):
            end = min(begin + window, len(spans))
            pieces.append((spans[begin][0], spans[end - 1][1]))
            if end == len(spans):
                break
    base_line = document.count("\n", 0, offset) + 1
    for begin, end in pieces:
        piece = source[begin:end]
        if not piece.strip():
            continue
        if outline is None:
            start_line = base_line + source.count("\n", 0, begin)
            end_line = start_line + piece.rstrip("\n").count("\n")
            chars = (offset + begin, offset + end)
        else:
            start_line, end_line = outline
            chars = (offset, _line_end(document, end_line))
        yield Chunk(
            path=path,
            kind=kind,
            name=name,
            start_line=start_line,
            end_line=end_line,
            start_char=chars[0],
            end_char=chars[1],
            text=piece,
            sha256=text_sha256(piece),
        )


def _line_end(document: str, line: int) -> int:
    """The character offset just past line `line` (1-based) of `document`."""
    position = -1
    for _ in range(line):
        position = document.find("\n", position + 1)
        if position < 0:
            return len(document)
    return position + 1

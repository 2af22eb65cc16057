"""A retrieval question set made from the corpus itself, and the ranking metrics.

Two kinds of question, each with known answers:
- `docstring`: each documented class or function gives one, its docstring's first sentence
  paraphrased ("Return the JSON encoding of o." -> "Which function gives back the JSON
  encoding of o?"); the answer is that unit. A sentence shared by two units, or naming the unit
  itself, makes no question (no single right answer, or a giveaway).
- `relation`: a unit named in the question, asked about through the graph's edges ("What does
  `JSONDecoder.decode` call?", "Which class does `JSONDecodeError` inherit from?"); the answers
  are the units at the other end, which share few words with the question.

Questions are split val/test by a hash of the unit asked about, so the test questions never
tune anything (the fusion constant and graph weight are picked on val).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx

MIN_WORDS = 4
# imperative openings of docstrings (PEP 257's "Return the..."), and the words a question
# uses instead, so that a question is not the docstring's own words: BM25 cannot match the
# verb, and the embedder must know the two mean the same
VERBS = {
    "return": "give back", "returns": "give back", "get": "fetch", "gets": "fetch",
    "create": "make", "creates": "make", "make": "build", "makes": "build",
    "convert": "turn", "converts": "turn", "remove": "delete", "removes": "delete",
    "delete": "remove", "deletes": "remove", "check": "test", "checks": "test",
    "test": "check", "tests": "check", "add": "append", "adds": "append",
    "compute": "calculate", "computes": "calculate", "calculate": "compute",
    "calculates": "compute", "find": "look up", "finds": "look up", "read": "load",
    "reads": "load", "write": "save", "writes": "save", "parse": "interpret",
    "parses": "interpret", "set": "assign", "sets": "assign", "build": "construct",
    "builds": "construct", "construct": "build", "constructs": "build", "copy": "duplicate",
    "copies": "duplicate", "open": "open up", "opens": "open up", "close": "shut",
    "closes": "shut", "handle": "deal with", "handles": "deal with", "update": "refresh",
    "updates": "refresh", "generate": "produce", "generates": "produce", "format": "render",
    "formats": "render", "split": "break up", "splits": "break up", "raise": "throw",
    "raises": "throw", "initialize": "set up", "initializes": "set up", "initialise": "set up",
    "print": "output", "prints": "output", "encode": "serialize", "encodes": "serialize",
    "decode": "deserialize", "decodes": "deserialize", "compare": "match up",
    "compares": "match up", "register": "record", "registers": "record", "determine": "decide",
    "determines": "decide", "extract": "pull out", "extracts": "pull out", "call": "invoke",
    "calls": "invoke", "run": "execute", "runs": "execute", "process": "handle",
    "processes": "handle", "insert": "put", "inserts": "put",
    "clear": "empty", "clears": "empty", "wrap": "enclose", "wraps": "enclose",
}  # fmt: skip


# relation questions ask about units with at most this many answers
MAX_ANSWERS = 3


@dataclass(frozen=True)
class Question:
    question: str
    answers: tuple[str, ...]  # qualified names of the units that answer it
    chunks: tuple[tuple[int, ...], ...]  # each answer's chunk ids: any of them found finds it
    split: str
    kind: str = "docstring"  # docstring | relation

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def corpus_questions(graph: nx.MultiDiGraph, val_fraction: float = 0.5) -> list[Question]:
    """Docstring questions, then relation questions, each in name order."""
    return _docstring_questions(graph, val_fraction) + _relation_questions(graph, val_fraction)


def _docstring_questions(graph: nx.MultiDiGraph, val_fraction: float) -> list[Question]:
    sentences = Counter(
        data["doc"].lower()
        for _, data in graph.nodes(data=True)
        if data.get("kind") in ("class", "function") and data.get("doc")
    )
    questions = []
    for name, data in sorted(graph.nodes(data=True)):
        sentence = str(data.get("doc") or "")
        if data.get("kind") not in ("class", "function") or not data.get("chunks"):
            continue
        short = name.rsplit(".", 1)[-1]
        if (
            len(sentence.split()) < MIN_WORDS
            or sentences[sentence.lower()] > 1
            or re.search(rf"\b{re.escape(short)}\b", sentence)
        ):
            continue
        question = as_question(sentence, str(data["kind"]))
        split = split_of(name, val_fraction)
        questions.append(Question(question, (name,), (tuple(data["chunks"]),), split))
    return questions


def _relation_questions(graph: nx.MultiDiGraph, val_fraction: float) -> list[Question]:
    """'What does `Owner.name` call?' and 'Which class does `Name` inherit from?', for units
    whose answers (at most MAX_ANSWERS, all holding chunks) are in the corpus."""
    asks = {"calls": "What does `{}` call?", "inherits": "Which class does `{}` inherit from?"}
    questions = []
    for name, data in sorted(graph.nodes(data=True)):
        if data.get("kind") not in ("class", "function") or not data.get("chunks"):
            continue
        for relation, template in asks.items():
            targets = sorted(
                {
                    other
                    for _, other, edge in graph.out_edges(name, data=True)
                    if edge["type"] == relation and graph.nodes[other].get("chunks")
                }
            )
            if not 0 < len(targets) <= MAX_ANSWERS:
                continue
            mention = ".".join(name.split(".")[-2:])  # Owner.name: how a user would write it
            questions.append(
                Question(
                    template.format(mention),
                    tuple(targets),
                    tuple(tuple(graph.nodes[t]["chunks"]) for t in targets),
                    split_of(name, val_fraction),
                    "relation",
                )
            )
    return questions


def split_of(name: str, val_fraction: float) -> str:
    """val or test, by a hash of the unit asked about."""
    draw = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if draw < val_fraction else "test"


def as_question(sentence: str, kind: str) -> str:
    """'Return the x.' -> 'Which function gives back the x?' (the verb in other words);
    'A parser for x.' -> 'Which class is a parser for x?'; a description otherwise."""
    words = sentence.rstrip(".!?").split()
    first, rest = words[0].lower(), " ".join(words[1:])
    if first in VERBS:
        verb, _, particle = VERBS[first].partition(" ")
        said = " ".join(part for part in (third_person(verb), particle) if part)
        return f"Which {kind} {said} {rest}?"
    if first in ("a", "an"):
        return f"Which {kind} is {first} {rest}?"
    return f"Which {kind} is described as: {sentence.rstrip('.!?')}?"


def third_person(verb: str) -> str:
    """give -> gives, fetch -> fetches, copy -> copies."""
    if verb.endswith(("ss", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and len(verb) > 1 and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def ranking_metrics(
    ranked: Sequence[Sequence[int]], questions: Sequence[Question], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Means over `questions` (ranked[i] answering questions[i]) of recall@k (the share of a
    question's answers with a chunk in the first k), MRR@10 (1 / rank of the first answer
    found) and nDCG@10 (each answer relevant once, at its best-ranked chunk)."""
    if not questions:
        return {}
    totals: dict[str, float] = {f"recall@{k}": 0.0 for k in ks} | {"mrr@10": 0.0, "ndcg@10": 0.0}
    for found, question in zip(ranked, questions, strict=True):
        first: dict[int, int] = {}  # answer -> the rank of its best chunk
        for position, chunk in enumerate(found):
            for answer, chunks in enumerate(question.chunks):
                if chunk in chunks and answer not in first:
                    first[answer] = position
        answers = len(question.chunks)
        for k in ks:
            totals[f"recall@{k}"] += sum(p < k for p in first.values()) / answers
        best = min(first.values(), default=None)
        if best is not None and best < 10:
            totals["mrr@10"] += 1.0 / (best + 1)
        gain = sum(1.0 / math.log2(p + 2) for p in first.values() if p < 10)
        ideal = sum(1.0 / math.log2(p + 2) for p in range(min(answers, 10)))
        totals["ndcg@10"] += gain / ideal
    return {name: value / len(questions) for name, value in totals.items()}

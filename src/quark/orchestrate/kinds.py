"""Labelled user requests of four kinds, each with a known answer, generated offline.

They train the gateway's request-kind classifier and make its mixed evaluation workload:
- `arithmetic`: expressions of `quark.data.tasks` in varied phrasings; the answer is the value.
- `code`: the start of a real Python function (signature, docstring, first body lines) to
  continue; the answer is the next line of the body.
- `docs`: retrieval questions about the same sources (`quark.retrieve.questions`): a docstring's
  first sentence paraphrased ("Which function gives back the JSON encoding of o?"), then
  relation questions with a single answer ("What does `JSONDecoder.decode` call?"); the answer
  is the qualified name of the unit that answers it.
- `smalltalk`: greetings, thanks, plans, jokes... from many templates and slot lists, so that
  no handful of strings can be memorised; nothing to score.

Code and docs come from Python sources, by default some pure-Python standard library modules
read from disk, so nothing is downloaded. A request's split is a hash of its text: the same
text is in the same split whatever else is generated, so a workload built from the test split
never holds a request the classifier trained on.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import random
import re
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from quark.data.tasks import ArithmeticSpec, evaluate, expressions
from quark.retrieve.chunks import chunk_document, source_lines

KINDS = ("arithmetic", "code", "docs", "smalltalk")

DEFAULT_MODULES = (
    "json.decoder", "json.encoder", "textwrap", "shlex", "argparse", "string", "fractions",
    "statistics", "heapq", "bisect", "shutil", "csv", "difflib", "pprint", "configparser",
)  # fmt: skip

ARITHMETIC_TEMPLATES = (
    "What is {e}?", "Compute {e}.", "calculate {e}", "How much is {e}?", "Please work out {e}",
    "{e} = ?", "Quick one: what's {e}?", "What does {e} come to?", "Evaluate {e} for me.",
    "Can you tell me what {e} equals?", "solve {e}", "I need the value of {e}.",
    "What's the result of {e}?", "{e}", "Help me with some maths: {e}",
    "What do you get for {e}?",
)  # fmt: skip

CODE_TEMPLATES = (
    "Complete this Python function:\n```python\n{code}\n```",
    "Finish the code:\n```python\n{code}\n```",
    "Write the next line of this function:\n```python\n{code}\n```",
    "```python\n{code}\n```\nWhat comes next?",
    "Continue this code:\n```python\n{code}\n```",
    "What is the next line here?\n```python\n{code}\n```",
    "```python\n{code}\n```\nFinish this function, please.",
    "I'm stuck on this function, what should the next line be?\n```python\n{code}\n```",
)

# the next body line is only asked for if it says something: not a bracket or a bare `pass`
MIN_ANSWER_CHARS = 8
# how many body lines a code request shows at most before the line it asks for
MAX_SHOWN_BODY_LINES = 8
# a signature and docstring longer than this make a request nobody would type
MAX_HEADER_LINES = 24

SMALLTALK_SLOTS: dict[str, tuple[str, ...]] = {
    "greeting": ("Hi", "Hello", "Hey", "Hey there", "Good morning", "Hiya", "Howdy", "Yo"),
    "name": ("Sam", "Priya", "Lukas", "Mei", "Carlos", "Aisha", "Tom", "Ingrid", "Kofi", "Yuki"),
    "time": ("morning", "afternoon", "evening", "day", "week", "weekend"),
    "day": ("the weekend", "Saturday", "Sunday", "tonight", "Friday night", "the holidays"),
    "weather": ("sunny", "rainy", "windy", "cold", "hot", "foggy", "snowy", "humid", "grey"),
    "activity": (
        "going hiking",
        "seeing a film",
        "visiting my parents",
        "baking bread",
        "sleeping in",
        "cleaning the flat",
        "going to the beach",
        "having friends over",
        "reading a novel",
        "going for a long walk",
        "trying a new restaurant",
    ),
    "hobby": (
        "gardening",
        "painting",
        "chess",
        "knitting",
        "photography",
        "rock climbing",
        "cycling",
        "playing guitar",
        "birdwatching",
        "pottery",
        "running",
        "board games",
        "cooking",
    ),
    "animal": ("cats", "dogs", "penguins", "owls", "cows", "ducks", "llamas", "otters", "bees"),
    "feeling": ("tired", "great", "a bit bored", "happy", "stressed", "excited", "sleepy", "fine"),
    "praise": ("helpful", "funny", "kind", "patient", "clever", "friendly", "lovely to talk to"),
    "farewell": ("Bye", "Goodbye", "See you", "Take care", "Cheers", "Catch you later", "Night"),
    "food": ("pizza", "ramen", "tacos", "curry", "pancakes", "sushi", "soup", "ice cream"),
    "person": ("my sister", "my boss", "my neighbour", "my best friend", "my dad", "my flatmate"),
    "season": ("spring", "summer", "autumn", "winter"),
    "thanks": ("Thanks", "Thank you", "Many thanks", "Thanks a lot", "Cheers", "Thank you so much"),
}

SMALLTALK_TEMPLATES = (
    "{greeting}!",
    "{greeting}, how are you?",
    "{greeting}! How's your {time} going?",
    "{greeting}, I'm {name}. Nice to meet you.",
    "{greeting}, it's {name} again.",
    "How are you doing this {time}?",
    "How's it going?",
    "How has your {time} been?",
    "I'm feeling {feeling} today, how about you?",
    "Honestly I'm {feeling} this {time}.",
    "{thanks}!",
    "{thanks}, that was really {praise} of you.",
    "{thanks} for the chat, {name} here signing off.",
    "{thanks}, you've been very {praise}.",
    "You're really {praise}, you know that?",
    "I just wanted to say you're {praise}.",
    "It's so {weather} here today.",
    "The weather is {weather} again, typical {season}.",
    "Is it {weather} where you are?",
    "Do you prefer {weather} days or {weather2} ones?",
    "What's your favourite season? Mine is {season}.",
    "Any plans for {day}?",
    "I'm thinking of {activity} on {day}.",
    "What would you do on {day} if you could do anything?",
    "{person} and I are {activity} on {day}.",
    "Do you like {hobby}?",
    "I've been getting into {hobby} lately.",
    "What do you think about {hobby} as a hobby?",
    "My hobby is {hobby}, what's yours?",
    "I tried {hobby} with {person} and loved it.",
    "Tell me a joke about {animal}.",
    "Do you know any good jokes?",
    "Say something funny about {animal}, please.",
    "Which are cuter, {animal} or {animal2}?",
    "I had {food} for dinner, it was amazing.",
    "What's better, {food} or {food2}?",
    "I'm craving {food} right now.",
    "{farewell}!",
    "{farewell}, {name}.",
    "{farewell}, talk to you this {time}.",
    "I have to go now, {farewell_lower}!",
    "{farewell}, have a great {time}!",
    "Nice chatting with you, {farewell_lower}.",
    "Are you having a good {time}?",
    "What did you get up to this {time}?",
    "Do you ever get {feeling}?",
    "{person} says hi!",
    "I'm bored, talk to me about {animal}.",
    "Guess what, I'm {activity} on {day}!",
)


@dataclass(frozen=True)
class LabelledRequest:
    """One user message, the kind of request it is, and what a right answer contains."""

    text: str
    kind: str  # one of KINDS
    # arithmetic: the value as digits; code: the expected next line, stripped; docs: the
    # qualified name of the answering unit; smalltalk: None (nothing to score)
    answer: str | None
    split: str  # train | test


def labelled_requests(
    per_kind: int, seed: int = 0, sources: list[tuple[str, str]] | None = None
) -> list[LabelledRequest]:
    """`per_kind` requests of each kind in KINDS order, each kind in a seeded order, no text
    twice. Code and docs requests come from `sources` ((path, text) of Python files; by default
    `stdlib_sources()`) and run out when they do: a kind then has fewer requests (the default
    sources give about 2,100 code and 490 docs requests on Python 3.11). Smalltalk runs out
    near the number of distinct fillings of its templates (about 1,600); arithmetic does not."""
    if sources is None:
        sources = stdlib_sources()

    def rng(kind: str) -> random.Random:
        # a generator per kind: asking for more of one kind reshuffles no other, and asking
        # for more extends the list asked for before rather than drawing another
        return random.Random(f"{seed}:{kind}")

    candidates: dict[str, Iterable[tuple[str, str | None]]] = {
        "arithmetic": _arithmetic(per_kind, rng("arithmetic"), seed),
        "code": _code(sources, rng("code")),
        "docs": _docs(sources, rng("docs")),
        "smalltalk": _smalltalk(rng("smalltalk")),
    }
    seen: set[str] = set()
    requests: list[LabelledRequest] = []
    for kind in KINDS:
        taken = 0
        for text, answer in candidates[kind]:
            if taken == per_kind:
                break
            if text in seen:
                continue
            seen.add(text)
            requests.append(LabelledRequest(text, kind, answer, split_of(text)))
            taken += 1
    return requests


def split_of(text: str, test_fraction: float = 0.3) -> str:
    """train or test, by a hash of the request's text: the same text never changes split."""
    draw = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if draw < test_fraction else "train"


def stdlib_sources(modules: tuple[str, ...] = DEFAULT_MODULES) -> list[tuple[str, str]]:
    """(path, text) of the Python files of `modules`, as this interpreter finds them."""
    found = []
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            raise ValueError(f"module '{module}' has no Python source; pick pure-Python modules")
        found.append((spec.origin, Path(spec.origin).read_text(encoding="utf-8")))
    return found


def answer_is_right(request: LabelledRequest, reply: str) -> bool | None:
    """Whether `reply` holds the request's answer; None for smalltalk, which has none.

    arithmetic: the first integer of the reply after its last "=" if it has one (an answer
    may restate the question: "3 + 4 = 7"; a leading minus and thousands commas allowed) is
    the value; code: the expected line appears in the reply, runs of whitespace counted as
    one space; docs: the unit's qualified name or its last two dotted parts
    ("JSONDecoder.decode") appear in the reply."""
    if request.answer is None:
        return None
    if request.kind == "arithmetic":
        tail = reply.rsplit("=", 1)[-1]
        number = re.search(r"-?\d{1,3}(?:,\d{3})+(?!\d)|-?\d+", tail)
        return number is not None and int(number.group().replace(",", "")) == int(request.answer)
    if request.kind == "code":
        return _spaced(request.answer) in _spaced(reply)
    if request.kind == "docs":
        short = ".".join(request.answer.split(".")[-2:])
        return request.answer in reply or short in reply
    raise ValueError(f"request kind '{request.kind}' is unknown; allowed: {', '.join(KINDS)}")


def _spaced(text: str) -> str:
    return " ".join(text.split())


def _arithmetic(count: int, rng: random.Random, seed: int) -> Iterator[tuple[str, str | None]]:
    spec = ArithmeticSpec(max_digits=2, max_terms=4, seed=seed)
    for expression in expressions(spec, count):
        text = rng.choice(ARITHMETIC_TEMPLATES).format(e=expression)
        yield text, str(evaluate(expression))


def _code(sources: list[tuple[str, str]], rng: random.Random) -> Iterator[tuple[str, str | None]]:
    """A request per function in a seeded order, then a second cut of each, and so on."""
    cuts_per_function = [cuts for _, text in sources for cuts in _function_cuts(text)]
    rng.shuffle(cuts_per_function)
    for cuts in cuts_per_function:
        rng.shuffle(cuts)
    for round_ in range(max((len(cuts) for cuts in cuts_per_function), default=0)):
        for cuts in cuts_per_function:
            if round_ < len(cuts):
                snippet, answer = cuts[round_]
                yield rng.choice(CODE_TEMPLATES).format(code=snippet), answer


def _function_cuts(text: str) -> Iterator[list[tuple[str, str]]]:
    """For each function (and method) of a source: the (snippet, next line) pairs it gives.

    A snippet is the signature, the docstring and the first body lines; the next line must
    start a statement, say something (not `pass` or `x += 1`) and not already be in the
    snippet, where copying it out would pass for an answer."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return
    lines = [line.rstrip("\r\n") for line in source_lines(text)]
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body
        if ast.get_docstring(node) is not None:
            body = body[1:]
        if not body or body[0].lineno <= node.lineno:  # no body after a docstring, or a one-liner
            continue
        body_start = body[0].lineno
        header = lines[node.lineno - 1 : body_start - 1]
        body_lines = lines[body_start - 1 : node.end_lineno or body_start]
        if len(header) > MAX_HEADER_LINES:
            continue
        # a line that starts a statement, not the middle of a bracket or string
        statement_starts = {inner.lineno for inner in ast.walk(node) if isinstance(inner, ast.stmt)}
        cuts = []
        for shown in range(min(len(body_lines), MAX_SHOWN_BODY_LINES + 1)):
            answer = body_lines[shown].strip()
            if body_start + shown not in statement_starts or len(answer) < MIN_ANSWER_CHARS:
                continue
            snippet = textwrap.dedent("\n".join(header + body_lines[:shown])).strip("\n")
            if _spaced(answer) in _spaced(snippet):
                continue
            cuts.append((snippet, answer))
        if cuts:
            yield cuts


def _docs(sources: list[tuple[str, str]], rng: random.Random) -> Iterator[tuple[str, str | None]]:
    """Paraphrased docstring questions first (a seeded order), then relation questions that
    have a single answer."""
    from quark.retrieve.graph import build_graph
    from quark.retrieve.questions import corpus_questions

    # one chunk per unit (a window no unit exceeds): the questions ask only about units that
    # an index holds, and which chunk holds them does not matter here
    chunks = [
        chunk
        for path, text in sources
        for chunk in chunk_document(path, text, _whitespace_tokens, window=10**9, overlap=0)
    ]
    questions = corpus_questions(build_graph(sources, chunks))
    docstring = [q for q in questions if q.kind == "docstring"]
    relation = [q for q in questions if q.kind == "relation" and len(q.answers) == 1]
    rng.shuffle(docstring)
    rng.shuffle(relation)
    for question in docstring + relation:
        yield question.question, question.answers[0]


def _whitespace_tokens(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in re.finditer(r"\S+", text)]


def _smalltalk(rng: random.Random) -> Iterator[tuple[str, str | None]]:
    """Random fillings of random templates, until many draws in a row bring nothing new."""
    seen: set[str] = set()
    misses = 0
    while misses < 2000:
        template = rng.choice(SMALLTALK_TEMPLATES)
        slots = {name: rng.choice(values) for name, values in SMALLTALK_SLOTS.items()}
        # a second, different value where a template compares two of a kind
        for name in ("weather", "animal", "food"):
            others = [v for v in SMALLTALK_SLOTS[name] if v != slots[name]]
            slots[f"{name}2"] = rng.choice(others)
        slots["farewell_lower"] = slots["farewell"].lower()
        text = template.format(**slots)
        if text in seen:
            misses += 1
            continue
        misses = 0
        seen.add(text)
        yield text, None

"""End-to-end retrieval-augmented answers: questions only the retrieved text answers, asked
of the model with and without it.

A question names a class or function of a retrieve run's corpus and asks for the file that
defines it ("In which file is `JSONDecoder.decode` defined?"); the answer, its path, is not in
the question but is in the title of every chunk of that unit. The model answers greedily,
once with the retrieved chunks in its prompt as the server puts them there (quark.serve.rag)
and once without; an answer is right when it is exactly the path. `context_recall` is how
often the path was among the retrieved sources at all: what retrieval allowed the model.
Questions come from the units of the test split of the run's own question set (the same
hash), so nothing a retrieve run tuned on is asked.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quark.retrieve.questions import split_of

if TYPE_CHECKING:
    import networkx as nx

    from quark.serve.rag import Retrieval

TEMPLATE = "In which file is `{}` defined? Answer with the file's path only."


@dataclass(frozen=True)
class RagQuestion:
    question: str
    answer: str  # the defining file's path
    unit: str  # the qualified name asked about


def rag_questions(graph: nx.MultiDiGraph, count: int, split: str = "test") -> list[RagQuestion]:
    """Up to `count` questions about units of `split` (test: what evaluation asks; val: what
    data=rag_qa trains on), in name order, each naming its unit by a name no other unit has:
    its own, else `Owner.name` when Owner is a class (not the module, whose name is the
    answer's)."""
    units = [
        (name, data)
        for name, data in sorted(graph.nodes(data=True))
        if data.get("kind") in ("class", "function") and data.get("chunks") and data.get("path")
    ]
    modules = {node for node, data in graph.nodes(data=True) if data.get("kind") == "module"}
    shorts = Counter(name.rsplit(".", 1)[-1] for name, _ in units)
    pairs = Counter(".".join(name.split(".")[-2:]) for name, _ in units)
    questions = []
    for name, data in units:
        if split_of(name, 0.5) != split:
            continue
        # the unit's own name when no other unit has it, else Owner.name; never a name that
        # holds its module's (json.dumps gives the answer away)
        owner = name.rsplit(".", 1)[0]
        if shorts[name.rsplit(".", 1)[-1]] == 1:
            mention = name.rsplit(".", 1)[-1]
        elif pairs[".".join(name.split(".")[-2:])] == 1 and owner not in modules:
            mention = ".".join(name.split(".")[-2:])
        else:
            continue
        questions.append(RagQuestion(TEMPLATE.format(mention), str(data["path"]), name))
        if len(questions) == count:
            break
    return questions


@dataclass
class RagResult:
    accuracy: float
    accuracy_without_retrieval: float
    context_recall: float
    records: list[dict[str, Any]]

    def metrics(self) -> dict[str, float]:
        return {
            "rag/accuracy": self.accuracy,
            "rag/accuracy_without_retrieval": self.accuracy_without_retrieval,
            "rag/context_recall": self.context_recall,
            "rag/questions": float(len(self.records)),
        }

    def write(self, path: Path) -> None:
        with open(path, "w") as out:
            for record in self.records:
                out.write(json.dumps(record) + "\n")


def measure_rag(
    model: Any,
    tokenizer: Any,
    retrieval: Retrieval,
    questions: list[RagQuestion],
    stop_token_ids: list[int],
    max_new_tokens: int,
    batch_size: int,
) -> RagResult:
    """Each question answered greedily with the retrieved chunks in the prompt and without."""
    from quark.eval.exact_match import greedy_exact_match
    from quark.serve.rag import with_context

    mode, k = retrieval.mode, retrieval.k
    with_prompts, plain_prompts, found_sources = [], [], []
    for question in questions:
        messages = [{"role": "user", "content": question.question}]
        hits = retrieval.index.search(question.question, mode, k, retrieval.embedder)
        context, kept = with_context(messages, hits, tokenizer, retrieval.max_context_tokens)
        with_prompts.append(render(tokenizer, context))
        plain_prompts.append(render(tokenizer, messages))
        found_sources.append([hit.chunk.path for hit in kept])
    references = [question.answer for question in questions]
    options: dict[str, Any] = dict(
        stop_token_ids=stop_token_ids, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    helped = greedy_exact_match(model, tokenizer, with_prompts, references, **options)
    unhelped = greedy_exact_match(model, tokenizer, plain_prompts, references, **options)
    records = [
        {
            "question": q.question,
            "reference": q.answer,
            "unit": q.unit,
            "sources": sources,
            "answer": helped.answers[i],
            "correct": helped.correct[i],
            "answer_without_retrieval": unhelped.answers[i],
            "correct_without_retrieval": unhelped.correct[i],
        }
        for i, (q, sources) in enumerate(zip(questions, found_sources, strict=True))
    ]
    recall = sum(q.answer in s for q, s in zip(questions, found_sources, strict=True))
    return RagResult(helped.accuracy, unhelped.accuracy, recall / max(len(questions), 1), records)


def render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

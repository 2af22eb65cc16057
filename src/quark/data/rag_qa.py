"""data=rag_qa: questions only a retrieved context answers, with that context, to fine-tune a
model to read it.

Each record is {system, prompt, response}: the question of quark.eval.rag ("In which file is
`Owner.name` defined? ..."), the context the server would put in front of it (the chunks a
retrieve run finds for it, numbered, as quark.serve.rag renders them, cut to
data.rag.max_context_chars), and the answer, the file's path. Train and val ask about the units
of the retrieve run's val split, test about its test split: evaluation (step.tasks=[rag])
asks about test units only, so nothing it asks was trained on.
"""

from __future__ import annotations

from typing import Any

from quark.eval.rag import rag_questions


class Characters:
    """A tokenizer for budgets in characters: each character one "token"."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[str]:
        return list(text)

    def decode(self, ids: list[str], skip_special_tokens: bool = True) -> str:
        return "".join(ids)


def rag_qa_splits(
    retrieval: Any, counts: dict[str, int], max_context_chars: int
) -> dict[str, list[dict[str, Any]]]:
    """train, val and test records: train and val from the index's val units, test from its
    test units."""
    graph = retrieval.index.graph
    learned = rag_questions(
        graph, len(graph), split="val"
    )  # every one: val's share needs the total
    asked = rag_questions(graph, counts["test"], split="test")
    # val first, at most a tenth of what there is, so that a small corpus still trains
    held = min(counts["val"], len(learned) // 10) if counts["val"] else 0
    chosen = {
        "train": learned[held : held + counts["train"]],
        "val": learned[:held],
        "test": asked,
    }
    return {
        split: _records(retrieval, questions, max_context_chars)
        for split, questions in chosen.items()
        if questions
    }


def _records(retrieval: Any, questions: list[Any], budget: int) -> list[dict[str, Any]]:
    from quark.serve.rag import with_context

    index, embedder = retrieval.index, retrieval.embedder
    texts = [q.question for q in questions]
    vectors = (
        embedder.encode(texts)
        if embedder is not None and index.uses_vectors(retrieval.mode)
        else None
    )
    found = index.search_batch(texts, retrieval.mode, retrieval.k, vectors)
    records = []
    for question, hits in zip(questions, found, strict=True):
        shown, kept = with_context(
            [{"role": "user", "content": question.question}], hits, Characters(), budget
        )
        system = shown[0]["content"] if shown[0]["role"] == "system" else None
        records.append(
            {
                "system": system,
                "prompt": question.question,
                "response": question.answer,
                "unit": question.unit,
                "answer_in_context": question.answer in [hit.chunk.path for hit in kept],
            }
        )
    return records

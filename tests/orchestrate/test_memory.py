"""The gateway's memory: conversations and profiles that survive a restart, stay apart per user,
can be exported and forgotten; preferences learned from what users state; and chats fitted into a
token budget without ever cutting a message."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from quark.orchestrate.memory import ContextTooLong, Memory, Profile, fit_context


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    memory = Memory(tmp_path / "memory.sqlite")
    yield memory
    memory.close()


def chat(*contents: str) -> list[dict[str, str]]:
    """Alternating user/assistant messages, the user first."""
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": c}
        for i, c in enumerate(contents)
    ]


def test_conversations_and_profiles_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "gateway" / "memory.sqlite"  # the folder is made on first open
    memory = Memory(path)
    memory.add_messages("alice", "c1", chat("What is 2+2?", "4."))
    memory.learn_from("alice", "I prefer short answers.")
    memory.count_kind("alice", "arithmetic")
    memory.close()

    reopened = Memory(path)
    try:
        assert reopened.history("alice", "c1") == chat("What is 2+2?", "4.")
        assert reopened.profile("alice") == Profile(
            "alice", preferences=["short answers"], knows=[], kinds={"arithmetic": 1}
        )
        reopened.add_messages("alice", "c1", chat("And 3+3?"))
        assert [c["messages"] for c in reopened.conversations("alice")] == [3]
    finally:
        reopened.close()


def test_history_keeps_each_conversation_in_order_and_users_apart(memory: Memory) -> None:
    memory.add_messages("alice", "c1", chat("a1", "a2"))
    memory.add_messages("bob", "c1", chat("b1"))
    memory.add_messages("alice", "c2", chat("other"))
    memory.add_messages("alice", "c1", [{"role": "user", "content": "a3"}])

    assert [m["content"] for m in memory.history("alice", "c1")] == ["a1", "a2", "a3"]
    assert [m["content"] for m in memory.history("bob", "c1")] == ["b1"]
    assert memory.history("alice", "c2") == chat("other")
    assert memory.history("carol", "c1") == []
    assert memory.history("alice", "missing") == []


def test_conversations_count_messages_most_recently_updated_first(memory: Memory) -> None:
    memory.add_messages("alice", "old", chat("1", "2", "3"))
    memory.add_messages("alice", "new", chat("1"))
    listed = memory.conversations("alice")
    assert [(c["id"], c["messages"]) for c in listed] == [("new", 1), ("old", 3)]
    assert all(c["created"] <= c["updated"] for c in listed)
    assert memory.conversations("bob") == []


def test_a_message_without_role_or_content_is_refused_whole(memory: Memory) -> None:
    with pytest.raises(
        ValueError, match=r"messages\[1\] of conversation 'c1'.*'role' and 'content'"
    ):
        memory.add_messages("alice", "c1", [{"role": "user", "content": "hi"}, {"text": "x"}])
    assert memory.history("alice", "c1") == []  # nothing half-written


def test_export_holds_the_profile_and_every_conversation(memory: Memory) -> None:
    memory.add_messages("alice", "c1", chat("hi", "hello"))
    memory.add_messages("alice", "c2", chat("bye"))
    memory.learn_from("alice", "I know Python. Please never use emojis.")
    memory.count_kind("alice", "code")
    memory.add_messages("bob", "c1", chat("bob's secret"))

    exported = memory.export("alice")
    assert exported["user"] == "alice"
    assert exported["profile"] == {
        "user": "alice",
        "preferences": ["never use emojis"],
        "knows": ["Python"],
        "kinds": {"code": 1},
    }
    by_id = {c["id"]: c for c in exported["conversations"]}
    assert set(by_id) == {"c1", "c2"}
    assert [(m["role"], m["content"]) for m in by_id["c1"]["messages"]] == [
        ("user", "hi"),
        ("assistant", "hello"),
    ]
    assert "bob's secret" not in repr(exported)


def test_forget_deletes_one_user_everywhere_and_leaves_the_others(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite"
    memory = Memory(path)
    memory.add_messages("alice", "c1", chat("my passport number is XQ-7731-SECRET", "noted"))
    memory.add_messages("alice", "c2", chat("hi"))
    memory.learn_from("alice", "I prefer tea. I know Rust.")
    memory.count_kind("alice", "code")
    memory.add_messages("bob", "c1", chat("bob stays"))
    memory.learn_from("bob", "Call me Bobby.")

    assert memory.forget("alice") == {"conversations": 2, "messages": 3, "facts": 3}
    assert memory.forget("alice") == {"conversations": 0, "messages": 0, "facts": 0}
    # nor is it left readable in free pages of the file or in its write-ahead log
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"XQ-7731-SECRET" not in on_disk
    assert b"bob stays" in on_disk
    memory.close()

    reopened = Memory(path)
    try:
        assert reopened.export("alice") == {
            "user": "alice",
            "profile": {"user": "alice", "preferences": [], "knows": [], "kinds": {}},
            "conversations": [],
        }
        assert reopened.history("bob", "c1") == chat("bob stays")
        assert reopened.profile("bob").preferences == ["call me Bobby"]
    finally:
        reopened.close()


@pytest.mark.parametrize(
    ("text", "learned"),
    [
        ("I prefer short answers.", ["prefers: short answers"]),
        ("i'd prefer bullet points!", ["prefers: bullet points"]),
        ("Please always show units", ["prefers: always show units"]),
        ("Please never use emojis.", ["prefers: never use emojis"]),
        ("I like worked examples.", ["prefers: worked examples"]),
        ("Call me Sam.", ["prefers: call me Sam"]),
        ("Answer in French.", ["prefers: answer in French"]),
        ("I know Node.js and React.", ["knows: Node.js and React"]),
        ("I already know recursion.", ["knows: recursion"]),
        ("I'm familiar with SQL joins.", ["knows: SQL joins"]),
        ("I am familiar with Git.", ["knows: Git"]),
        ("I understand big-O notation.", ["knows: big-O notation"]),
        (
            "Hello! Also, I prefer metric units.\nI know calculus",
            ["prefers: metric units", "knows: calculus"],
        ),
    ],
)
def test_learn_from_finds_stated_preferences_and_knowledge(
    memory: Memory, text: str, learned: list[str]
) -> None:
    assert memory.learn_from("alice", text) == learned
    profile = memory.profile("alice")
    stored = [f"prefers: {p}" for p in profile.preferences] + [f"knows: {k}" for k in profile.knows]
    assert sorted(stored) == sorted(learned)


@pytest.mark.parametrize(
    "text",
    [
        "Do you know Python?",
        "do I prefer tea?",
        "Would you call me Sam?!",
        "Don't call me Sam.",
        "I don't know Rust.",
        "What is 2+2.",
        "I prefer.",
    ],
)
def test_learn_from_ignores_questions_negations_and_other_sentences(
    memory: Memory, text: str
) -> None:
    assert memory.learn_from("alice", text) == []
    assert memory.profile("alice") == Profile("alice", [], [], {})


def test_a_restated_preference_is_kept_once_and_becomes_the_newest(memory: Memory) -> None:
    assert memory.learn_from("alice", "I prefer tea. I prefer short answers.") == [
        "prefers: tea",
        "prefers: short answers",
    ]
    assert memory.learn_from("alice", "I PREFER TEA!") == []
    assert memory.profile("alice").preferences == ["short answers", "TEA"]
    assert memory.learn_from("alice", "I know SQL. i know sql.") == ["knows: SQL"]
    assert memory.profile("alice").knows == ["sql"]


def test_facts_are_capped_oldest_first_and_trimmed(memory: Memory) -> None:
    for i in range(60):
        memory.learn_from("alice", f"I prefer style {i}. I know topic {i}.")
    profile = memory.profile("alice")
    assert profile.preferences == [f"style {i}" for i in range(10, 60)]
    assert profile.knows == [f"topic {i}" for i in range(10, 60)]

    memory.learn_from("bob", "I like " + "x" * 500 + ".")
    assert memory.profile("bob").preferences == ["x" * 200]


def test_system_prompt_tells_the_model_about_the_user(memory: Memory) -> None:
    assert memory.profile("alice").system_prompt() is None
    memory.learn_from("alice", "I prefer short answers. Please never use emojis. I know recursion.")
    for kind in ["arithmetic", "code", "arithmetic", "arithmetic"]:
        memory.count_kind("alice", kind)

    profile = memory.profile("alice")
    assert profile.kinds == {"arithmetic": 3, "code": 1}
    prompt = profile.system_prompt()
    assert prompt is not None
    assert "The user prefers: short answers; never use emojis." in prompt
    assert "The user already knows: recursion (do not explain it again)." in prompt
    assert "They mostly ask about: arithmetic, code." in prompt
    only_kinds = Profile("bob", [], [], {"translation": 2})
    assert only_kinds.system_prompt() == "They mostly ask about: translation."


# fit_context: a token is a word; each message costs its words + 1
def words(text: str) -> int:
    return len(text.split())


def tokens(messages: list[dict[str, str]]) -> int:
    return sum(words(m["content"]) + 1 for m in messages)


SYSTEM = {"role": "system", "content": "You are terse."}  # 3 + 1 tokens
FILLER = " ".join(["more"] * 20) + "."
TURNS = chat(
    f"First question about cats. {FILLER}",  # 24 + 1: longer than its recap
    f"Cats sleep a lot. {FILLER}",  # 24 + 1
    "Second question about dogs?",  # 4 + 1
    "Dogs bark.",  # 2 + 1
    "Latest question here",  # 3 + 1
)


def test_a_chat_that_fits_is_returned_unchanged() -> None:
    messages = [SYSTEM, *TURNS]
    fitted, stats = fit_context(messages, tokens(messages), words, per_message_overhead=1)
    assert fitted == messages
    assert stats == {"kept": 6, "dropped": 0, "summarised": 0}
    assert fit_context([], 10, words) == ([], {"kept": 0, "dropped": 0, "summarised": 0})


def test_the_oldest_turns_are_dropped_whole() -> None:
    messages = [SYSTEM, *TURNS]
    budget = tokens([SYSTEM, *TURNS[2:]]) + 3  # room for the last three turns, not a fourth
    fitted, stats = fit_context(messages, budget, words, per_message_overhead=1, summarize=False)
    assert fitted == [SYSTEM, *TURNS[2:]]
    assert stats == {"kept": 4, "dropped": 2, "summarised": 0}


def test_dropped_turns_are_summarised_after_the_system_messages_within_budget() -> None:
    messages = [SYSTEM, *TURNS]
    budget = tokens([SYSTEM, *TURNS[2:]]) + 20  # room for the summary (20), not a turn (25)
    fitted, stats = fit_context(messages, budget, words, per_message_overhead=1)
    assert fitted[0] == SYSTEM and fitted[2:] == TURNS[2:]
    summary = fitted[1]
    assert summary["role"] == "system"
    assert summary["content"] == (
        "Earlier in this conversation (2 turns summarised): "
        "user asked: First question about cats.; assistant said: Cats sleep a lot."
    )
    assert stats == {"kept": 4, "dropped": 2, "summarised": 2}
    assert tokens(fitted) <= budget


def test_a_summary_too_long_loses_its_oldest_turns_first_then_goes() -> None:
    long_question = " ".join(f"w{i}" for i in range(30)) + "."
    long_reply = f"Short reply. {' '.join(['more'] * 15)}."  # 17 + 1
    messages = [SYSTEM, *chat(long_question, long_reply, "Latest?")]
    budget = tokens([SYSTEM, messages[-1]]) + 14  # no turn fits; a one-recap summary (12) does
    fitted, stats = fit_context(messages, budget, words, per_message_overhead=1)
    assert [m["content"] for m in fitted] == [
        SYSTEM["content"],
        "Earlier in this conversation (1 turn summarised): assistant said: Short reply.",
        "Latest?",
    ]
    assert stats == {"kept": 2, "dropped": 2, "summarised": 1}
    assert tokens(fitted) <= budget

    fitted, stats = fit_context(messages, budget - 5, words, per_message_overhead=1)
    assert fitted == [SYSTEM, messages[-1]]
    assert stats == {"kept": 2, "dropped": 2, "summarised": 0}


def test_a_recap_is_the_first_sentence_cut_at_twelve_words() -> None:
    long_sentence = " ".join(f"w{i}" for i in range(20)) + ". Second sentence."  # 22 + 1
    messages = chat(long_sentence, "Latest?")
    fitted, _ = fit_context(messages, 2 + 22, words, per_message_overhead=1)
    recap = " ".join(f"w{i}" for i in range(12)) + "…"
    assert fitted == [
        {
            "role": "system",
            "content": f"Earlier in this conversation (1 turn summarised): user asked: {recap}",
        },
        messages[-1],
    ]


def test_system_messages_and_latest_message_over_budget_raise() -> None:
    messages = [SYSTEM, *chat("hi", " ".join(["word"] * 50))]
    with pytest.raises(
        ContextTooLong, match=r"\(4 tokens\).*\(51 tokens\) need 55 tokens.*allows 40"
    ):
        fit_context(messages, 40, words, per_message_overhead=1)


def test_fitting_never_cuts_or_reorders_a_message() -> None:
    rng = random.Random(0)
    for _ in range(200):
        messages = [dict(SYSTEM) for _ in range(rng.randint(0, 2))] + chat(
            *(" ".join(["w"] * rng.randint(1, 20)) + "." for _ in range(rng.randint(1, 12)))
        )
        budget = rng.randint(0, 150)
        try:
            fitted, stats = fit_context(messages, budget, words, per_message_overhead=2)
        except ContextTooLong:
            continue
        assert sum(words(m["content"]) + 2 for m in fitted) <= budget
        originals = [m for m in fitted if not m["content"].startswith("Earlier in this")]
        # kept messages are input messages, exactly, in their order, and always the latest
        positions = [next(i for i, m in enumerate(messages) if m is kept) for kept in originals]
        assert positions == sorted(set(positions)) and positions[-1] == len(messages) - 1
        assert stats["kept"] == len(originals)
        assert stats["kept"] + stats["dropped"] == len(messages)


def test_threads_writing_at_once_lose_nothing(memory: Memory) -> None:
    def write(thread: int) -> None:
        for i in range(50):
            message = {"role": "user", "content": f"{thread}:{i}"}
            memory.add_messages("alice", "shared", [message])
            memory.add_messages(f"user{thread}", "own", [message])
            memory.count_kind("alice", "chat")

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    shared = [m["content"] for m in memory.history("alice", "shared")]
    assert sorted(shared) == sorted(f"{t}:{i}" for t in range(4) for i in range(50))
    for t in range(4):
        # each thread's messages keep the order it wrote them in
        assert [c for c in shared if c.startswith(f"{t}:")] == [f"{t}:{i}" for i in range(50)]
        assert len(memory.history(f"user{t}", "own")) == 50
    assert memory.profile("alice").kinds == {"chat": 200}

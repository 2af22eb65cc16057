"""What the gateway remembers about each user, kept in SQLite, and fitting a chat into a context.

    Memory        conversations (role/content messages in order), the user's stated preferences
                  and known topics (learned from their own sentences), and how often they asked
                  each kind of request (counted by the router); export and forget per user
    Profile       that user's preferences, knowledge and request kinds, as a system message
    fit_context   the system messages, the latest message and as many recent turns as fit in a
                  token budget, with a one-message summary of the turns dropped

The gateway calls Memory from asyncio handlers. Each call is a few short statements, so one
connection behind a lock serves them all without an executor; WAL lets another process (a
second gateway worker, an export script) read while one writes. The file is reopened across
restarts, and forget() overwrites what it deletes rather than leaving it in free pages.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MAX_FACTS = 50  # per user and per kind of fact (preferences, knows): the oldest go first
MAX_FACT_CHARS = 200
SUMMARY_WORDS = 12  # of each dropped turn's first sentence

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    user TEXT NOT NULL, id TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (user, id)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, conversation TEXT NOT NULL,
    role TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_of_conversation ON messages (user, conversation, id);
CREATE TABLE IF NOT EXISTS facts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, kind TEXT NOT NULL,
    text TEXT NOT NULL, folded TEXT NOT NULL, created REAL NOT NULL,
    UNIQUE (user, kind, folded)
);
CREATE TABLE IF NOT EXISTS kinds (
    user TEXT NOT NULL, kind TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (user, kind)
);
"""

# A sentence ends at . ! ? followed by a space or the end, or at a newline: "Node.js" and "3.5"
# stay whole.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")
# "don't call me Bob", "I do not like long answers": the statement is negated, not made
NEGATED = re.compile(r"(?:n['’]t|\bnot|\bnever)\s*$", re.IGNORECASE)
# (pattern, kind of fact, how X is stored); the earliest match in a sentence wins
STATEMENTS: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(p, re.IGNORECASE), kind, stored)
    for p, kind, stored in [
        (r"\bI(?:['’]d| would)? prefer\s+(.+)", "prefers", "{}"),
        (r"\bplease always\s+(.+)", "prefers", "always {}"),
        (r"\bplease never\s+(.+)", "prefers", "never {}"),
        (r"\bI like\s+(.+)", "prefers", "{}"),
        (r"\bcall me\s+(.+)", "prefers", "call me {}"),
        (r"\banswer in\s+(.+)", "prefers", "answer in {}"),
        (r"\bI (?:already )?know\s+(.+)", "knows", "{}"),
        (r"\bI(?:['’]m| am) familiar with\s+(.+)", "knows", "{}"),
        (r"\bI understand\s+(.+)", "knows", "{}"),
    ]
]


@dataclass
class Profile:
    """What a user told the gateway about themselves, and what they ask about."""

    user: str
    preferences: list[str]  # stated preferences, in the user's words, newest last, deduplicated
    knows: list[str]  # what the user says they already know
    kinds: dict[str, int]  # request kinds the user made, counted by the router, most frequent first

    def system_prompt(self) -> str | None:
        """A short system message that shapes the answer to this user; None when nothing is known."""
        parts = []
        if self.preferences:
            parts.append(f"The user prefers: {'; '.join(self.preferences)}.")
        if self.knows:
            parts.append(
                f"The user already knows: {'; '.join(self.knows)} (do not explain it again)."
            )
        if self.kinds:
            top = sorted(self.kinds, key=lambda kind: (-self.kinds[kind], kind))[:3]
            parts.append(f"They mostly ask about: {', '.join(top)}.")
        return " ".join(parts) or None


def sentences(text: str) -> list[str]:
    """The sentences of `text`, each with its closing punctuation, blank ones left out."""
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def stated_facts(text: str) -> list[tuple[str, str]]:
    """(kind, fact) for each preference ("prefers") or known topic ("knows") the text states."""
    facts = []
    for sentence in sentences(text):
        if "?" in sentence[len(sentence.rstrip(".!?")) :]:
            continue  # "Do you know X?" asks; it does not state
        earliest: tuple[int, str, str] | None = None
        for pattern, kind, stored in STATEMENTS:
            start = 0
            while (match := pattern.search(sentence, start)) is not None:
                if not NEGATED.search(sentence[: match.start()]):
                    break
                start = match.start() + 1
            if match is None or (earliest is not None and earliest[0] <= match.start()):
                continue
            said = match.group(1).strip().rstrip(".!?,;: ").strip()[:MAX_FACT_CHARS].rstrip()
            if said:
                earliest = (match.start(), kind, stored.format(said))
        if earliest is not None:
            facts.append(earliest[1:])
    return facts


class Memory:
    """Conversations, profiles and request kinds of every user, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=5000")  # another process writing the file
            self._db.execute("PRAGMA secure_delete=ON")  # forget() leaves no readable trace
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_messages(self, user: str, conversation: str, messages: list[dict[str, str]]) -> None:
        """Append role/content messages to the user's conversation (started if new), in order."""
        for i, message in enumerate(messages):
            if not all(isinstance(message.get(key), str) for key in ("role", "content")):
                raise ValueError(
                    f"messages[{i}] of conversation {conversation!r}: needs 'role' and 'content' "
                    f"strings, got {sorted(message)}"
                )
        if not messages:
            return
        now = time.time()
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO conversations VALUES (?, ?, ?, ?) "
                "ON CONFLICT (user, id) DO UPDATE SET updated = excluded.updated",
                (user, conversation, now, now),
            )
            self._db.executemany(
                "INSERT INTO messages (user, conversation, role, content, created) "
                "VALUES (?, ?, ?, ?, ?)",
                [(user, conversation, m["role"], m["content"], now) for m in messages],
            )

    def history(self, user: str, conversation: str) -> list[dict[str, str]]:
        """The conversation's messages as role/content dicts, oldest first ([] if unknown)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT role, content FROM messages WHERE user = ? AND conversation = ? ORDER BY id",
                (user, conversation),
            ).fetchall()
        return [{"role": role, "content": content} for role, content in rows]

    def conversations(self, user: str) -> list[dict[str, Any]]:
        """The user's conversations, most recently updated first: id, message count, times."""
        with self._lock:
            rows = self._db.execute(
                "SELECT c.id, (SELECT COUNT(*) FROM messages m WHERE m.user = c.user "
                "AND m.conversation = c.id), c.created, c.updated FROM conversations c "
                "WHERE c.user = ? ORDER BY c.updated DESC, c.rowid DESC",
                (user,),
            ).fetchall()
        return [
            {"id": id_, "messages": count, "created": created, "updated": updated}
            for id_, count, created, updated in rows
        ]

    def profile(self, user: str) -> Profile:
        """The user's preferences and known topics (oldest first) and request kinds."""
        with self._lock:
            facts = self._db.execute(
                "SELECT kind, text FROM facts WHERE user = ? ORDER BY id", (user,)
            ).fetchall()
            kinds = self._db.execute(
                "SELECT kind, count FROM kinds WHERE user = ? ORDER BY count DESC, kind", (user,)
            ).fetchall()
        return Profile(
            user=user,
            preferences=[text for kind, text in facts if kind == "prefers"],
            knows=[text for kind, text in facts if kind == "knows"],
            kinds=dict(kinds),
        )

    def learn_from(self, user: str, text: str) -> list[str]:
        """Store the preferences and known topics the user's message states; return the new ones
        as "prefers: ..." / "knows: ...". A restated one moves to newest and is not returned."""
        learned = []
        now = time.time()
        with self._lock, self._db:
            for kind, fact in stated_facts(text):
                # delete and insert, so a restated fact becomes the newest and outlives the cap
                forgotten = self._db.execute(
                    "DELETE FROM facts WHERE user = ? AND kind = ? AND folded = ?",
                    (user, kind, fact.casefold()),
                ).rowcount
                self._db.execute(
                    "INSERT INTO facts (user, kind, text, folded, created) VALUES (?, ?, ?, ?, ?)",
                    (user, kind, fact, fact.casefold(), now),
                )
                if not forgotten:
                    learned.append(f"{kind}: {fact}")
                self._db.execute(
                    "DELETE FROM facts WHERE user = ? AND kind = ? AND id NOT IN "
                    "(SELECT id FROM facts WHERE user = ? AND kind = ? ORDER BY id DESC LIMIT ?)",
                    (user, kind, user, kind, MAX_FACTS),
                )
        return learned

    def count_kind(self, user: str, kind: str) -> None:
        """Count one request of `kind` (the router's label, e.g. "arithmetic") for the user."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO kinds VALUES (?, ?, 1) "
                "ON CONFLICT (user, kind) DO UPDATE SET count = count + 1",
                (user, kind),
            )

    def export(self, user: str) -> dict[str, Any]:
        """Everything kept about the user: the profile and every conversation with its messages."""
        profile = self.profile(user)
        with self._lock:
            rows = self._db.execute(
                "SELECT conversation, role, content, created FROM messages WHERE user = ? "
                "ORDER BY id",
                (user,),
            ).fetchall()
        messages: dict[str, list[dict[str, Any]]] = {}
        for conversation, role, content, created in rows:
            messages.setdefault(conversation, []).append(
                {"role": role, "content": content, "created": created}
            )
        return {
            "user": user,
            "profile": asdict(profile),
            "conversations": [
                {**c, "messages": messages.get(c["id"], [])} for c in self.conversations(user)
            ],
        }

    def forget(self, user: str) -> dict[str, int]:
        """Delete everything kept about the user; how many conversations, messages and facts
        (preferences, known topics and request-kind counters) went."""
        with self._lock:
            with self._db:
                deleted = {
                    name: self._db.execute(f"DELETE FROM {table} WHERE user = ?", (user,)).rowcount
                    for name, table in [
                        ("conversations", "conversations"),
                        ("messages", "messages"),
                        ("facts", "facts"),
                        ("kinds", "kinds"),
                    ]
                }
            # the deleted pages are zeroed in the file, but their old versions still sit in
            # the write-ahead log until a checkpoint copies it back and empties it
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        deleted["facts"] += deleted.pop("kinds")
        return deleted


class ContextTooLong(Exception):
    """The system messages and the latest message alone do not fit the token budget."""


def recap(message: dict[str, str]) -> str | None:
    """One dropped turn in a summary: "user asked: <its first sentence, cut at SUMMARY_WORDS
    words>"; None when it has no text."""
    first = next(iter(sentences(message["content"])), "")
    if not first:
        return None
    words = first.split()
    if len(words) > SUMMARY_WORDS:
        first = " ".join(words[:SUMMARY_WORDS]) + "…"
    verb = "asked" if message["role"] == "user" else "said"
    return f"{message['role']} {verb}: {first}"


def fit_context(
    messages: list[dict[str, str]],
    budget: int,
    count_tokens: Callable[[str], int],
    per_message_overhead: int = 4,
    summarize: bool = True,
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The chat fitted into `budget` tokens, and {"kept", "dropped", "summarised"} counts.

    The leading system messages and the latest message are kept whole, then as many of the
    most recent turns as fit, whole. When older turns are dropped and `summarize` is set, a
    system message recapping their first sentences follows the leading system messages if
    it fits in what is left, the oldest recaps left out until it does. A message costs
    count_tokens(content) + per_message_overhead.

    Raises:
        ContextTooLong: the system messages and the latest message alone exceed `budget`.
    """
    if not messages:
        return [], {"kept": 0, "dropped": 0, "summarised": 0}

    def cost(content: str) -> int:
        return count_tokens(content) + per_message_overhead

    leading = 0
    while leading < len(messages) - 1 and messages[leading]["role"] == "system":
        leading += 1
    system, turns, latest = messages[:leading], messages[leading:-1], messages[-1]
    system_tokens = sum(cost(m["content"]) for m in system)
    latest_tokens = cost(latest["content"])
    room = budget - system_tokens - latest_tokens
    if room < 0:
        raise ContextTooLong(
            f"the system messages ({system_tokens} tokens) and the latest message "
            f"({latest_tokens} tokens) need {system_tokens + latest_tokens} tokens; "
            f"the budget allows {budget}"
        )
    first_kept = len(turns)
    while first_kept > 0 and cost(turns[first_kept - 1]["content"]) <= room:
        first_kept -= 1
        room -= cost(turns[first_kept]["content"])
    dropped, kept = turns[:first_kept], turns[first_kept:]

    summary: list[dict[str, str]] = []
    recaps = [r for r in map(recap, dropped) if r is not None] if summarize else []

    def summary_of(first: int) -> str:
        count = len(recaps) - first
        head = f"Earlier in this conversation ({count} turn{'s' * (count != 1)} summarised): "
        return head + "; ".join(recaps[first:])

    # the summary grows with every recap it holds, so the fewest left out is found by bisection
    low, high = 0, len(recaps)  # recaps[high:] fit (none at all trivially)
    while low < high:
        middle = (low + high) // 2
        if cost(summary_of(middle)) <= room:
            high = middle
        else:
            low = middle + 1
    if high < len(recaps):
        summary = [{"role": "system", "content": summary_of(high)}]
    fitted = [*system, *summary, *kept, latest]
    stats = {
        "kept": len(system) + len(kept) + 1,
        "dropped": len(dropped),
        "summarised": len(recaps) - high,
    }
    return fitted, stats

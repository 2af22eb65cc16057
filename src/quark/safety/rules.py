"""The rule half of the safety guard: patterns for secrets and personal data, and word lists
per category, matched on the text as written and on the forms an attacker hides it in.

    secrets   private key blocks; AWS, GitHub, Slack, Stripe, Google and OpenAI-style keys
    pii       e-mail addresses; payment card numbers (13 to 19 digits, with spaces or dashes,
              that pass the Luhn check: a random digit run is not flagged)
    lists     phrases per category (conf/safety: weapons, self_harm, malware, pii_harvesting,
              prompt_injection, ...), whole words, any case

Before the word lists are matched, the text is also read with leetspeak undone ("h4ck" ->
"hack"), with look-alike letters of other scripts read as Latin and separators inside words
taken out ("р-i-pe bo.mb"), and with every base64 run of 16 or more characters decoded (and
what that holds, up to three levels), so that the simplest encodings do not slip past. A finding says which form it was found in.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

# what a run of digits must pass to count as a card number
CARD_DIGITS = (13, 19)
LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
# levels of base64 inside base64 that are decoded
DECODE_DEPTH = 3
# Cyrillic and Greek letters that look like Latin ones, read as those
LOOK_ALIKE = str.maketrans(
    "аеорсхуіѕјԁһԛԝАВЕКМНОРСТХУІЅЈαοτνρεΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcxyisjdhqwABEKMHOPCTXYISJaotvpeABEZHIKMNOPTYX",
)
INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff]")
# a hyphen, dot, underscore or middle dot between two letters
SEPARATED = re.compile(r"(?<=[^\W\d_])[-._\u00b7](?=[^\W\d_])")


@dataclass(frozen=True)
class Finding:
    """A rule that matched: its category and name, where (in `form`: the text as written,
    "leetspeak", "obfuscation" or "base64"), and what it matched, masked for secrets and
    personal data."""

    category: str
    rule: str
    form: str
    start: int
    end: int
    excerpt: str


@dataclass(frozen=True)
class Rule:
    """A named pattern of a category; `valid` filters its matches (the Luhn check)."""

    category: str
    name: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] | None = None
    masked: bool = True  # secrets and personal data are not repeated in findings or logs


def luhn_valid(number: str) -> bool:
    """Whether the digits of `number` pass the Luhn checksum and are a card number's length."""
    digits = [int(c) for c in number if c.isdigit()]
    if not CARD_DIGITS[0] <= len(digits) <= CARD_DIGITS[1]:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


PATTERN_RULES: tuple[Rule, ...] = (
    Rule(
        "secrets",
        "private_key",
        re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    ),
    Rule("secrets", "aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    Rule("secrets", "github_token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    Rule("secrets", "slack_token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b")),
    Rule("secrets", "stripe_key", re.compile(r"\b[sr]k_live_[A-Za-z0-9]{20,}\b")),
    Rule("secrets", "google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    Rule("secrets", "openai_key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}\b")),
    Rule(
        "pii",
        "email",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    ),
    Rule(
        "pii",
        "card_number",
        re.compile(r"\b\d(?:[ -]?\d){12,18}\b"),
        valid=luhn_valid,
    ),
)


def word_list_rules(lists: Mapping[str, Iterable[str]]) -> list[Rule]:
    """One rule per category: any of its phrases as whole words, any case, any run of spaces."""
    rules = []
    for category, phrases in lists.items():
        alternatives = sorted(
            {r"\s+".join(re.escape(w) for w in p.lower().split()) for p in phrases if p.strip()},
            key=len,
            reverse=True,
        )
        if alternatives:
            pattern = re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)
            rules.append(Rule(category, f"{category}_words", pattern, masked=False))
    return rules


class RuleGuard:
    """Every rule over a text and its decoded forms; `check` lists what matched."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)

    @classmethod
    def from_lists(cls, lists: Mapping[str, Iterable[str]], patterns: bool = True) -> RuleGuard:
        """The built-in secret and personal-data patterns (unless `patterns` is false) and a
        word-list rule per category of `lists`."""
        return cls([*(PATTERN_RULES if patterns else ()), *word_list_rules(lists)])

    @property
    def categories(self) -> list[str]:
        return sorted({rule.category for rule in self.rules})

    def check(self, text: str) -> list[Finding]:
        """Every match of every rule in `text` as written, then in its leetspeak reading and
        its decoded base64 runs (findings there that the plain text already had are left
        out)."""
        found = self._match(text, "text")
        seen = {(f.category, f.rule) for f in found}
        for form, variant in _decoded(text):
            for finding in self._match(variant, form):
                if (finding.category, finding.rule) not in seen:
                    seen.add((finding.category, finding.rule))
                    found.append(finding)
        return found

    def check_request(self, text: str) -> list[Finding]:
        return self.check(text)  # the rules read requests and answers alike

    def _match(self, text: str, form: str) -> list[Finding]:
        found = []
        for rule in self.rules:
            for match in rule.pattern.finditer(text):
                value = match.group(0)
                if rule.valid is not None and not rule.valid(value):
                    continue
                excerpt = _mask(value) if rule.masked else value
                found.append(
                    Finding(rule.category, rule.name, form, match.start(), match.end(), excerpt)
                )
        return found


def decoded_forms(text: str) -> list[tuple[str, str]]:
    """(form, text) for each other reading of `text` the rules match: leetspeak, look-alike
    letters and separators undone, base64 decoded (the classifier half of the guard reads
    them too)."""
    return _decoded(text)


def _decoded(text: str, depth: int = 0) -> list[tuple[str, str]]:
    """The other readings of `text`: leetspeak undone, look-alike letters and separators
    inside words undone (with and without leetspeak), and each base64 run that decodes to
    printable text, read again in turn (base64 of base64, up to DECODE_DEPTH levels: the
    adaptive red team found a second layer was enough to pass one level of decoding)."""
    forms = []
    unleet = text.translate(LEET)
    if unleet != text:
        forms.append(("leetspeak", unleet))
    for plain in dict.fromkeys((_unobfuscated(text), _unobfuscated(unleet))):
        if plain not in (text, unleet):
            forms.append(("obfuscation", plain))
    if depth >= DECODE_DEPTH:
        return forms
    for run in BASE64_RUN.findall(text):
        try:
            decoded = base64.b64decode(run + "=" * (-len(run) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded.isprintable() or all(c.isprintable() or c.isspace() for c in decoded):
            forms.append(("base64", decoded))
            forms += [("base64", inner) for _, inner in _decoded(decoded, depth + 1)]
    return forms


def _unobfuscated(text: str) -> str:
    """`text` with look-alike letters of other scripts read as Latin ones and separators
    inside words taken out ("р-i-pe bo.mb" -> "pipe bomb"): the adaptive red team's commonest
    bypasses of the word lists were hyphens inside words and Cyrillic look-alikes."""
    text = INVISIBLE.sub("", text.translate(LOOK_ALIKE))
    return SEPARATED.sub("", text)


def _mask(value: str) -> str:
    """The first and last two characters of a secret or personal datum, the rest starred."""
    if len(value) <= 6:
        return "*" * len(value)
    return value[:2] + "*" * (len(value) - 4) + value[-2:]

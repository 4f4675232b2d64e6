"""Demo traffic: replay questions against a running API so the dashboard fills within a minute."""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests
from tqdm import tqdm

QUESTION_COLUMNS = ("question", "instruction")
OUT_OF_SCOPE_FILE = "demo-out-of-scope.txt"
# Connect quickly, but give a cold local model time to produce its first answer.
TIMEOUT = (5.0, 120.0)
# Most customers who bother to vote are content; an even split would make the satisfaction
# panel look broken rather than realistic.
THUMBS_UP_SHARE = 0.75


class SimulationError(RuntimeError):
    """The questions could not be read, or there is no healthy API at the URL."""


@dataclass
class Tally:
    ok: int = 0
    errors: int = 0
    feedback: int = 0
    feedback_errors: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        text = (
            f"questions: {self.ok} ok, {self.errors} errors; "
            f"feedback: {self.feedback} sent, {self.feedback_errors} errors"
        )
        if self.reasons:
            text += " (" + ", ".join(f"{r}: {n}" for r, n in self.reasons.most_common()) + ")"
        return text


def read_questions(path: Path) -> list[str]:
    """A CSV with a `question` or `instruction` column, or a text file with one per line."""
    if path.suffix.lower() == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        questions = [line.strip() for line in lines if line.strip()]
    else:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            column = next((name for name in QUESTION_COLUMNS if name in columns), None)
            if column is None:
                raise SimulationError(f"{path}: needs a 'question' or 'instruction' column")
            questions = [(row[column] or "").strip() for row in reader]
            questions = [question for question in questions if question]
    if not questions:
        raise SimulationError(f"{path}: no questions")
    return questions


def default_questions(demo_kb: Path) -> list[str]:
    """The demo knowledge base's customer phrasings plus the bundled off-topic questions."""
    return read_questions(demo_kb) + read_questions(demo_kb.parent / OUT_OF_SCOPE_FILE)


def _post(http: requests.Session, url: str, body: dict, tally: Tally) -> dict | None:
    try:
        response = http.post(url, json=body, timeout=TIMEOUT)
    except requests.RequestException as exc:
        tally.reasons[type(exc).__name__] += 1
        return None
    if response.status_code != 200:
        tally.reasons[f"HTTP {response.status_code}"] += 1
        return None
    try:
        return response.json()
    except ValueError:
        tally.reasons["invalid JSON"] += 1
        return None


def simulate(
    url: str,
    questions: Sequence[str],
    n: int,
    feedback_rate: float = 0.3,
    seed: int | None = None,
    progress: bool = True,
) -> Tally:
    """Ask `n` random questions; vote on about `feedback_rate` of the answers."""
    base = url.rstrip("/")
    rng = random.Random(seed)  # noqa: S311 - picks demo questions, guards nothing
    tally = Tally()
    with requests.Session() as http:
        try:
            health = http.get(f"{base}/health", timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise SimulationError(f"no API at {base}: {type(exc).__name__}") from exc
        if health.status_code != 200:
            raise SimulationError(f"{base}/health answered {health.status_code}")
        bar = tqdm(range(n), desc="questions", unit="q", disable=not progress)
        for _ in bar:
            answer = _post(http, f"{base}/question", {"question": rng.choice(questions)}, tally)
            if answer is None or "conversation_id" not in answer:
                tally.errors += 1
                continue
            tally.ok += 1
            if rng.random() < feedback_rate:
                vote = 1 if rng.random() < THUMBS_UP_SHARE else -1
                body = {"conversation_id": answer["conversation_id"], "feedback": vote}
                if _post(http, f"{base}/feedback", body, tally) is None:
                    tally.feedback_errors += 1
                else:
                    tally.feedback += 1
            bar.set_postfix(ok=tally.ok, errors=tally.errors, refresh=False)
    return tally

"""The knowledge base: documents, their loaders, and the profile that fills placeholders."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
import yaml

from assistant.config import Settings

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
# Words that read as a UI element's kind rather than its name: "the Contact Us section".
_KIND_WORDS = {"SECTION", "BUTTON", "OPTION", "LINK", "TAB", "ICON", "MENU", "PAGE", "AREA"}


class KnowledgeBaseError(ValueError):
    """A knowledge-base file that cannot be read as documents."""


@dataclass(frozen=True)
class Document:
    id: str
    question: str
    response: str
    intent: str
    category: str
    tags: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def document_id(question: str, response: str, intent: str) -> str:
    """A short content hash: the same row always gets the same id, across loads and machines."""
    digest = hashlib.sha1(f"{intent}\x1f{question}\x1f{response}".encode(), usedforsecurity=False)
    return digest.hexdigest()[:12]


def _clean(value: object) -> str:
    return "" if value is None else str(value).strip()


def make_document(row: Mapping[str, object]) -> Document:
    question = _clean(row.get("question") or row.get("instruction"))
    response = _clean(row.get("response") or row.get("answer"))
    intent = _clean(row.get("intent"))
    if not question or not response:
        raise KnowledgeBaseError(f"a document needs a question and a response: {dict(row)!r:.200}")
    return Document(
        id=_clean(row.get("id")) or document_id(question, response, intent),
        question=question,
        response=response,
        intent=intent or "unknown",
        category=_clean(row.get("category")) or "UNKNOWN",
        tags=_clean(row.get("tags")),
    )


def deduplicate(docs: Iterable[Document]) -> list[Document]:
    """Drop exact repeats (same question, response and intent), keeping the first."""
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for doc in docs:
        key = (doc.question, doc.response, doc.intent)
        if key not in seen:
            seen.add(key)
            unique.append(doc)
    return unique


def read_csv(path: Path) -> list[Document]:
    # utf-8-sig: a CSV saved by Excel starts with a byte-order mark.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if not columns & {"instruction", "question"} or not columns & {"response", "answer"}:
            raise KnowledgeBaseError(
                f"{path}: expected Bitext columns instruction,intent,category,tags,response; "
                f"found {sorted(columns)}"
            )
        return deduplicate(make_document(row) for row in reader)


def write_csv(path: Path, docs: Iterable[Document]) -> None:
    """Write documents in the Bitext format, readable by `read_csv`."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "intent", "category", "tags", "response"])
        for doc in docs:
            writer.writerow([doc.question, doc.intent, doc.category, doc.tags, doc.response])


def read_json(path: Path) -> list[Document]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise KnowledgeBaseError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise KnowledgeBaseError(f"{path}: expected a JSON list of document objects")
    return deduplicate(make_document(item) for item in data)


def read_file(path: Path) -> list[Document]:
    if not path.is_file():
        raise KnowledgeBaseError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        return read_json(path)
    return read_csv(path)


def cache_key(url: str) -> str:
    return hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()[:10]


def download(url: str, cache_dir: Path, timeout: float) -> Path:
    """Fetch the dataset once into `cache_dir`; later calls reuse the cached copy. The name
    carries a hash of the URL: two KBs that share a file name never share a cache entry."""
    name = Path(url.split("?")[0]).name or "kb.csv"
    target = cache_dir / f"{cache_key(url)}-{name}"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    response = requests.get(url, timeout=timeout)
    response.raise_for_status()
    partial = target.with_suffix(".part")
    partial.write_bytes(response.content)
    partial.replace(target)
    return target


@dataclass(frozen=True)
class KnowledgeBase:
    documents: list[Document]
    source: str

    def __len__(self) -> int:
        return len(self.documents)


def load(
    source: str, *, demo: Path, cache_dir: Path, url: str, timeout: float = 10.0
) -> KnowledgeBase:
    """Load a KB from a path, a URL, `demo`, or `auto` (cached or downloaded dataset, else demo).

    `auto` never fails for want of network: the bundled demo KB is the floor.
    """
    if source == "demo":
        return KnowledgeBase(read_csv(demo), "demo")
    if source.startswith(("http://", "https://")):
        return KnowledgeBase(read_file(download(source, cache_dir, timeout)), source)
    if source != "auto":
        return KnowledgeBase(read_file(Path(source)), source)
    try:
        path = download(url, cache_dir, timeout)
        return KnowledgeBase(read_file(path), str(path))
    except (requests.RequestException, OSError, ValueError) as exc:
        log.warning(
            "Bitext dataset unavailable (%s); using the bundled demo KB", type(exc).__name__
        )
        return KnowledgeBase(read_csv(demo), "demo")


def humanize(name: str) -> str:
    """`CONTACT_US_SECTION` -> `Contact Us section`: readable when the profile has no value."""
    words = [w for w in re.split(r"[_\s]+", name.strip()) if w]
    if not words:
        return ""
    kind = words.pop().lower() if len(words) > 1 and words[-1].upper() in _KIND_WORDS else None
    label = " ".join(w.capitalize() for w in words)
    return f"{label} {kind}" if kind else label


_REPEATED_KIND = re.compile(rf"\b({'|'.join(sorted(_KIND_WORDS))}) \1\b", re.IGNORECASE)


@dataclass(frozen=True)
class Profile:
    company_name: str = "our service"
    placeholders: Mapping[str, str] = field(default_factory=dict)

    def value(self, name: str) -> str:
        key = re.sub(r"\s+", "_", name.strip()).upper()
        return self.placeholders.get(key) or humanize(key)

    def fill(self, text: str) -> str:
        """Replace every `{{NAME}}`; a stray brace pair never reaches a customer."""
        filled = _PLACEHOLDER.sub(lambda m: self.value(m.group(1)), text)
        # "the {{CONTACT_US_SECTION}} section" would otherwise read "Contact Us section section".
        filled = _REPEATED_KIND.sub(r"\1", filled)
        return filled.replace("{{", "").replace("}}", "")


def load_profile(path: Path) -> Profile:
    if not path.is_file():
        log.warning("No business profile at %s; placeholders will be rendered as words", path)
        return Profile()
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    placeholders = {str(k).upper(): str(v) for k, v in (data.get("placeholders") or {}).items()}
    return Profile(str(data.get("company_name") or "our service"), placeholders)


def read_lines(path: Path) -> list[str]:
    """One text per line; blank lines and `#` comments are skipped. A missing file is empty."""
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def load_configured(settings: Settings, source: str | None = None) -> KnowledgeBase:
    return load(
        source or settings.kb_source,
        demo=settings.demo_kb,
        cache_dir=settings.cache_dir,
        url=settings.kb_url,
        timeout=settings.download_timeout,
    )

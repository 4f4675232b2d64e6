"""Help-centre articles as knowledge-base entries: a folder of Markdown or HTML files, each
split into sections at its headings.

A section's id is `<path relative to the folder>#<GitHub-style slug of its heading>`
(`billing.md#refunds`), its question is the heading, its text the section's body and its
category the article's title. A Markdown file's YAML front matter may give `title`, `url` and
`category`; an HTML file's `<title>` and `<link rel="canonical">` do the same. Markdown front
matter may also give sections alternate questions (customers' own wording, as a CSV's
`alternates` column does), under the section's anchor:

    alternates:
      payment-methods: ["do you take paypal?", "can I pay with apple pay?"]
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import yaml
from markdown_it import MarkdownIt

from assistant.knowledge import Document, KnowledgeBaseError, alternates, read_text

log = logging.getLogger(__name__)

MARKDOWN = {".md", ".markdown"}
HTML = {".html", ".htm"}
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)
# A code fence's opening or closing line: three or more backticks or tildes.
_FENCE = re.compile(r"\s*(`{3,}|~{3,})")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@dataclass
class Section:
    heading: str
    lines: list[str] = field(default_factory=list)


@dataclass
class Article:
    """One parsed file: its title, URL, category and sections (the text before the first
    heading is a section named after the article), and alternate questions by section anchor
    (a list of strings, or one string separated by `|`)."""

    title: str
    url: str = ""
    category: str = ""
    sections: list[Section] = field(default_factory=list)
    alternates: dict[str, object] = field(default_factory=dict)


def parse_markdown(text: str, fallback_title: str) -> Article:
    meta: dict = {}
    match = _FRONT_MATTER.match(text)
    if match:
        loaded = yaml.safe_load(match.group(1))
        meta = loaded if isinstance(loaded, dict) else {}
        text = text[match.end() :]
    lines = text.splitlines()
    # Heading lines come from the parser, so a "#" inside a code block is not a heading.
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    headings = {
        token.map[0]: tokens[i + 1].content
        for i, token in enumerate(tokens)
        if token.type == "heading_open" and token.map
    }
    ends = {t.map[0]: t.map[1] for t in tokens if t.type == "heading_open" and t.map}
    # A paragraph's later lines continue its first, as a renderer joins them: a writer who
    # wraps at 80 columns writes one sentence over two lines, and the answer must not break
    # it ("Cancel⏎Plus"). Each list item, table row, line of code and HTML block keeps its
    # own line: none of them is a paragraph's continuation.
    continuing = {
        row
        for token in tokens
        if token.type == "paragraph_open" and token.map
        for row in range(token.map[0] + 1, token.map[1])
    }
    article = Article(
        str(meta.get("title") or ""), str(meta.get("url") or ""), str(meta.get("category") or "")
    )
    extra = meta.get("alternates")
    if isinstance(extra, dict):
        article.alternates = {str(anchor).lstrip("#"): value for anchor, value in extra.items()}
    current = Section("")
    row = 0
    while row < len(lines):
        if row in headings:
            article.sections.append(current)
            current = Section(headings[row])
            row = ends[row]
            continue
        previous = current.lines[-1] if current.lines else ""
        # Two trailing spaces or a backslash: a hard break, kept.
        if row in continuing and previous.strip() and not previous.endswith(("  ", "\\")):
            current.lines[-1] = f"{previous.rstrip()} {lines[row].lstrip()}"
        else:
            current.lines.append(lines[row])
        row += 1
    article.sections.append(current)
    first = next((s.heading for s in article.sections if s.heading), "")
    article.title = article.title or first or fallback_title
    return article


class _HtmlSections(HTMLParser):
    """An HTML page's sections, with its text as Markdown: list items as `- ` or `1. ` lines,
    table cells parted by ` | `, `<pre>` as fenced code, blank lines between blocks."""

    HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
    SKIPPED = {"script", "style", "nav", "footer", "head"}
    BLOCKS = {"p", "div", "table", "blockquote"}
    LINES = {"br"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.article = Article("")
        self.current = Section("")
        self._heading: list[str] | None = None
        self._title: list[str] | None = None
        self._skipping = 0
        self._preformatted = 0
        # One entry per open list: None for <ul>, the last item's number for <ol>.
        self._lists: list[int | None] = []
        self._cells = 0
        self._rows = 0

    def _write(self, text: str) -> None:
        self.current.lines.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "title":
            self._title = []
        elif tag == "link" and values.get("rel") == "canonical":
            self.article.url = values.get("href") or ""
        elif tag == "meta" and values.get("name") == "category":
            self.article.category = values.get("content") or ""
        elif tag in self.SKIPPED:
            self._skipping += 1
        elif tag in self.HEADINGS:
            self._heading = []
        elif tag == "br":
            self._write("\n")
        elif tag == "pre":
            if not self._preformatted:
                self._write("\n\n```\n")
            self._preformatted += 1
        elif tag in ("ul", "ol"):
            self._lists.append(0 if tag == "ol" else None)
            self._write("\n\n")
        elif tag == "li":
            number = self._lists[-1] if self._lists else None
            if number is None:
                self._write("\n- ")
            else:
                self._lists[-1] = number + 1
                self._write(f"\n{number + 1}. ")
        elif tag == "table":
            self._rows = 0
            self._write("\n\n")
        elif tag == "tr":
            self._cells = 0
        elif tag in self.BLOCKS:
            self._write("\n\n")
        elif tag in ("td", "th"):
            if self._cells:
                self._write(" | ")
            self._cells += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._title is not None:
            self.article.title = " ".join("".join(self._title).split())
            self._title = None
        elif tag in self.SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self.HEADINGS and self._heading is not None:
            self.article.sections.append(self.current)
            self.current = Section(" ".join("".join(self._heading).split()))
            self._heading = None
        elif tag == "pre" and self._preformatted:
            self._preformatted -= 1
            if not self._preformatted:
                self._write("\n```\n\n")
        elif tag in ("ul", "ol") and self._lists:
            self._lists.pop()
            self._write("\n\n")
        elif tag == "tr":
            self._rows += 1
            # A Markdown table's header row is followed by its delimiter row.
            delimiter = " | ".join(["---"] * self._cells)
            self._write(f"\n{delimiter}\n" if self._rows == 1 and self._cells else "\n")
        elif tag in self.BLOCKS:
            self._write("\n\n")
        elif tag in self.LINES:
            self._write("\n")

    def handle_data(self, data: str) -> None:
        if self._title is not None:
            self._title.append(data)
        elif self._heading is not None:
            self._heading.append(data)
        elif self._skipping:
            return
        elif self._preformatted:
            # As a browser does: a newline right after <pre> is not content.
            opened = self.current.lines and self.current.lines[-1].endswith("```\n")
            self._write(data.removeprefix("\n") if opened else data)
        else:
            # A newline in HTML source is a space: blocks and <br> break lines.
            self._write(re.sub(r"\s+", " ", data))


def parse_html(text: str, fallback_title: str) -> Article:
    parser = _HtmlSections()
    parser.feed(text)
    parser.close()
    article = parser.article
    article.sections.append(parser.current)
    for section in article.sections:
        section.lines = ["".join(section.lines)]
    first = next((s.heading for s in article.sections if s.heading), "")
    article.title = article.title or first or fallback_title
    return article


def _body(section: Section) -> str:
    """The section's text as its answer: each line's runs of whitespace as one space, blank
    lines between blocks kept (one for a run of them: a renderer otherwise reads a paragraph
    after a table as its last row, or after a list as its last item's), and fenced code as
    written, its alignment included."""
    out: list[str] = []
    fence = ""
    for line in "\n".join(section.lines).split("\n"):
        marker = _FENCE.match(line)
        if fence:
            out.append(line.rstrip())
            closes = (
                marker and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence)
            )
            if closes and not line.strip().strip(fence[0]):
                fence = ""
            continue
        if marker:
            fence = marker.group(1)
        text = " ".join(line.split())
        if text or (out and out[-1]):
            out.append(text)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def article_documents(article: Article, relative: str) -> list[Document]:
    """The article's sections with text, as Documents."""
    docs = []
    anchors: Counter[str] = Counter()
    for section in article.sections:
        body = _body(section)
        if not body:
            # A heading with no text of its own ("# Billing" over its "## Refunds") is the
            # article's structure, not an empty entry.
            continue
        anchor = slug(section.heading) if section.heading else ""
        if anchor:
            # GitHub numbers repeated anchors: "faq", "faq-1", "faq-2".
            seen = anchors[anchor]
            anchors[anchor] += 1
            anchor = f"{anchor}-{seen}" if seen else anchor
        doc_id = f"{relative}#{anchor}" if anchor else relative
        url = f"{article.url}#{anchor}" if article.url and anchor else article.url
        question = section.heading or article.title
        docs.append(
            Document(
                id=doc_id,
                question=question,
                response=body,
                intent="",
                category=article.category or article.title,
                url=url,
                alternates=alternates(article.alternates.get(anchor), question) if anchor else (),
            )
        )
    unknown = set(article.alternates) - {doc.id.partition("#")[2] for doc in docs}
    if unknown:
        log.warning(
            "%s: alternates for %s, which name no section (a section's anchor is its id after "
            "'#'; `assistant ingest --kb FOLDER --ids` lists them)",
            relative,
            ", ".join(sorted(unknown)),
        )
    return docs


def read_folder(folder: Path) -> list[Document]:
    """Every Markdown and HTML file under `folder`, in path order, split into sections.
    Raises KnowledgeBaseError when the folder holds no such file, or a file is not UTF-8."""
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MARKDOWN | HTML
    )
    if not files:
        raise KnowledgeBaseError(f"{folder}: no Markdown (.md) or HTML (.html) articles found")
    docs = []
    for path in files:
        relative = path.relative_to(folder).as_posix()
        parse = parse_markdown if path.suffix.lower() in MARKDOWN else parse_html
        article = parse(read_text(path), path.stem.replace("-", " ").replace("_", " "))
        docs += article_documents(article, relative)
    return docs

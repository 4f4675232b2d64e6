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
from pathlib import Path

import yaml
from bs4 import BeautifulSoup
from markdown_it import MarkdownIt
from markdownify import MarkdownConverter

from assistant.knowledge import Document, KnowledgeBaseError, alternates, read_text

log = logging.getLogger(__name__)

MARKDOWN = {".md", ".markdown"}
HTML = {".html", ".htm"}
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)


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
    """A Markdown file as an Article: its YAML front matter (`title`, `url`, `category`,
    `alternates`), then its sections (see `_sections`)."""
    meta: dict = {}
    match = _FRONT_MATTER.match(text)
    if match:
        loaded = yaml.safe_load(match.group(1))
        meta = loaded if isinstance(loaded, dict) else {}
        text = text[match.end() :]
    article = Article(
        str(meta.get("title") or ""), str(meta.get("url") or ""), str(meta.get("category") or "")
    )
    extra = meta.get("alternates")
    if isinstance(extra, dict):
        article.alternates = {str(anchor).lstrip("#"): value for anchor, value in extra.items()}
    return _sections(text, article, fallback_title)


def _sections(text: str, article: Article, fallback_title: str) -> Article:
    """Split Markdown `text` at its headings into `article.sections`, each line as it should
    read in an answer; the article's title falls back to its first heading,
    then to `fallback_title`."""
    # As the parser numbers lines: it reads "\r\n" and "\r" as "\n" and no other character
    # as a line break (str.splitlines would also break at U+2028 or a form feed, and every
    # heading after one would start on the wrong line).
    lines = re.sub(r"\r\n?", "\n", text).split("\n")
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    # Heading lines come from the parser, so a "#" inside a code block is not a heading, and
    # a heading's name is its text: "## [Refunds](/refunds)" is "Refunds", as GitHub slugs it.
    headings = {
        token.map[0]: " ".join(
            "".join(
                " " if child.type == "softbreak" else child.content
                for child in tokens[i + 1].children or ()
                if child.type in ("text", "code_inline", "softbreak")
            ).split()
        )
        for i, token in enumerate(tokens)
        if token.type == "heading_open" and token.map
    }
    ends = {t.map[0]: t.map[1] for t in tokens if t.type == "heading_open" and t.map}
    # A paragraph's later lines continue its first, as a renderer joins them: a writer who
    # wraps at 80 columns writes one sentence over two lines, and the answer must not break
    # it ("Cancel⏎Plus"). Each list item, table row, line of code and HTML block keeps its
    # own line: none of them is a paragraph's continuation.
    continuing = _rows(tokens, "paragraph_open", first=False)
    verbatim = _rows(tokens, "fence", "code_block")
    current = Section("")
    row = 0
    broken = False
    while row < len(lines):
        if row in headings:
            article.sections.append(current)
            current = Section(headings[row])
            row = ends[row]
            continue
        previous = current.lines[-1] if current.lines else ""
        line = lines[row]
        if row in verbatim:
            current.lines.append(line.rstrip())
        elif row in continuing and previous.strip() and not broken:
            # A quoted paragraph's later lines repeat its ">" markers.
            rest = re.sub(r"^\s*(>\s?)*", "", line)
            current.lines[-1] = f"{previous.rstrip()} {' '.join(rest.split())}"
        elif line.strip() or previous.strip():
            # Indentation is structure (a nested item, indented code); runs of spaces inside
            # a line are not. Runs of blank lines are one.
            indent = line[: len(line) - len(line.lstrip())]
            current.lines.append(indent + " ".join(line.split()) if line.strip() else "")
        # Two trailing spaces or a backslash: a hard break, kept.
        broken = line.endswith(("  ", "\\"))
        row += 1
    article.sections.append(current)
    for section in article.sections:
        while section.lines and not section.lines[-1].strip():
            section.lines.pop()
    first = next((s.heading for s in article.sections if s.heading), "")
    article.title = article.title or first or fallback_title
    return article


def _rows(tokens: list, *types: str, first: bool = True) -> set[int]:
    """The source rows (0-based) of the block tokens of `types`; with `first=False`, each
    block's rows after its first."""
    return {
        row
        for token in tokens
        if token.type in types and token.map
        for row in range(token.map[0] + (0 if first else 1), token.map[1])
    }


class _Markdown(MarkdownConverter):
    """markdownify's converter, with code and table cells kept intact in Markdown."""

    def convert_pre(self, el, text: str, parent_tags: set[str]) -> str:
        # A fence longer than any run of backticks in the code, which would close it early.
        block = super().convert_pre(el, text, parent_tags)
        longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=0)
        if not longest:
            return block
        fence = "`" * (longest + 1)
        return f"\n\n{fence}{block.strip()[3:-3]}{fence}\n\n"

    def convert_td(self, el, text: str, parent_tags: set[str]) -> str:
        return super().convert_td(el, text.replace("|", "\\|"), parent_tags)

    def convert_th(self, el, text: str, parent_tags: set[str]) -> str:
        return super().convert_th(el, text.replace("|", "\\|"), parent_tags)


def parse_html(text: str, fallback_title: str) -> Article:
    """An HTML page as an Article: its `<title>`, `<link rel="canonical">` and
    `<meta name="category">`, then its body converted to Markdown by markdownify (navigation,
    footers, scripts and styles dropped) and split at its headings as a Markdown file is."""
    # Browsers read a stray "</br>" as "<br>"; the parser would drop it.
    soup = BeautifulSoup(re.sub(r"</br\s*>", "<br>", text, flags=re.IGNORECASE), "html.parser")
    title = soup.find("title")
    canonical = soup.find("link", rel="canonical")
    category = soup.find("meta", attrs={"name": "category"})
    article = Article(
        " ".join(title.get_text().split()) if title else "",
        str(canonical.get("href") or "") if canonical else "",
        str(category.get("content") or "") if category else "",
    )
    for tag in soup.find_all(["head", "script", "style", "nav", "footer"]):
        tag.decompose()
    converter = _Markdown(
        heading_style="ATX", bullets="-", escape_asterisks=False, escape_underscores=False
    )
    return _sections(converter.convert_soup(soup), article, fallback_title)


def article_documents(article: Article, relative: str) -> list[Document]:
    """The article's sections with text, as Documents."""
    docs = []
    anchors: Counter[str] = Counter()
    for section in article.sections:
        body = "\n".join(section.lines).strip("\n")
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

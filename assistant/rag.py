"""The assistant: decide (`decisions`), then generate (or extract) from the retrieved
entries, fill placeholders, time it; and the builders that put one together from settings."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from assistant import knowledge, prompts, replies
from assistant.answers import ABANDONED, Answer, Turn
from assistant.config import Settings
from assistant.decisions import Decisions
from assistant.knowledge import Document, Profile
from assistant.languages import LANGUAGE_NAMES
from assistant.llm import (
    CallRecord,
    Completion,
    ExtractiveProvider,
    IncompleteStream,
    Provider,
    ProviderError,
    make_provider,
)
from assistant.llm.echo import InstructionsEchoed, instructions_of
from assistant.retrieval import (
    EmbeddingCache,
    Hit,
    RetrievalSettings,
    Retriever,
    make_encoder,
    wordllama_encoder,
)
from assistant.signals import HandoffSignals
from assistant.signals import read_examples as read_handoff_examples

log = logging.getLogger(__name__)

HISTORY_TURNS = 3
# "[1]", "[2, 3]", "[1][3]": the entries an answer cites, by their number in the prompt.
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def cited_ids(text: str, shown: Sequence[str]) -> list[str]:
    """The ids of the entries `text` cites as [n], in order of first citation; `shown` are the
    ids of the entries the prompt numbered 1, 2, ... (numbers outside them are ignored)."""
    cited: list[str] = []
    for group in _CITATION.findall(text):
        for number in re.findall(r"\d+", group):
            n = int(number)
            if 1 <= n <= len(shown) and shown[n - 1] not in cited:
                cited.append(shown[n - 1])
    return cited


@dataclass(frozen=True)
class Retraction:
    """In a stream: the text sent so far is withdrawn (the model failed after it started);
    the extractive answer follows in its place."""

    reason: str


def _placeholder_free(text: str, start: int) -> int:
    """How much of `text` may be sent, `text[:start]` being sent already: not from a
    "{{PLACEHOLDER}}" still open, which may arrive split across deltas."""
    held = text[start:]
    cut = held.rfind("{{")
    if cut < 0 and held.endswith("{"):
        cut = len(held) - 1
    return start + cut if cut >= 0 and "}}" not in held[cut:] else len(text)


def build_messages(
    question: str, hits: list[Hit], company: str, history: Sequence[Turn] = ()
) -> list[dict[str, str]]:
    context = "\n".join(
        prompts.CONTEXT_ENTRY.format(
            number=n, question=hit.document.question, response=hit.document.response
        )
        for n, hit in enumerate(hits, start=1)
    )
    system = prompts.ANSWER_SYSTEM.format(company=company, canary=prompts.canary())
    messages = [{"role": "system", "content": system}]
    for turn in history[-HISTORY_TURNS:]:
        messages += [
            {"role": "user", "content": turn.question},
            {"role": "assistant", "content": turn.answer},
        ]
    messages.append(
        {"role": "user", "content": prompts.ANSWER_USER.format(context=context, question=question)}
    )
    return messages


class Assistant(Decisions):
    """Answers one customer message: decides (small talk, handoff, out of scope or answer:
    `Decisions`), then generates from the retrieved entries with the provider, falling back to
    the best entry verbatim when the provider fails. `provider` answers (and translates, when
    it is a served model), `knowledge_source` names the KB the answers come from; the other
    arguments are `Decisions`'."""

    def __init__(
        self,
        retriever: Retriever,
        provider: Provider,
        profile: Profile,
        k: int = 5,
        knowledge_source: str = "custom",
        signals: HandoffSignals | None = None,
        handoffs_forwarded: bool = False,
        phone_region: str = "US",
    ):
        super().__init__(retriever, profile, k, signals, handoffs_forwarded, phone_region)
        self.knowledge_source = knowledge_source
        self.provider = provider
        self._extractive = ExtractiveProvider()
        self.provider_calls = CallRecord()
        # A question in another language is translated for retrieval by an answer model that
        # can (a served one; the bundled 135M model cannot), else handed off for its language.
        self.translates = provider.name in ("openai", "ollama")

    def _translate(self, question: str, answer: Answer) -> str | None:
        """`question` in the KB's language by the answer model, to retrieve with (the model
        then answers the original, in its language); None when the model fails or replies
        with something that is not a plausible translation. Its tokens count to `answer`."""
        language = LANGUAGE_NAMES.get(self.language, self.language)
        messages = [
            {"role": "system", "content": prompts.TRANSLATE_SYSTEM.format(language=language)},
            {"role": "user", "content": question},
        ]
        try:
            completion = self.provider.complete(messages)
        except ProviderError as exc:
            log.warning("translating a question failed (%s): handed off for its language", exc)
            self._called(ok=False)
            return None
        self._called(ok=True)
        self._count(answer, completion)
        text = completion.text.strip().strip('"')
        if not text or len(text) > 4 * len(question) + 40:
            return None
        return text

    def answer(
        self, question: str, session_id: str | None = None, history: Sequence[Turn] = ()
    ) -> Answer:
        started = time.perf_counter()
        answer, hits, topics = self.decide(question, session_id, history)
        if hits:
            messages, references, shown = self._prompt(question, hits, history, topics)
            try:
                completion = self.provider.complete(messages, references=references)
                if completion.truncated:
                    self._count(answer, completion)  # spent, though not given
                    raise IncompleteStream("the answer was cut at the model's token limit")
                if instructions_of(messages).echoed(completion.text):
                    raise InstructionsEchoed("the answer repeats the instructions")
                answer.provider = self.provider.name
                self._called(ok=True)
            except ProviderError as exc:
                self._note_fallback(answer, exc)
                completion = self._extractive.complete(messages, references=references)
            self._take(answer, completion, shown, topics)
        return self._finish(answer, started)

    def stream(
        self,
        question: str,
        session_id: str | None = None,
        history: Sequence[Turn] = (),
        abandoned: Callable[[Answer], None] | None = None,
    ) -> Iterator[str | Retraction | Answer]:
        """Text deltas as the provider writes them, then the finished Answer. A provider that
        fails, stops before it says it finished, or starts repeating its instructions, is
        replaced by the extractive answer: when text was already sent, a `Retraction` comes
        first. No run of the instructions is ever sent, and no fragment is ever the answer.

        Closed before its end (the customer left), the stream stops the provider's request at
        once and, when the model was already asked, hands `abandoned` an Answer with status
        `abandoned`, no text and error `ClientDisconnected`."""
        started = time.perf_counter()
        answer, hits, topics = self.decide(question, session_id, history)
        if not hits:
            # A decided reply (a handoff, a decline, small talk) is text too: a client that
            # shows deltas shows it.
            self._finish(answer, started)
            yield answer.answer
            yield answer
            return
        messages, references, shown = self._prompt(question, hits, history, topics)
        guard = instructions_of(messages).guard()
        answer.provider = self.provider.name
        parts = self.provider.stream(messages, references=references)
        completion, sent = None, 0
        try:
            try:
                for part in parts:
                    if isinstance(part, Completion):
                        if part.truncated:
                            self._count(answer, part)  # spent, though not given
                            raise IncompleteStream("the answer was cut at the model's token limit")
                        completion = part
                        continue
                    if guard.add(part):
                        raise InstructionsEchoed("the answer repeats the instructions")
                    ready = _placeholder_free(guard.text[: guard.releasable()], sent)
                    if ready > sent:
                        yield self.profile.fill(guard.text[sent:ready])
                        sent = ready
                if completion is None:
                    raise IncompleteStream("the stream ended without a completion")
                if sent < len(guard.text):
                    yield self.profile.fill(guard.text[sent:])
                self._called(ok=True)
            except ProviderError as exc:
                parts.close()
                self._note_fallback(answer, exc)
                if sent:
                    yield Retraction(answer.error or "ProviderError")
                completion = self._extractive.complete(messages, references=references)
                # The knowledge base's own text: its {{PLACEHOLDERS}} are filled like a delta's.
                yield self.profile.fill(completion.text)
        except GeneratorExit:
            # Wherever the customer left, the fallback's deltas included.
            parts.close()
            answer.status, answer.error, answer.answer = ABANDONED, "ClientDisconnected", ""
            if abandoned is not None:
                abandoned(self._finish(answer, started))
            raise
        finally:
            parts.close()
        self._take(answer, completion, shown, topics)
        yield self._finish(answer, started)

    def _called(self, ok: bool) -> None:
        self.provider_calls.add(ok)

    @property
    def provider_status(self) -> str:
        """The answer provider's health from its recent calls: `ok`, `degraded` (the latest
        failed, or most of the last ten) or `unused`; always `ok` without a model."""
        if self.provider.name == ExtractiveProvider.name:
            return "ok"
        return self.provider_calls.status

    def _prompt(
        self, question: str, hits: list[Hit], history: Sequence[Turn], topics: int = 1
    ) -> tuple[list[dict[str, str]], list[str], list[str]]:
        """The messages, the answers for the extractive fallback (the first `topics` hits'
        answers together, then each other hit's) and the ids of the entries the prompt numbers
        [1], [2], ..."""
        # Small local models answer faster and no worse from the best entry alone (one per
        # question asked).
        entries = max(self.provider.context_entries or len(hits), topics)
        messages = build_messages(question, hits[:entries], self.profile.company_name, history)
        shown = [hit.document.id for hit in hits[:entries]]
        answers = [hit.document.response for hit in hits]
        if topics > 1:
            # Each answer under its entry's title, so a customer who asked two things sees
            # which answer is which, and a wrong one ("No. With the 301 redirect ...") reads as
            # an answer to another question, not as "no" to theirs. An intent-labelled KB's
            # questions are customers' phrasings, not titles: its answers stand alone.
            answers[:topics] = [
                answer if hit.document.intent else f"**{hit.document.question}**\n\n{answer}"
                for hit, answer in zip(hits, answers[:topics], strict=False)
            ]
        return messages, ["\n\n".join(answers[:topics]), *answers[topics:]], shown

    def _note_fallback(self, answer: Answer, exc: ProviderError) -> None:
        log.warning("provider %s failed (%s); answering extractively", self.provider.name, exc)
        if not isinstance(exc, InstructionsEchoed):
            self._called(ok=False)
        answer.fallback = True
        answer.error = type(exc.__cause__ or exc).__name__
        answer.provider = self._extractive.name

    def _take(
        self, answer: Answer, completion: Completion, shown: Sequence[str], topics: int = 1
    ) -> None:
        if answer.provider == self._extractive.name:
            # The best entry itself (one per question asked), verbatim: its own source.
            answer.cited_sources, answer.uncited = list(shown[:topics]), False
        else:
            answer.cited_sources = cited_ids(completion.text, shown)
            answer.uncited = bool(shown) and not answer.cited_sources
        answer.answer = completion.text
        answer.model_used = completion.model
        self._count(answer, completion)

    @staticmethod
    def _count(answer: Answer, completion: Completion) -> None:
        """Add a completion's tokens and cost to the answer's (a translation's, then the
        answer's own)."""
        answer.prompt_tokens += completion.prompt_tokens
        answer.completion_tokens += completion.completion_tokens
        answer.cost_usd += completion.cost_usd
        answer.tokens_estimated = answer.tokens_estimated or completion.tokens_estimated

    def _finish(self, answer: Answer, started: float) -> Answer:
        # Filled after generation too: a model may echo a {{PLACEHOLDER}} from its context.
        answer.answer = self.profile.fill(answer.answer)
        answer.response_time = time.perf_counter() - started
        return answer


# Bump when the Retriever's pickled state changes shape: older index files are then rebuilt.
INDEX_FORMAT = 8


def _index_path(settings: Settings, documents: Sequence[Document], parts: Sequence[str]) -> Path:
    hasher = hashlib.sha256()
    for doc in documents:
        hasher.update(json.dumps(doc.to_dict(), sort_keys=True).encode())
    for part in (str(INDEX_FORMAT), *parts):
        hasher.update(part.encode())
    return settings.cache_dir / f"index-{hasher.hexdigest()[:16]}.pkl"


def build_retriever(
    settings: Settings, documents: Sequence[Document], *, lexical: bool = False
) -> Retriever:
    """The configured retriever over `documents`; `lexical` is plain minsearch (no intent
    model, no embeddings). A built index is kept in the cache folder under a hash of the KB's
    content, the settings, the encoder and the background, so a restart loads it (about a
    second for 25,000 entries) instead of building it again."""
    tuned = RetrievalSettings.load(settings.retrieval_settings)
    if lexical:
        tuned = replace(tuned, use_intent_model=False, hybrid=False)
    encoder = None if lexical else make_encoder(settings)
    background = knowledge.read_lines(settings.out_of_domain)
    parts = [json.dumps(asdict(tuned), sort_keys=True, default=str), *background]
    # The encoder's own gate position is part of the index: a changed one rebuilds it. So is
    # the model the intent model read embeddings with, if any (`Retriever._intent_embeddings`).
    intent_reader = wordllama_encoder()
    own = (
        [
            encoder.name,
            str(encoder.scope_position),
            intent_reader.name if intent_reader else "no intent embeddings",
        ]
        if encoder
        else ["none"]
    )
    path = _index_path(settings, documents, [*own, *parts])
    if path.is_file():
        try:
            return Retriever.load(path, encoder)
        except (OSError, EOFError, TypeError, AttributeError, pickle.UnpicklingError) as exc:
            log.warning("index cache %s unreadable (%s); rebuilding", path.name, exc)
    embeddings = EmbeddingCache(encoder, settings.cache_dir) if encoder else None
    retriever = Retriever(documents, tuned, background, encoder, embeddings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        retriever.save(path)
    except OSError as exc:
        log.warning("could not keep the index in %s (%s)", path.parent, exc)
    return retriever


def build_signals(settings: Settings, retriever: Retriever) -> HandoffSignals:
    """Handoff signals learnt from `data/handoff-examples.txt` against this KB's questions."""
    return HandoffSignals(
        read_handoff_examples(settings.handoff_examples),
        # Not the alternates: a team's contact entry may keep "I want to speak to an agent"
        # as one, and a request for a person must never look like a KB question.
        [doc.question for doc in retriever.documents],
        knowledge.read_lines(settings.out_of_domain),
        # Whatever the retrieval encoder, so the signal is the same on every install; not
        # where the operator asked for no embeddings at all.
        encoder=None if settings.embedding_provider == "none" else wordllama_encoder(),
    )


def _own_kb(settings: Settings, source: str | None) -> bool:
    """Whether `source` (default: KB_PATH) is a team's own KB: not the demo KB, in any
    spelling, nor the Bitext dataset the demo profile was written for."""
    source = source or settings.kb_source
    if source in {"auto", "demo", settings.kb_url}:
        return False
    return Path(source).resolve() != settings.demo_kb.resolve()


def _demo_company(settings: Settings) -> str:
    """The company the bundled business profile speaks for."""
    return knowledge.load_profile(settings.demo_kb.parent / "business-profile.yaml").company_name


def demo_profile_on_own_kb(settings: Settings, profile: Profile, source: str | None) -> bool:
    """Whether `profile` is the demo's while `source` (default: KB_PATH) is a team's own KB:
    declines and handoffs would then tell its customers to call the fictional demo company."""
    return _own_kb(settings, source) and profile.company_name == _demo_company(settings)


def template_profile(settings: Settings, profile: Profile) -> bool:
    """Whether `profile` still holds the example of data/business-profile-template.yaml, its
    company's name or any of its contact details: a newcomer nearly served it unedited, and
    its made-up shop reads as a real one. False when the template is not there."""
    path = settings.demo_kb.parent / "business-profile-template.yaml"
    if not path.is_file():
        return False
    template = knowledge.load_profile(path)
    if profile.company_name == template.company_name:
        return True
    # The contact details themselves: hours ("9 to 5") may well be a real business's too.
    contacts = {template.placeholders.get(name, "").strip() for name in replies.CHANNELS}
    own = {profile.placeholders.get(name, "").strip() for name in replies.CHANNELS}
    return bool((own & contacts) - {""})


def build_assistant(settings: Settings, source: str | None = None) -> Assistant:
    """The assistant the settings describe, over the KB `source` (default: the configured one)."""
    kb = knowledge.load_configured(settings, source)
    log.info("knowledge base: %d documents from %s", len(kb), kb.source)
    retriever = build_retriever(settings, kb.documents)
    profile = knowledge.load_profile(settings.profile_path)
    if demo_profile_on_own_kb(settings, profile, source):
        log.warning(
            "KB_PATH is your own knowledge base, but BUSINESS_PROFILE is the demo's: declines "
            "and handoffs speak for %s and give its contact details. Copy "
            "data/business-profile-template.yaml, fill in your own and set BUSINESS_PROFILE to it",
            profile.company_name,
        )
    if template_profile(settings, profile):
        log.warning(
            "BUSINESS_PROFILE is still the template's example, %s: put your company's name "
            "and contact details in it",
            profile.company_name,
        )
    return Assistant(
        retriever,
        make_provider(settings),
        profile,
        k=settings.num_results,
        knowledge_source=kb.source,
        signals=build_signals(settings, retriever),
        handoffs_forwarded=bool(settings.handoff_webhook_url),
        phone_region=settings.pii_phone_region,
    )

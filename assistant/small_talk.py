"""Small talk: a message that is only a greeting, thanks or goodbye, and its reply."""

from __future__ import annotations

import re

SMALL_TALK_REPLIES = {
    "greeting": "Hello! I'm the {{COMPANY_NAME}} support assistant. What can I help you with?",
    "thanks": "You're welcome! Is there anything else I can help you with?",
    "goodbye": "Goodbye, and enjoy watching {{COMPANY_NAME}}!",
}

# A message is small talk only when these phrases make up all of it: "hi, how do I cancel?"
# is a question.
_SMALL_TALK = {
    "greeting": r"hi+|hello+|hey+|hiya|howdy|greetings|good (morning|afternoon|evening|day)"
    r"|how are you( doing)?|what'?s up",
    # Gratitude and its usual companions: "thanks, that worked!", "ok cool, got it". Said
    # after an answer, none of it is a question, and "that helped" must not read as the
    # frustration examples' "that didn't help".
    "thanks": r"(thanks?( you| u)?( so much| a lot| very much)?|thx|ty|cheers|much appreciated"
    r"|(i )?appreciate (it|that|your help))( for (the|your) (help|answer|assistance))?"
    r"|that('?s| is| was) (very |really )?(helpful|great|perfect)|(that|it|this) (really "
    r"|totally )?(helped|helps|worked|works( now)?|did it|did the trick|(fixed|solved|sorted)"
    r"( it| my problem| the problem| my issue| the issue)?)|(great|cool|perfect|awesome|nice"
    r"|brilliant|excellent|wonderful|amazing|lovely|sweet|good|helpful)( answer)?"
    r"|got it|all (good|set)"
    r"|sorted|you('re| are) (a star|the best)|merci( beaucoup)?|danke( schön| sehr)?"
    r"|gracias|grazie|obrigad[oa]",
    "goodbye": r"bye+|goodbye|good bye|see (you|ya)( later)?|that'?s all|have a (nice|good) day"
    r"|take care",
    None: r"and|ok(ay)?|so|well|there|team|folks|again|friend|assistant|bot",
}
_SMALL_TALK_PHRASES = [
    (kind, re.compile(rf"(?:{pattern})\b\s*")) for kind, pattern in _SMALL_TALK.items()
]


def small_talk_kind(question: str) -> str | None:
    """`greeting`, `thanks` or `goodbye` (the last one said) when the message is only that."""
    text = re.sub(r"\s+", " ", re.sub(r"[^\w\s']+", " ", question.lower())).strip()
    kind = None
    while text:
        for phrase_kind, phrase in _SMALL_TALK_PHRASES:
            match = phrase.match(text)
            if match:
                kind = phrase_kind or kind
                text = text[match.end() :]
                break
        else:
            return None
    return kind

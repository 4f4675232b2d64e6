"""Language names, and the one sentence a customer writing in another language reads in
their own: that the assistant answers in English for now, and how to reach a person (the
handoff reply that follows, with the contact details, stays in the KB's language)."""

LANGUAGE_NAMES = {
    "ar": "Arabic", "de": "German", "en": "English", "es": "Spanish", "fr": "French",
    "it": "Italian", "ja": "Japanese", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese",
    "ru": "Russian", "tr": "Turkish", "zh": "Chinese",
}  # fmt: skip

# By the customer's language (ISO 639-1), for an assistant answering in English: a German
# customer read only "I'm sorry, I can only answer in English for now" (a newcomer's trial).
ENGLISH_ONLY = {
    "ar": "عذرًا، لا يمكنني الرد إلا باللغة الإنجليزية حاليًا. "
    "تجد أدناه، بالإنجليزية، طريقة التواصل مع أحد أعضاء فريقنا.",
    "de": "Entschuldigung, ich kann bisher nur auf Englisch antworten. Unten steht auf Englisch, "
    "wie Sie eine Person aus unserem Team erreichen.",
    "es": "Lo siento, por ahora solo puedo responder en inglés. Abajo, en inglés, le indicamos "
    "cómo contactar con una persona de nuestro equipo.",
    "fr": "Désolé, je ne peux répondre qu'en anglais pour le moment. Vous trouverez ci-dessous, "
    "en anglais, comment joindre une personne de notre équipe.",
    "it": "Mi dispiace, per ora posso rispondere solo in inglese. Qui sotto, in inglese, trova "
    "come contattare una persona del nostro team.",
    "ja": "申し訳ありませんが、現在は英語でのみお答えできます。"
    "担当者への連絡方法を以下に英語で記載しています。",
    "nl": "Sorry, ik kan voorlopig alleen in het Engels antwoorden. Hieronder staat in het "
    "Engels hoe u iemand van ons team bereikt.",
    "pl": "Przepraszam, na razie mogę odpowiadać tylko po angielsku. Poniżej, po angielsku, "
    "znajdą Państwo informacje, jak skontaktować się z osobą z naszego zespołu.",
    "pt": "Desculpe, por enquanto só consigo responder em inglês. Abaixo, em inglês, veja como "
    "falar com uma pessoa da nossa equipe.",
    "ru": "Извините, пока я могу отвечать только на английском. Ниже на английском указано, "
    "как связаться с сотрудником нашей команды.",
    "tr": "Üzgünüm, şimdilik yalnızca İngilizce yanıt verebiliyorum. Ekibimizden biriyle nasıl "
    "iletişime geçebileceğinizi aşağıda İngilizce olarak bulabilirsiniz.",
    "zh": "抱歉，我目前只能用英语回答。下面用英语说明了如何联系我们团队的工作人员。",
}


def only_in(assistant: str, customer: str) -> str:
    """The opening of a handoff for a message in language `customer` to an assistant answering
    in `assistant` (ISO 639-1 codes): for an English assistant, first the sentence in
    ENGLISH_ONLY where the customer's language has one, then "I'm sorry, I can only answer in
    <assistant's language> for now. " in the assistant's own language."""
    own = ENGLISH_ONLY.get(customer, "") if assistant == "en" else ""
    name = LANGUAGE_NAMES.get(assistant, assistant)
    return (f"{own}\n\n" if own else "") + f"I'm sorry, I can only answer in {name} for now. "

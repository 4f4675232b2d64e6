"""/openapi.json is generated from the models that validate requests, and /docs shows it."""

from assistant.api_models import AnswerResponse, FeedbackRequest, QuestionRequest


def _schema(spec: dict, reference: dict) -> dict:
    return spec["components"]["schemas"][reference["$ref"].rsplit("/", 1)[1]]


def test_the_document_lists_every_operation_with_its_models(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    spec = response.get_json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {
        "/question",
        "/question/stream",
        "/feedback",
        "/conversations/{conversation_id}",
        "/stats",
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/widget.js",
    }
    ask = spec["paths"]["/question"]["post"]
    body = _schema(spec, ask["requestBody"]["content"]["application/json"]["schema"])
    expected = QuestionRequest.model_json_schema()
    assert body["required"] == expected["required"]
    assert body["properties"]["question"]["maxLength"] == 2000
    answer = _schema(spec, ask["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(answer["properties"]) == set(AnswerResponse.model_fields)
    assert {"400", "413", "415", "429"} <= set(ask["responses"])
    feedback = spec["paths"]["/feedback"]["post"]
    vote = _schema(spec, feedback["requestBody"]["content"]["application/json"]["schema"])
    assert set(vote["properties"]) == set(FeedbackRequest.model_fields)
    assert vote["properties"]["feedback"]["enum"] == [1, -1]
    assert {"200", "202", "404"} <= set(feedback["responses"])
    # Without keys configured nothing in the document asks for one.
    assert "securitySchemes" not in spec["components"]


def test_api_keys_show_up_as_a_security_scheme_on_every_keyed_route(make_client):
    spec = make_client(api_keys=("k",)).get("/openapi.json", headers={"X-API-Key": "k"}).get_json()
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    assert scheme == {"type": "apiKey", "name": "X-API-Key", "in": "header"}
    keyed = [
        ("/question", "post"),
        ("/feedback", "post"),
        ("/stats", "get"),
        ("/conversations/{conversation_id}", "get"),
        ("/metrics", "get"),
    ]
    for path, method in keyed:
        operation = spec["paths"][path][method]
        assert operation["security"] == [{"ApiKey": []}], path
        assert {"401", "403"} <= set(operation["responses"]), path
    for probe in ("/health", "/health/live", "/health/ready"):
        assert "security" not in spec["paths"][probe]["get"]


def test_docs_page_works_offline(client):
    for path in ("/docs", "/docs/"):
        response = client.get(path)
        assert response.status_code == 302 and response.location.endswith("/docs/swagger/"), path
    page = client.get("/docs/swagger/").get_data(as_text=True)
    # Swagger UI is inlined, so the page works on a network that reaches no CDN.
    assert "SwaggerUIBundle" in page and "/docs/openapi.json" in page
    assert "unpkg.com" not in page and "cdn.jsdelivr" not in page
    assert client.get("/docs/openapi.json").get_json() == client.get("/openapi.json").get_json()


def test_every_handoff_reason_the_assistant_gives_is_documented():
    from typing import get_args

    from assistant.api_models import HandoffReason
    from assistant.handoff import REASONS

    assert set(get_args(HandoffReason)) == set(REASONS)

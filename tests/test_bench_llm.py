"""`assistant bench llm`: latency against a real llama.cpp server, and the side-by-side answers
file a person rates, then the count of those ratings."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from assistant.cli import main
from tests.test_providers import _model_file, _start_llama_server, model_dir  # noqa: F401


@pytest.fixture(scope="module")
def served_model(model_dir):  # noqa: F811
    process, base = _start_llama_server(_model_file(model_dir), "smollm2")
    yield base
    process.kill()
    process.wait(timeout=20)


def _env(base: str, tmp_path) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": base,
        "OPENAI_MODEL": "smollm2",
        "OPENAI_API_KEY": "",
        "KB_PATH": "demo",
        "DATA_DIR": str(tmp_path),
        # Short answers: this checks the command, not the model.
        "LLM_MAX_TOKENS": "12",
    }


def test_bench_llm_times_a_real_model(served_model, tmp_path):
    result = CliRunner().invoke(
        main,
        ["bench", "llm", "--provider", "openai", "--runs", "3", "--max-tokens", "8", "--json"],
        env=_env(served_model, tmp_path),
    )
    assert result.exit_code == 0, result.output
    # Log lines go to stderr, which the runner mixes in: the report is the JSON line.
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["provider"] == "openai" and report["model"] == "smollm2"
    assert report["runs"] == 3 and 0 < report["p50_s"] <= report["p95_s"]
    assert report["tokens_per_s"] > 0 and report["mean_prompt_tokens"] > 100


def test_bench_llm_writes_answers_to_rate_then_counts_the_ratings(served_model, tmp_path):
    path = tmp_path / "answers.csv"
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["bench", "llm", "--provider", "openai", "--answers", str(path)],
        env=_env(served_model, tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert "25 questions answered by openai:smollm2 and extractively" in result.output
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 25 and len({row["question"] for row in rows}) == 25
    for row in rows:
        assert row["model_answer"] and row["extractive_answer"]
        assert row["rating_model"] == row["rating_extractive"] == ""

    for i, row in enumerate(rows):
        row["rating_model"] = ("good", "partly", "bad")[i % 3]
        row["rating_extractive"] = "good" if i < 20 else ""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = runner.invoke(main, ["bench", "llm", "--ratings", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "rating_model": {"good": 9, "partly": 8, "bad": 8, "unrated": 0},
        "rating_extractive": {"good": 20, "partly": 0, "bad": 0, "unrated": 5},
    }

    rows[0]["rating_model"] = "great"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = runner.invoke(main, ["bench", "llm", "--ratings", str(path)])
    assert result.exit_code == 1 and "rating_model 'great' is not good/partly/bad" in result.output


def test_the_committed_ratings_are_the_readmes(repo_data):
    """The README's good/partly/bad counts come from docs/llm-ratings.csv."""
    result = CliRunner().invoke(
        main, ["bench", "llm", "--ratings", str(repo_data.parent / "docs" / "llm-ratings.csv")]
    )
    assert result.exit_code == 0, result.output
    readme = (repo_data.parent / "README.md").read_text(encoding="utf-8")
    labels = {"model": "SmolLM2-135M (`local`)", "extractive": "the KB entry (`extractive`)"}
    for line in result.output.strip().splitlines():
        name, *pairs = line.split()
        counts = dict(zip(pairs[::2], pairs[1::2], strict=True))
        expected = f"| {labels[name]} | {counts['good']} | {counts['partly']} | {counts['bad']} |"
        assert expected in readme, expected

"""Reading LLM answers: permutations and ratings from clean, noisy, partial and empty answers; prompts and budgets."""

from __future__ import annotations

import math

import pytest

from crossrank.errors import InvalidArgumentError
from crossrank.llm import LLMPrompts, approx_tokens, expected_rating, parse_permutation, parse_ratings, plan_windows
from crossrank.llm.parsing import answer_problem, parse_rating, unfinished_thinking
from crossrank.llm.prompts import MIN_DOC_TOKENS, render, trim_to_tokens


@pytest.mark.parametrize(
    ("answer", "order", "listed", "duplicates", "unknown"),
    [
        ("[3] > [1] > [5] > [2] > [4]", (2, 0, 4, 1, 3), 5, 0, 0),
        ("[3] > [1]", (2, 0, 1, 3, 4), 2, 0, 0),  # missing ids keep their order after the listed ones
        ("[3] > [3] > [9] > [1] > [0] > [1]", (2, 0, 1, 3, 4), 2, 2, 2),
        (
            "Sure! The ranking of the 5 passages is: [2] > [1] > [3] > [5] > [4]. Hope it helps.",
            (1, 0, 2, 4, 3),
            5,
            0,
            0,
        ),
        ("<think>maybe [1] > [2]</think>\n**[5] > [4]**", (4, 3, 0, 1, 2), 2, 0, 0),  # reasoning is not the answer
        ("```\n[2] > [1]\n```", (1, 0, 2, 3, 4), 2, 0, 0),
        ("Passage 4 > Passage 2 > Passage 1", (3, 1, 0, 2, 4), 3, 0, 0),
        ("4 > 2 > 1 > 3 > 5", (3, 1, 0, 2, 4), 5, 0, 0),
        ("2, 5, 1", (1, 4, 0, 2, 3), 3, 0, 0),
        ("", (0, 1, 2, 3, 4), 0, 0, 0),
        ("I cannot rank these passages.", (0, 1, 2, 3, 4), 0, 0, 0),
        ("<think>unfinished reasoning [2] > [1]", (0, 1, 2, 3, 4), 0, 0, 0),
        ("[7] > [8]", (0, 1, 2, 3, 4), 0, 0, 2),
    ],
)
def test_parse_permutation(answer: str, order: tuple[int, ...], listed: int, duplicates: int, unknown: int) -> None:
    p = parse_permutation(answer, 5)
    assert p.order == order and sorted(p.order) == list(range(5))
    assert (p.listed, p.duplicates, p.unknown) == (listed, duplicates, unknown)
    assert p.ok == (listed > 0)
    assert len(p.missing) == 5 - listed


@pytest.mark.parametrize("n", [10, 20])
def test_a_refusal_mentioning_the_window_size_is_not_a_ranking(n: int) -> None:
    """Issue #25: "these 10 passages" was read as the ranking [10], passage 10 first, and no failure."""
    p = parse_permutation(f"I'm sorry, but I can't rank these {n} passages: none of them answers the query.", n)
    assert not p.ok and p.order == tuple(range(n)) and p.problem == "refusal"
    assert (p.duplicates, p.unknown) == (0, 0)


def test_the_final_ranking_wins_over_ids_in_the_explanation() -> None:
    """Issue #25: ids in the explanation came first, so the two passages ranked last were put first."""
    final = [3, 6, 4, 1, 5, 7, 8, 10, 2, 9]
    answer = (
        "Passage [9] mentions the topic but only in passing, passage [2] is about a different population. "
        "Passage [3] directly tests the claim.\n\nFinal ranking: " + " > ".join(f"[{k}]" for k in final)
    )
    p = parse_permutation(answer, 10)
    assert p.order == tuple(k - 1 for k in final) and (p.listed, p.duplicates, p.shape) == (10, 0, "chain")


def test_problems_and_long_reasoning() -> None:
    assert answer_problem("<think>still thinking about [1]") == "thinking"
    assert answer_problem("<think>done</think>  ") == "empty"
    assert answer_problem("I cannot rank these.") == "refusal"
    assert answer_problem("[2] > [1]") is None
    assert unfinished_thinking("reasoning opened by the template</think>[1]") is False
    # A long reasoning block (blanked to one long run of spaces) and long lines of numbers parse in linear
    # time; patterns that backtrack over such runs took minutes here.
    long = "<think>" + "passage [3] has 12 patients, p < 0.05; " * 1000 + "</think>\n[2] > [1]"
    assert parse_permutation(long, 3).order == (1, 0, 2)
    numbers = "\n".join(" ".join(str(i % 20 + 1) for i in range(40)) + " x" for _ in range(100))
    assert not parse_permutation(numbers, 20).ok


@pytest.mark.parametrize(
    ("answer", "rating"),
    [
        ("7", 7.0),
        ("Rating: 7/10", 7.0),
        ('{"score": 7}', 7.0),
        ("On a scale from 0 to 10, I would give it 8.", 8.0),
        ("I rate it 8 out of 10", 8.0),
        ("**9**", 9.0),
        ("[1] 6", 6.0),
        ("10", 10.0),
        ("7.5", 7.5),
        ("relevance = 3", 3.0),
        ("<think>it is a 2</think> 5", 5.0),
        ("42", None),
        ("I can't rate this passage: it is written in 3 languages.", None),  # a refusal's number is no rating
        ("Sorry, this is hard to judge. Rating: 4", 4.0),
        ("no idea", None),
        ("The passage mentions 3 studies. I'd give it an 8.", 8.0),  # the rating given, past other numbers
        ("It covers 5 risk factors, so: 9", 9.0),
        ("7. The passage discusses 3 studies.", 7.0),
        ("Sorry, I can't give it a score: it cites 3 trials.", None),
        ("", None),
    ],
)
def test_parse_one_rating(answer: str, rating: float | None) -> None:
    assert parse_rating(answer, (0, 10)) == rating
    assert parse_ratings(answer, 1, (0, 10)).ratings == ({} if rating is None else {0: rating})


def test_parse_batched_ratings_labelled_per_passage() -> None:
    assert parse_ratings("Passage 1 rating: 7\nPassage 2 rating: 3", 2, (0, 10)).ratings == {0: 7.0, 1: 3.0}


def test_parse_batched_ratings_reports_duplicates_and_unknown_ids() -> None:
    r = parse_ratings("Here you go:\n[1] 7\n[2] 3\n[2] 5\n[4] 1\n3: 9\n[1] 11", 3, (0, 10))
    assert r.ratings == {0: 7.0, 1: 3.0, 2: 9.0}
    assert (r.duplicates, r.unknown) == (1, 2)  # [2] twice; [4] out of range, 11 off the scale
    assert parse_ratings('{"1": 7, "2": 3}', 3, (0, 10)).ratings == {0: 7.0, 1: 3.0}
    assert parse_ratings("[1] 4\n", 2, (0, 10)).ratings == {0: 4.0}  # [2] missing


def test_expected_rating_from_logprobs() -> None:
    lp = [[("[", 0.0)], [("1", 0.0)], [("]", 0.0)], [(" 7", math.log(0.6)), (" 8", math.log(0.3)), ("x", -1.0)]]
    assert expected_rating(lp, (0, 10)) == pytest.approx((7 * 0.6 + 8 * 0.3) / 0.9)  # the id [1] is not the rating
    ten = [[("1", math.log(0.8)), ("9", math.log(0.2))], [("0", math.log(0.5)), ("<eos>", math.log(0.5))]]
    assert expected_rating(ten, (0, 10)) == pytest.approx(1 * 0.4 + 10 * 0.4 + 9 * 0.2)
    assert expected_rating([[("no", 0.0)]], (0, 10)) is None
    assert expected_rating(None, (0, 10)) is None


def test_plan_windows_covers_the_front() -> None:
    assert plan_windows(100, 20, 10) == [(80 - 10 * k, 100 - 10 * k) for k in range(9)]
    assert plan_windows(25, 20, 10) == [(5, 25), (0, 15)]  # RankGPT's loop would skip the first 5
    assert plan_windows(20, 20, 10) == [(0, 20)]
    assert plan_windows(6, 4, 2) == [(2, 6), (0, 4)]
    assert plan_windows(1, 20, 10) == [] and plan_windows(0, 20, 10) == []


def test_prompts_are_checked_and_rendered() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown field"):
        LLMPrompts(listwise="{query} {candidates} {oops}")
    with pytest.raises(InvalidArgumentError, match="query"):
        LLMPrompts(pointwise="rate {candidates}")
    with pytest.raises(InvalidArgumentError, match="passage"):
        LLMPrompts(passage="{text}")
    p = render(
        LLMPrompts(system=""),
        "Q: {query}\n{candidates}\n{n} passages, {min}-{max}: {instruction}",
        query="what {is} this",
        texts=["a {b}\nc", "d"],
        instruction="be brief",
        scale=(0, 9),
        max_prompt_tokens=None,
        count=approx_tokens,
    )
    assert p.messages == [("user", "Q: what {is} this\n[1] a {b} c\n[2] d\n2 passages, 0-9: be brief")]
    assert p.trimmed == (False, False)


def test_prompt_budget_trims_long_passages_fairly() -> None:
    long, short = "word " * 400, "short passage here"
    p = render(
        LLMPrompts(),
        LLMPrompts().listwise,
        query="q",
        texts=[long, short, long],
        instruction="i",
        scale=(0, 10),
        max_prompt_tokens=400,
        count=approx_tokens,
    )
    assert p.trimmed == (True, False, True)
    assert p.tokens <= 400 and sum(approx_tokens(c) for _, c in p.messages) == p.tokens
    assert short in p.messages[-1][1]
    tiny = render(
        LLMPrompts(),
        LLMPrompts().listwise,
        query="q",
        texts=[long],
        instruction="i",
        scale=(0, 10),
        max_prompt_tokens=10,  # smaller than the fixed text: passages keep a minimum, the prompt runs over
        count=approx_tokens,
    )
    assert tiny.trimmed == (True,) and tiny.tokens > 10
    kept = tiny.messages[-1][1].split("[1] ", 1)[1].split("\n", 1)[0]
    assert approx_tokens(kept) == MIN_DOC_TOKENS
    assert trim_to_tokens("alpha beta gamma delta", 3, approx_tokens) == "alpha beta"

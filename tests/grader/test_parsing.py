from grader.parsing import parse_gpt_eval, parse_template


def test_strict_format():
    p = parse_gpt_eval(
        "Grammar: 8/10, Creativity: 7/10, Consistency: 6/10, Plot: 5/10, Age group: C (6-7)"
    )
    assert p.method == "strict"
    assert p.scores == {"grammar": 8, "creativity": 7, "consistency": 6, "plot": 5}
    assert p.age_group == "C"


def test_lenient_formats():
    p = parse_gpt_eval(
        "Sure!\n**Grammar**: 9 out of 10\nCreativity - 6.5/10\n"
        "Consistency score: 4/10\nPlot: 3 / 10\nAge group: B: 4-5"
    )
    assert p.method == "lenient"
    assert p.scores == {"grammar": 9, "creativity": 6.5, "consistency": 4, "plot": 3}
    assert p.age_group == "B"


def test_papers_sample_answer_without_plot_parses_leniently():
    p = parse_gpt_eval("Grammar: 8/10, Creativity: 7/10, Consistency: 7/10, Age group: E (10-12)")
    assert p.method == "lenient"
    assert p.scores["plot"] is None
    assert p.age_group == "E"


def test_unparseable_and_out_of_range():
    assert parse_gpt_eval("The story is lovely.") is None
    assert parse_gpt_eval("Grammar: 80/10, Creativity: 7/10, Consistency: 7/10") is None
    assert parse_gpt_eval("") is None


def test_template_parse():
    t = "Instruction following: <score>/10"
    assert parse_template("Instruction following: 4/10", t).method == "strict"
    assert parse_template("instruction following is 6 out of 10", t).scores == {
        "instruction_following": 6.0
    }
    assert parse_template("no idea", t) is None

"""Numbers as the report prints them."""

from cardio_kedro.common.formatting import fmt, fmt_auc, fmt_interval, short_key


def test_intervals_with_a_negative_bound_read_as_a_range():
    assert fmt_interval(0.8901, 0.931) == "0.890-0.931"
    assert fmt_interval(-3.77, -3.406) == "-3.770 to -3.406"  # not "-3.770--3.406"
    assert fmt_interval(-0.068, 0.296) == "-0.068 to 0.296"
    assert fmt_interval(None, 0.5) == "n/a" and fmt(None) == "n/a"
    assert fmt_auc({"auc": 0.912, "ci_low": 0.89, "ci_high": 0.931}) == "0.912 (95% CI 0.890-0.931)"


def test_image_keys_are_shortened_for_plot_titles_keeping_their_end():
    assert short_key("00000100_000.png") == "00000100_000.png"
    key = "train/patient11547/study1/view1_frontal.jpg"
    assert short_key(key) == "…" + key[-29:] and len(short_key(key)) == 30

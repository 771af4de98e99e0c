"""Report figures: every figure a report embeds shows under a caption that says what it is."""

from cardio_kedro.evaluation.report import FIGURE_CAPTIONS, render_report
from cardio_kedro.pipelines.cross_validation.pipeline import FIGURES as CROSS_VALIDATION_FIGURES
from cardio_kedro.pipelines.external_validation.pipeline import FIGURES as EXTERNAL_FIGURES
from cardio_kedro.pipelines.multilabel_reporting.pipeline import FIGURES as MULTILABEL_FIGURES
from cardio_kedro.pipelines.reporting.pipeline import REPORT_FIGURES


def test_every_report_figure_has_a_caption():
    names = {
        *REPORT_FIGURES,
        *CROSS_VALIDATION_FIGURES,
        *(f"external_{n}" for n in EXTERNAL_FIGURES),
        *MULTILABEL_FIGURES,
    }
    assert names - set(FIGURE_CAPTIONS) == set()
    # a caption is words, not the dataset's name
    assert all(" " in FIGURE_CAPTIONS[name] and "_" not in FIGURE_CAPTIONS[name] for name in names)


def test_a_figure_embeds_under_its_caption(monkeypatch):
    from cardio_kedro.evaluation import report

    class Template:
        def render(self, figures, **context):
            return "|".join(figures)

    monkeypatch.setattr(report._TEMPLATES, "get_template", lambda name: Template())
    html = render_report("any", {"cv_roc": b"png", "new_plot": b"png"})
    assert html.split("|") == [FIGURE_CAPTIONS["cv_roc"], "new plot"]

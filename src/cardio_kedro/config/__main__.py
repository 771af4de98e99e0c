"""``python -m cardio_kedro.config > docs/parameters.md``."""

from pathlib import Path

from cardio_kedro.config.docs import parameters_markdown

print(parameters_markdown(Path("conf")), end="")

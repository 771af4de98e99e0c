"""Work across machines and people: Optuna sweeps (``python -m cardio_kedro.team.sweep``), multi-host
training (``python -m cardio_kedro.team.multihost``) and a team's tracking server
(``python -m cardio_kedro.team.server``).

May import: anything of the project (they drive whole Kedro runs).
"""

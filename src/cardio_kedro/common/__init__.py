"""Small pieces every layer uses: user errors and how the command line shows them, number formats, the
process pool with progress.

May import: nothing of the project; never keras, tensorflow, jax or mlflow.
"""

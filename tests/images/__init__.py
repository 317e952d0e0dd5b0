"""The image smoke test (`make images-smoke`): both built images run the whole pipeline as the chart runs them.

pods.py reads how from the rendered chart, smoke.py runs and checks it, broken.py builds the deliberately broken
variant of `BREAK=...`; the container runtime itself is tests/support/containers.py.
"""

"""The application layer between the pipelines and the front ends (command line, demo, shapes eval, web service).

`settings` (typed settings, defaults and checks; torch-free), `outputs` (output paths that never destroy data),
`memory` (estimates and refusals before any work), `run` (prepare, load, generate / refine with a per-step callback
and cancellation).
"""

"""`i2vgen serve`: a persistent job service with a REST API and a web UI over the application layer.

    store    jobs in SQLite (WAL) and their files in the data folder; restart rules (torch-free)
    service  submission checks (the CLI's settings and checks, `i2vgen.app`), the worker thread(s), previews
    api      the FastAPI app: /v1/jobs, /healthz, /docs, the bearer-token gate
    ui       the Gradio page mounted at `/`, a client of the same service

Every video is made by `i2vgen.app.run.generate`, as on the command line; the service adds a queue, progress,
previews, cancellation and persistence around it.
"""

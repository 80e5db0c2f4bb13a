"""The SageMaker inference contract: ``GET /ping`` and ``POST /invocations``.

- ``settings``: where the server listens and what it reads, from the ``serving:``
  block of the settings, overridden by environment variables.
- ``media``: content types and ``Accept`` negotiation.
- ``parsing``: request bodies (``text/csv``, ``application/json``) into validated
  feature columns, with errors that name the record and the field.
- ``model_slot``: the model of one worker process, loaded and warmed up after fork.
- ``app``: the Flask application.
- ``server``: gunicorn started with all of the above (the ``serve`` executable).
- ``local``: start and call the server from a notebook or a test.

Nothing here imports TensorFlow at import time: the gunicorn master never does.
"""

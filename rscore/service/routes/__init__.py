"""The service's routes, one :class:`fastapi.APIRouter` per area, each built from the shared
:class:`~rscore.service.context.Service` by :func:`rscore.service.app.create_app`:

- :mod:`.segment`: ``POST /v1/segment`` (an upload - one file, a DICOM series as a zip or several files - or a
  server-side path);
- :mod:`.results`: ``GET /v1/results/{id}`` and ``/v1/results/{id}/{name}`` (the viewer's map view is in
  :mod:`rscore.service.viewer`);
- :mod:`.jobs`: ``POST /v1/jobs``, ``GET /v1/jobs``, ``GET /v1/jobs/{id}``;
- :mod:`.catalog`: ``GET /v1/plugins``, ``/v1/templates``, ``/healthz``.
"""

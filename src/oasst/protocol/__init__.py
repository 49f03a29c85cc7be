"""Wire schemas of the backend's ``/api/v1`` API (``common`` and ``tasks``), shared by the backend,
the client and the frontends. Import from the submodules."""

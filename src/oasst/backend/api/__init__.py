"""HTTP routers of ``/api/v1``: parse, call a service, return a schema."""

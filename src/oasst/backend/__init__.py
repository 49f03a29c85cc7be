"""The data-collection backend: FastAPI app, services, models, migrations."""

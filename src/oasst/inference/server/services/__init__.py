"""Domain logic of the inference server: functions over a SQLAlchemy session, no FastAPI."""

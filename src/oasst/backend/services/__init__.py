"""Domain logic of the backend. Service functions take a session and keyword arguments; no FastAPI here."""

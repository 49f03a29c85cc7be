"""The website where volunteers write, rank and label conversations (server-rendered FastAPI + Jinja2).

It reaches the backend only over its HTTP API, through :class:`oasst.client.BackendClient`, exactly as an
outside frontend would; its own tables hold accounts, identities, roles and sign-in links.
"""

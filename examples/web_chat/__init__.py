"""The backend of a custom chat front end: one Giosg visitor per browser session.

``app.create_app`` builds the ASGI app; ``run.py`` serves it against an embedded fake
Giosg with a bot that answers. See ``README.md`` in this folder.
"""

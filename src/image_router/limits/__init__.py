"""Who may call how often: rate limits, banned networks, the free tier (spec §6).

An adapter: it speaks neither HTTP frameworks nor settings. The composition root builds a
`Limits` from settings (`resources.build_limits`); the edge calls it (`deps.py`, `app.py`).
"""

"""`--mode serve`: a local web page and a JSON API over a trained model or an ensemble.

model.py holds the restored model (compiled once, shared by every request); app.py the
Starlette routes and the uvicorn server; page.html the page. Needs the `serve` extra.
"""

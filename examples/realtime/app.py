"""The app's side: start a story and hand the browser a token that can read that run only.

    outlast runtime --project .          # the runtime on :7070 (OUTLAST_SECRET_KEY from its first start)
    OUTLAST_SECRET_KEY=... uvicorn app:app --port 8000
    open http://127.0.0.1:8000/
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from outlast import AsyncClient

app = FastAPI()
client = AsyncClient()  # OUTLAST_API_URL (default http://127.0.0.1:7070) and OUTLAST_SECRET_KEY


@app.get("/", response_class=HTMLResponse)
def page() -> str:
    return (Path(__file__).parent / "index.html").read_text()


@app.post("/story")
async def story(prompt: str = "word", words: int = 50) -> dict:
    handle = await client.trigger("write-story", {"prompt": prompt, "words": words})
    token = await client.create_public_token(handle.id, ttl=900)  # reads this run, for 15 minutes
    return {"run_id": handle.id, "token": token.token, "api": client.api_url}

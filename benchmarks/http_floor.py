"""The HTTP floor: a bare FastAPI endpoint that receives the upload and decodes it, nothing else.

No model, no index, no validation: what any image endpoint on this stack costs
at least (uvicorn, multipart parsing, Pillow decoding the same image). A
service cannot beat it; `benchmarks/service.py` reports how close it gets.

    python -m benchmarks.http_floor --port 8200
"""

from __future__ import annotations

import argparse
import io
from typing import Annotated

from fastapi import FastAPI, File, Form, UploadFile
from PIL import Image


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/search")
    async def search(
        file: Annotated[UploadFile, File()], k: Annotated[int, Form()] = 10
    ) -> dict[str, object]:
        image = Image.open(io.BytesIO(await file.read())).convert("RGB")
        return {"k": k, "size": list(image.size)}

    @app.post("/index")
    async def index(
        file: Annotated[UploadFile, File()], id: Annotated[str, Form()]
    ) -> dict[str, object]:
        image = Image.open(io.BytesIO(await file.read())).convert("RGB")
        return {"id": id, "size": list(image.size)}

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(
        create_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()

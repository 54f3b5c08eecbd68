"""The baseline: an image-search endpoint written the way tutorials write it.

Keras `model.predict` on every request, scikit-learn `cosine_similarity`
against every stored vector, a full `argsort`, all inside `async def`
handlers; vectors in one NumPy array that `/index` grows with `np.vstack`.
Nothing here is deliberately slow: it is the straightforward code a user would
otherwise deploy, and `benchmarks/service.py` measures Lookalike against it.

    python -m benchmarks.naive_server --model-dir models/default --vectors v.npy --port 8100
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from PIL import Image
from sklearn.metrics.pairwise import cosine_similarity


def create_app(model_dir: Path, vectors_path: Path) -> FastAPI:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import json

    import keras

    model = keras.saving.load_model(model_dir / "encoder.keras", compile=False)
    height, width = json.loads((model_dir / "model.json").read_text())["image_size"]
    state: dict[str, Any] = {"vectors": np.load(vectors_path)}
    state["ids"] = [f"item-{i}" for i in range(len(state["vectors"]))]
    app = FastAPI()

    def embed(data: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((width, height))
        batch = np.expand_dims(np.array(image), 0)
        return np.asarray(model.predict(batch, verbose=0))

    @app.post("/search")
    async def search(
        file: Annotated[UploadFile, File()], k: Annotated[int, Form()] = 10
    ) -> dict[str, Any]:
        query = embed(await file.read())
        scores = cosine_similarity(query, state["vectors"])[0]
        best = np.argsort(-scores)[:k]
        return {
            "results": [{"id": state["ids"][i], "score": float(scores[i])} for i in best],
        }

    @app.post("/index")
    async def index(
        file: Annotated[UploadFile, File()], id: Annotated[str, Form()]
    ) -> dict[str, Any]:
        vector = embed(await file.read())
        state["vectors"] = np.vstack([state["vectors"], vector])
        state["ids"].append(id)
        return {"id": id, "count": len(state["ids"])}

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--vectors", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    app = create_app(args.model_dir, args.vectors)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

"""The model server of step=serve: OpenAI's HTTP API over a torch or ONNX Runtime model, with
concurrent requests decoded together (continuous batching).

    backends.py   the runtimes (torch with a key/value cache; ONNX Runtime through the
                  onnx / onnx_int8 export's cache graph) and the served model's tokenizer
    engine.py     the scheduler thread: admits requests between steps, one forward pass per
                  step for every active sequence, left-padded cache, slots freed on disconnect
    sampling.py   greedy, temperature, top-k, top-p, per-request seed
    text.py       incremental detokenization and stop strings
    protocol.py   the request bodies, limits and OpenAI's error shape
    responses.py  the response objects, whole and as server-sent events
    api.py        the FastAPI app: /v1/completions, /v1/chat/completions, /v1/models, /health
    server.py     uvicorn in a thread on a pre-bound socket; signals; the demo's client
"""

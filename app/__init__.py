"""The LPGNet inference service: FastAPI routes over one engine and one conversation store."""

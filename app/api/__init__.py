"""HTTP layer: routers only; the work happens in `app.engine` and `app.store`."""

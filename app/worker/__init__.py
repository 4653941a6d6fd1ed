"""The calibration worker: claims queued runs from the database and executes them."""

from app.worker.worker import Worker, run_worker

__all__ = ["Worker", "run_worker"]

"""The worker agent: runs `%%gpu` cells in an IPython shell and streams their events to the backend."""

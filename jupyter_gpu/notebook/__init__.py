"""The `%%gpu` cell inside an IPython kernel."""

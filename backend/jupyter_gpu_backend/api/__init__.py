"""The backend's only door: the kernel and worker websockets and the REST routes, behind one auth check."""

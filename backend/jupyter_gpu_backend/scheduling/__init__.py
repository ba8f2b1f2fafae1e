"""Sessions -> leases -> dispatch: who runs which cell, cold starts, keep-warm, capacity, spares, autoscaling, dedicated pools."""

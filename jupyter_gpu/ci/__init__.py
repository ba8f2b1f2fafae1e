"""`jupyter-gpu run`: notebooks headless in CI."""

"""One module per user command: run, predict, submit, demo (and the job file they read)."""

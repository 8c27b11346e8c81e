"""What survives a restart: the state file (written atomically) and the keeper that decides what is
saved and when (the exactly-once rule)."""

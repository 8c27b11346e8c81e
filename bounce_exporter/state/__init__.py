"""State built from classified delivery events: counters per label set, and the persistent-deferral
tracker with its rules."""

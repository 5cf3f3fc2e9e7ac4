"""FX graph passes that put PDT into the compiled optimizer step (one file per pass)."""

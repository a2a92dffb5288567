import os

# Tests run on CPU everywhere (CI has no GPU); keep XLA to one thread per op
# pool so the suite does not fight itself on small machines.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The persistent compilation cache (on by default in ~/.cache/jmod/xla) stays
# off in tests and in the processes they start, so the suite writes nothing
# into the home directory; tests/test_compilation_cache.py turns it on in
# temporary directories. JMOD_COMPILATION_CACHE=/some/dir opts a run in.
os.environ.setdefault("JMOD_COMPILATION_CACHE", "0")

"""R: the package's exact semantics in NumPy (:mod:`.compat`), R's RNG (:mod:`.rrng`) and the bridge to embedded
R (:mod:`.bridge`, the only module that imports rpy2). ``bridge.availability()`` is the one "is R here?" check;
``refimpl.errors.Unavailable`` its one exception."""

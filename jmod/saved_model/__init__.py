"""Export modules without their Python class: `jax.export` artifacts plus a checkpoint.

`save(module, directory)` writes every signature traced by the module's
`jmod.jit` methods (or those asked for with `signatures=`, where `None`
dimensions are shape-polymorphic), for one or several platforms;
`load(directory)` gives them back in any process, as a module whose
variables are real `jmod.Variable`s. From a shell:
`python -m jmod.saved_model show DIR` and `python -m jmod.saved_model run DIR
--input x=x.npy`.

Example:
    >>> import tempfile
    >>> class Affine(jmod.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = jmod.Variable([[1.0], [2.0]])
    ...     @jmod.jit
    ...     def __call__(self, x):
    ...         return x @ self.w
    >>> model = Affine()
    >>> model(jnp.ones((1, 2))).tolist()
    [[3.0]]
    >>> path = jmod.saved_model.save(model, tempfile.mkdtemp() + "/affine")
    >>> loaded = jmod.saved_model.load(path)        # no Affine needed here
    >>> loaded(jnp.ones((1, 2))).tolist(), [p for p, _ in loaded.named_variables()]
    ([[3.0]], ['w'])
"""

from jmod.saved_model.errors import PlatformError, SavedModelError, SavedModelNotFoundError
from jmod.saved_model.load import LoadedFunction, LoadedModule, SavedSignature, load
from jmod.saved_model.save import save
from jmod.saved_model.spec import TensorSpec

__all__ = [
    "LoadedFunction",
    "LoadedModule",
    "PlatformError",
    "SavedModelError",
    "SavedModelNotFoundError",
    "SavedSignature",
    "TensorSpec",
    "load",
    "save",
]
